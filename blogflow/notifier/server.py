"""The WebSocket notifier: live backup progress for signed-in browsers.

A browser connects to ``ws://HOST:PORT/ws?token=TOKEN`` with a token from
:func:`blogflow.tokens.sign_user`. A missing, forged or expired token is refused (close
code 4401) before anything is sent. An accepted connection is registered in Redis, is
sent the latest progress of each of the user's backups and the last status of their
other posts at once (:func:`blogflow.io.progress.replay`), and then every progress
message published for that user (:func:`blogflow.io.progress.publish_progress`) and for
no one else. Every notifier process listens to all users' channels through one Redis
subscription and forwards to its own connections, so several processes can serve one
site behind a load balancer.

The subscription outlives Redis restarts and stalls: Redis is pinged every second beside
it, and a subscription that ended or whose server stopped answering is dropped and made
again (backing off to 2 s). Once it is back, every connected browser is sent its replay,
so what was published in the gap is caught up at once.

The same port answers a few plain HTTP GETs (websockets' ``process_request`` hook,
:func:`_route`), each with ``Cache-Control: no-store``, ``Referrer-Policy: no-referrer``
(the token is in the URL) and a Content-Security-Policy:

* ``/backups/<backupId>?token=TOKEN`` -- the live progress page
  (:mod:`blogflow.notifier.page`), for a ``backupId`` of 1-128 letters, digits, ``_``
  or ``-``; the page itself connects to ``/ws``;
* ``/ws`` -- the WebSocket handshake; a GET without ``Upgrade: websocket`` gets 426;
* ``/healthz`` -- 200 ``ok`` while the notifier is subscribed to Redis and Redis answers,
  else 503 with the reason: a notifier that cannot hear the pipeline is not healthy;
* anything else -- 404.

Run it with ``blogflow notifier serve`` (``BLOGFLOW_SECRET_KEY`` and ``REDIS_URL`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import http
import logging
import re
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from blogflow.io import progress
from blogflow.io import redis as redis_io
from blogflow.notifier import page
from blogflow.tokens import TokenError, verify_user

__all__ = ["UNAUTHORIZED", "Notifier"]

_LOGGER = logging.getLogger(__name__)

#: The close code of a connection refused for its token.
UNAUTHORIZED = 4401
#: A connection with more than this unsent is dropped rather than waited for: one browser
#: that stops reading must never hold up everyone else's progress.
MAX_UNSENT_BYTES = 1 << 20
_REDIS_CONNECTIONS = 50
#: How often Redis is pinged beside the subscription, and how long a ping may take.
_PING_EVERY = 1.0
_PING_TIMEOUT = 2.0
#: Backoff between attempts to subscribe again.
_RESUBSCRIBE_FIRST, _RESUBSCRIBE_MAX = 0.1, 2.0


def _keeping_up(connections: set[ServerConnection]) -> list[ServerConnection]:
    """The connections to send to; those too far behind are aborted (their handler
    unregisters them)."""
    live = []
    for connection in connections:
        unsent = connection.transport.get_write_buffer_size()
        if unsent > MAX_UNSENT_BYTES:
            _LOGGER.info("dropping a connection %d bytes behind", unsent)
            connection.transport.abort()
        else:
            live.append(connection)
    return live


_BACKUP_PATH = re.compile(rf"/backups/{page.BACKUP_ID_PATTERN.pattern}")
# A Host header worth naming in the page's connect-src (else only 'self' is allowed).
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
_NO_ACTIVE_CONTENT = "default-src 'none'; frame-ancestors 'none'"


def _http_response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    policy: str = _NO_ACTIVE_CONTENT,
    extra: tuple[tuple[str, str], ...] = (),
) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "DENY"),
            ("Content-Security-Policy", policy),
            *extra,
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _text(status: http.HTTPStatus, text: str, *extra: tuple[str, str]) -> Response:
    return _http_response(status, text.encode(), "text/plain; charset=utf-8", extra=extra)


def _route(
    connection: ServerConnection, request: Request, unhealthy: str | None = None
) -> Response | None:
    """websockets' ``process_request``: ``None`` lets ``/ws`` go on to the WebSocket
    handshake; every other request is answered here, as plain HTTP. ``unhealthy`` is why
    the notifier is not healthy, or None."""
    path = urlsplit(request.path).path
    if path == "/ws":
        if "websocket" not in (request.headers.get("Upgrade") or "").lower():
            return _text(
                http.HTTPStatus.UPGRADE_REQUIRED,
                "This is the notifier's WebSocket endpoint.\n",
                ("Upgrade", "websocket"),
            )
        return None
    if path == "/healthz":
        if unhealthy is not None:
            return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, f"unhealthy: {unhealthy}\n")
        return _text(http.HTTPStatus.OK, "ok\n")
    if _BACKUP_PATH.fullmatch(path):
        host = request.headers.get("Host") or ""
        sources = (f"ws://{host}", f"wss://{host}") if _HOST.fullmatch(host) else ()
        return _http_response(
            http.HTTPStatus.OK,
            page.PAGE_HTML,
            "text/html; charset=utf-8",
            policy=page.content_security_policy(sources),
        )
    return _text(http.HTTPStatus.NOT_FOUND, "Not found.\n")


class Notifier:
    """One notifier process.

    Args:
        redis_url: the Redis the pipeline publishes progress to; ``REDIS_URL`` by default.
        prefix: the Redis key prefix the pipeline uses.
        secret_key: the key browser tokens are signed with; ``BLOGFLOW_SECRET_KEY`` by
            default.
    """

    def __init__(
        self, *, redis_url: str | None = None, prefix: str = "", secret_key: str | None = None
    ) -> None:
        self._redis_url = redis_url
        self._prefix = prefix
        self._secret_key = secret_key
        self._connections: dict[str, set[ServerConnection]] = defaultdict(set)
        self._redis: Any = None
        self._listening = asyncio.Event()
        self._server: Server | None = None
        self._forwarder: asyncio.Task[None] | None = None
        #: Why progress cannot reach browsers now, or None while subscribed.
        self._unhealthy: str | None = "not subscribed to Redis yet"

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return _route(connection, request, self._unhealthy)

    async def _authenticate(self, connection: ServerConnection) -> str | None:
        query = parse_qs(urlsplit(connection.request.path if connection.request else "").query)
        token = (query.get("token") or [""])[0]
        try:
            return verify_user(token, secret_key=self._secret_key)
        except TokenError as error:
            _LOGGER.info("refused a connection: %s", error)  # the reason, never the token
            await connection.close(UNAUTHORIZED, "unauthorized")
            return None

    async def _handle(self, connection: ServerConnection) -> None:
        user_id = await self._authenticate(connection)
        if user_id is None:
            return
        connection_id = uuid.uuid4().hex
        await progress.register(self._redis, connection_id, user_id, self._prefix)
        self._connections[user_id].add(connection)
        try:
            for message in await progress.replay(self._redis, user_id, self._prefix):
                await connection.send(message)
            await connection.wait_closed()
        finally:
            self._connections[user_id].discard(connection)
            if not self._connections[user_id]:
                del self._connections[user_id]
            with contextlib.suppress(Exception):
                await progress.unregister(self._redis, connection_id, self._prefix)

    async def _forward(self) -> None:
        """Keeps one subscription to every user's channel, making it again when it is
        lost; runs until cancelled."""
        delay, first = _RESUBSCRIBE_FIRST, True
        while True:
            try:
                await self._subscription(catch_up=not first)
                reason = "the Redis subscription ended"
            except (redis_io.RedisError, OSError, TimeoutError) as error:
                detail = str(error) or f"no answer within {_PING_TIMEOUT:g} s"
                reason = f"lost the Redis subscription: {type(error).__name__}: {detail}"
            first = False
            if self._unhealthy is None:  # it was subscribed: a new outage
                _LOGGER.warning("%s; subscribing again", reason)
                delay = _RESUBSCRIBE_FIRST
            else:
                _LOGGER.debug("%s; subscribing again", reason)
                delay = min(delay * 2, _RESUBSCRIBE_MAX)
            self._unhealthy = reason
            await asyncio.sleep(delay)

    async def _subscription(self, *, catch_up: bool) -> None:
        """One subscription: relays messages until it fails or Redis stops answering."""
        pubsub = self._redis.pubsub()
        relay: asyncio.Task[None] | None = None
        try:
            await asyncio.wait_for(
                pubsub.psubscribe(self._prefix + progress.CHANNEL_PATTERN), _PING_TIMEOUT
            )
            relay = asyncio.create_task(self._relay(pubsub))
            self._unhealthy = None
            self._listening.set()
            if catch_up:
                _LOGGER.warning("subscribed to Redis again; sending browsers their replay")
                await self._catch_up()
            while not relay.done():
                await asyncio.wait((relay,), timeout=_PING_EVERY)
                if not relay.done():
                    await asyncio.wait_for(self._redis.ping(), _PING_TIMEOUT)
            relay.result()  # raises what ended it
        finally:
            if relay is not None:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await relay
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pubsub.aclose(), _PING_TIMEOUT)

    async def _relay(self, pubsub: Any) -> None:
        async for item in pubsub.listen():
            if item["type"] != "pmessage":
                continue
            user_id = progress.user_of_channel(item["channel"], self._prefix)
            connections = self._connections.get(user_id)
            if connections:
                broadcast(_keeping_up(connections), item["data"])

    async def _catch_up(self) -> None:
        """Sends every connected browser its replay: what it may have missed."""
        for user_id, connections in list(self._connections.items()):
            messages = await progress.replay(self._redis, user_id, self._prefix)
            for message in messages:
                broadcast(_keeping_up(connections), message)

    async def start(self, host: str = "127.0.0.1", port: int = 8765) -> int:
        """Starts listening (``port`` 0: any free port); returns the port.

        Raises:
            blogflow.io.redis.RedisError: when Redis cannot be reached.
        """
        # A bounded pool that waits for a free connection: a thousand browsers
        # reconnecting at once after a restart queue up instead of failing.
        self._redis = redis_io.connect_async(self._redis_url, max_connections=_REDIS_CONNECTIONS)
        await self._redis.ping()  # fail now, clearly, rather than wait for a subscription
        self._forwarder = asyncio.create_task(self._forward())
        await self._listening.wait()
        # No permessage-deflate: progress messages are ~110 bytes, and compressing them
        # per connection cost half the notifier's CPU and 40 KB per connection.
        self._server = await serve(
            self._handle, host, port, process_request=self._process_request, compression=None
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Closes every connection and the Redis client."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._forwarder is not None:
            self._forwarder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._forwarder
        if self._redis is not None:
            await self._redis.aclose()
