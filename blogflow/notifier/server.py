"""The WebSocket notifier: live backup progress for signed-in browsers.

A browser connects to ``ws://HOST:PORT/ws?token=TOKEN`` with a token from
:func:`blogflow.tokens.sign_user`. A missing, forged or expired token is refused (close
code 4401) before anything is sent. An accepted connection is registered in Redis, is
sent the latest progress of each of the user's backups at once, and then every progress
message published for that user (:func:`blogflow.io.progress.publish_progress`) and for
no one else. Every notifier process listens to all users' channels through one Redis
subscription and forwards to its own connections, so several processes can serve one
site behind a load balancer.

Run it with ``blogflow notifier serve`` (``BLOGFLOW_SECRET_KEY`` and ``REDIS_URL`` set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve

from blogflow.io import progress
from blogflow.io import redis as redis_io
from blogflow.tokens import TokenError, verify_user

__all__ = ["UNAUTHORIZED", "Notifier"]

_LOGGER = logging.getLogger(__name__)

#: The close code of a connection refused for its token.
UNAUTHORIZED = 4401


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
            for message in await progress.latest_progress(self._redis, user_id, self._prefix):
                await connection.send(message)
            await connection.wait_closed()
        finally:
            self._connections[user_id].discard(connection)
            if not self._connections[user_id]:
                del self._connections[user_id]
            with contextlib.suppress(Exception):
                await progress.unregister(self._redis, connection_id, self._prefix)

    async def _forward(self) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.psubscribe(self._prefix + progress.CHANNEL_PATTERN)
        self._listening.set()
        try:
            async for item in pubsub.listen():
                if item["type"] != "pmessage":
                    continue
                user_id = progress.user_of_channel(item["channel"], self._prefix)
                for connection in list(self._connections.get(user_id, ())):
                    with contextlib.suppress(Exception):  # a closing connection
                        await connection.send(item["data"])
        finally:
            await pubsub.aclose()

    async def start(self, host: str = "127.0.0.1", port: int = 8765) -> int:
        """Starts listening (``port`` 0: any free port); returns the port.

        Raises:
            blogflow.io.redis.RedisError: when Redis cannot be reached.
        """
        self._redis = redis_io.connect_async(self._redis_url)
        await self._redis.ping()  # fail now, clearly, rather than wait for a subscription
        self._forwarder = asyncio.create_task(self._forward())
        await self._listening.wait()
        self._server = await serve(self._handle, host, port)
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
