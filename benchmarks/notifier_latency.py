"""Benchmark: backup progress from the sink's publish to a browser's WebSocket, and fan-out.

The notifier runs as its own process (``blogflow notifier serve``, on a free port) against
the local Redis of ``blogflow.local``, with a key prefix of its own. Progress is published
by the sink's own DoFn (``NotifyProgress``'s ``_NotifyRedisFn``: ``queue_progress`` per
message, one Redis pipeline per bundle), driven bundle by bundle in a publisher process.
Every client offers permessage-deflate, as browsers do.

Latency: one ``websockets`` client of one user; 10,000 messages paced at 1,000/s, one
message per bundle (``--bundle``), as a streaming runner hands a trickle over. Each message's
``done`` is its sequence number. The publisher notes when each bundle enters the DoFn,
the client when each message arrives, both on ``time.monotonic`` (Linux CLOCK_MONOTONIC:
one clock for all processes of the machine). Goal: p99 <= 50 ms, no message lost.

Fan-out: 1,000 WebSocket clients of one user (one user's many open pages; ``--fanout-users``
spreads them over users, every message then published to each) in 2 client processes of
lean clients (``_LeanClient``); 200 messages published as fast as the sink writes a
backlog (bundles of 200). ``fanout_msgs_per_s`` = messages delivered to clients / seconds
from the first publish to the last delivery; ``fanout_all_clients_*_ms``: from a message's
publish until all clients had it (with a backlog, mostly queueing). Every client must get every
message, in order. The notifier's, the clients' and the rest of the machine's CPU share
over the fan-out say who was the bottleneck: on 2 cores, a notifier near 100 % is.

Before a phase starts, each user's latest progress holds a "ready" message, which the
notifier sends a connection only once it is registered for live messages: a client that
got it cannot miss a live message. A lost or disordered message fails the run (exit 1,
after the JSON line). The last line is one JSON object: ``{"name": "notifier_latency",
"p50_ms", "p99_ms", "max_ms", "lost", "fanout_msgs_per_s", "fanout_lost", ...}``.

    python benchmarks/notifier_latency.py [--messages 10000] [--rate 1000] [--bundle 1]
        [--clients 1000] [--fanout-messages 200] [--fanout-users 1] [--client-procs 2]
        [--connect-concurrency 40] [--fanout-client lean|websockets]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import os
import queue
import re
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect

from blogflow.io import progress
from blogflow.io import redis as redis_io
from blogflow.local import LocalStack
from blogflow.tokens import SECRET_KEY_VARIABLE, sign_user

HOST = "127.0.0.1"
SINK_BATCH = 200  # NotifyProgress's default batch_size: messages per Redis round trip
BENCH = "bench"  # backupId of the measured messages
READY = "ready"  # backupId of the message that proves a connection is registered
START_TIMEOUT_S = 60.0  # a process starting, 1,000 clients connecting
SETTLE_S = 30.0  # after the last publish, every message must arrive within this
P99_GOAL_MS = 50.0
NOTIFIER_COMMAND = [sys.executable, "-m", "blogflow.cli"]  # the `blogflow` CLI
_EXCEPTION = re.compile(r"^[\w.]+(?:Error|Exception|OK): .*$", re.MULTILINE)  # in a log
_LISTENING = re.compile(r"listening on ws://[^\s/]+:(\d+)/")  # what `notifier serve` says
_SPAWN = multiprocessing.get_context("spawn")  # no fork of a process with threads and loops


def _message(backup_id: str, seq: int, total: int) -> dict[str, Any]:
    return {
        "type": "backup_progress",
        "backupId": backup_id,
        "postId": f"p{seq}",
        "status": "committed",
        "done": seq,
        "total": total,
    }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[int, int]:
    """Busy and total jiffies of all cores so far (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(f"{needed} file descriptors needed, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# --------------------------------------------------------------------------- processes


@contextlib.contextmanager
def _notifier(
    env_file: Path, redis_url: str, prefix: str, log_path: Path
) -> Iterator[tuple[str, int]]:
    """Runs ``blogflow notifier serve`` on a free port (``$BLOGFLOW_SECRET_KEY`` set).

    Yields its ws:// URL and pid; stops it by pid on the way out.
    """
    command = [
        *NOTIFIER_COMMAND,
        *("--env-file", str(env_file)),
        *("notifier", "serve", "--host", HOST, "--port", "0"),
        *("--redis-url", redis_url, "--redis-prefix", prefix),
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (bound := _LISTENING.search(log_path.read_text(errors="replace"))):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the notifier did not start")
            time.sleep(0.05)
        yield f"ws://{HOST}:{bound[1]}/ws", server.pid
    except Exception:
        text = log_path.read_text(errors="replace")
        errors = collections.Counter(_EXCEPTION.findall(text))
        summary = "".join(f"\n{count:>6} x {line}" for line, count in errors.most_common(5))
        print(f"notifier log (tail):\n{text[-2000:]}", file=sys.stderr)
        if summary:
            print(f"exceptions in the notifier log:{summary}", file=sys.stderr)
        raise
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


@contextlib.contextmanager
def _children() -> Iterator[list[BaseProcess]]:
    """Processes started into the yielded list are stopped by pid on the way out."""
    started: list[BaseProcess] = []
    try:
        yield started
    except BaseException:
        for child in started:
            if child.is_alive():
                child.terminate()
        raise
    finally:
        for child in started:
            child.join(timeout=5)
            if child.is_alive():
                child.terminate()
                child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join(timeout=5)


def _await(
    results: Any, kind: str, count: int, timeout: float, processes: list[BaseProcess]
) -> list[Any]:
    """The next ``count`` reports of ``kind`` from the child processes, within ``timeout``."""
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            report = results.get(timeout=0.2)
        except queue.Empty:
            failed = [p.name for p in processes if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"{', '.join(failed)} failed waiting for {kind!r}") from None
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"timed out after {timeout:.0f} s waiting for {kind!r}"
                ) from None
            continue
        if report[0] == "error":
            raise RuntimeError(f"a child process failed: {report[1]}")
        if report[0] != kind:
            raise RuntimeError(f"expected {kind!r}, got {report[0]!r}")
        got.append(report[1])
    return got


def _publish(
    redis_url: str,
    prefix: str,
    users: list[str],
    messages: int,
    rate: float,
    bundle: int,
    go: Any,
    results: Any,
) -> None:
    """Publisher process: messages 1..messages to every user, through the sink's DoFn.

    Bundles of ``bundle`` messages; with ``rate`` > 0 each bundle leaves when its last
    message is due (message i at start + i / rate), else as fast as the sink writes.
    Reports the monotonic time each message's bundle entered the DoFn.
    """
    logging.basicConfig(level=logging.ERROR)
    # The sink's own DoFn (private): prepare, queue_progress, one pipeline per flush.
    from blogflow.io.notify import _NotifyRedisFn

    sink = _NotifyRedisFn(redis_url, prefix, SINK_BATCH)
    sink.setup()
    try:
        elements = [
            (user, _message(BENCH, seq, messages))
            for seq in range(1, messages + 1)
            for user in users
        ]
        sink._client.ping()  # connect now, not on the first measured message
        results.put(("ready", None))
        if not go.wait(START_TIMEOUT_S):
            return
        sent: list[float] = []
        cpu = time.process_time()
        lag = 0.0
        start = time.monotonic()
        for first in range(0, len(elements), bundle):
            chunk = elements[first : first + bundle]
            if rate > 0:
                due = start + (first + len(chunk) - 1) / rate
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
            now = time.monotonic()
            if rate > 0:
                lag = max(lag, now - due)
            sink.start_bundle()
            for element in chunk:
                sink.process(element)
            sink.finish_bundle()
            sent.extend([now] * len(chunk))
        cpu = time.process_time() - cpu
        results.put(("sent", (sent, lag, time.monotonic(), cpu)))
    except BaseException as error:
        results.put(("error", f"publisher: {error!r}"))
        raise
    finally:
        sink.teardown()


async def _open(url: str, token: str) -> ClientConnection:
    """Connects and waits for the "ready" latest progress: then the client is registered."""
    ws = await connect(url + "?token=" + token, open_timeout=START_TIMEOUT_S, ping_interval=None)
    ready = json.loads(await asyncio.wait_for(ws.recv(), START_TIMEOUT_S))
    if ready["backupId"] != READY:
        raise RuntimeError(f"expected the ready message first, got {ready}")
    return ws


async def _latency_client(
    url: str, token: str, expected: int, timeout: float, go: Any
) -> list[tuple[float, int]]:
    """One client: sets ``go`` once registered, then notes when each message arrives."""
    ws = await _open(url, token)
    arrivals: list[tuple[float, int]] = []
    try:
        go.set()
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            while len(arrivals) < expected:
                raw = await asyncio.wait_for(ws.recv(), max(0.0, deadline - time.monotonic()))
                now = time.monotonic()
                message = json.loads(raw)
                if message["backupId"] == BENCH:
                    arrivals.append((now, message["done"]))
    finally:
        await ws.close()
    return arrivals


class _Tally:
    """What the fan-out clients of one process received.

    A client's first message must be the "ready" one; after it, the messages 1..N in
    order. Notes how far each client got, and when each message had reached all of them.
    """

    def __init__(self, clients: int, messages: int) -> None:
        self.clients, self.messages = clients, messages
        self.ready: list[asyncio.Future[None] | None] = [None] * clients  # None: got it
        self.last = [0] * clients  # the last sequence number each client got, in order
        self.have = [0] * (messages + 1)  # how many clients have message seq
        self.complete_at = [0.0] * (messages + 1)  # when the last of them got it
        self.last_at = 0.0
        self.disorder = 0
        self.waiting = clients  # clients that have not got every message yet
        self.all_done = asyncio.Event()

    def expect_ready(self, n: int) -> asyncio.Future[None]:
        """A future that is done when client ``n`` got its "ready" message."""
        self.ready[n] = future = asyncio.get_running_loop().create_future()
        return future

    def received(self, n: int, raw: bytes | str) -> None:
        now = self.last_at = time.monotonic()
        message = json.loads(raw)
        ready = self.ready[n]
        if ready is not None:
            if message["backupId"] != READY:
                raise RuntimeError(f"expected the ready message first, got {message}")
            ready.set_result(None)
            self.ready[n] = None
            return
        seq = message["done"]
        if seq != self.last[n] + 1:
            self.disorder += 1
            return
        self.last[n] = seq
        self.have[seq] += 1
        if self.have[seq] == self.clients:
            self.complete_at[seq] = now
        if seq == self.messages:
            self.waiting -= 1
            if not self.waiting:
                self.all_done.set()


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client's frame (clients must mask), for the few control frames a client sends."""
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class _LeanClient(asyncio.Protocol):
    """A WebSocket client that costs the fan-out little CPU, as a browser's would.

    On a 2-core machine the clients share the CPU with the notifier. Per message received
    ``websockets``' asyncio client costs ~30 us, this one ~24 us (most of it the kernel's
    epoll and recv either way), which leaves the notifier 25-35 % more throughput. It
    parses frames in ``data_received``, inflates with one zlib stream per connection
    (permessage-deflate offered as browsers do; the server keeps its context), answers
    pings and hands each text message to ``received``. It expects what the notifier
    sends: unfragmented text frames.
    """

    def __init__(self, url: str, token: str, received: Callable[[bytes], None]) -> None:
        parts = urlsplit(url)
        key = base64.b64encode(os.urandom(16)).decode()
        self.address = (parts.hostname or HOST, parts.port or 80)
        self._request = (
            f"GET {parts.path}?token={token} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ).encode()
        accept = hashlib.sha1((key + _WS_GUID).encode()).digest()
        self._accept = b"sec-websocket-accept: " + base64.b64encode(accept).lower()
        self._received = received
        self._buffer = b""
        self._inflate: Any = None
        self._transport: Any = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self._transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed in the handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if not self._transport.is_closing():
            self._transport.write(_masked_frame(0x8, (1000).to_bytes(2, "big")))
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self.opened.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            head, buffer = buffer[:end].lower(), buffer[end + 4 :]
            if not head.startswith(b"http/1.1 101") or self._accept not in head:
                self.opened.set_exception(ConnectionError(f"refused: {head[:300]!r}"))
                self._transport.abort()
                return
            if b"permessage-deflate" in head:
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self.opened.set_result(None)
        pos, end = 0, len(buffer)
        while end - pos >= 2:
            first, length, start = buffer[pos], buffer[pos + 1] & 0x7F, pos + 2
            if length == 126:
                length, start = int.from_bytes(buffer[start : start + 2], "big"), start + 2
            elif length == 127:
                length, start = int.from_bytes(buffer[start : start + 8], "big"), start + 8
            if start + length > end:
                break
            payload, pos = buffer[start : start + length], start + length
            opcode = first & 0x0F
            if opcode == 0x1 and first & 0x80:  # a whole text message
                if first & 0x40:
                    payload = self._inflate.decompress(payload + b"\x00\x00\xff\xff")
                self._received(payload)
            elif opcode == 0x9:  # ping
                self._transport.write(_masked_frame(0xA, payload))
            elif opcode == 0x8:  # the server closes
                self._transport.close()
                return
            elif opcode != 0xA:
                raise RuntimeError(f"unexpected frame 0x{first:02x} from the notifier")
        self._buffer = buffer[pos:]


def _fanout_clients(
    url: str,
    tokens: list[str],
    messages: int,
    timeout: float,
    lean: bool,
    concurrency: int,
    results: Any,
) -> None:
    """Client process of the fan-out: connects its clients, reports, counts deliveries."""
    try:
        fanout = _fanout(url, tokens, messages, timeout, lean, concurrency, results)
        results.put(("done", asyncio.run(fanout)))
    except BaseException as error:
        results.put(("error", f"fan-out clients: {error!r}"))
        raise


async def _fanout(
    url: str,
    tokens: list[str],
    messages: int,
    timeout: float,
    lean: bool,
    concurrency: int,
    results: Any,
) -> dict[str, Any]:
    tally = _Tally(len(tokens), messages)
    gate = asyncio.Semaphore(concurrency)
    loop = asyncio.get_running_loop()
    closers: list[Callable[[], Any]] = []
    readers = []

    async def read(n: int, ws: ClientConnection) -> None:
        async for raw in ws:
            tally.received(n, raw)

    async def open_one(n: int, token: str) -> None:
        ready = tally.expect_ready(n)
        async with gate:
            if lean:
                client = _LeanClient(url, token, functools.partial(tally.received, n))
                host, port = client.address
                await asyncio.wait_for(
                    loop.create_connection(lambda: client, host, port), START_TIMEOUT_S
                )
                await asyncio.wait_for(client.opened, START_TIMEOUT_S)
                closers.append(client.close)
                closed: asyncio.Future[None] = client.closed
            else:
                ws = await connect(
                    f"{url}?token={token}", open_timeout=START_TIMEOUT_S, ping_interval=None
                )
                closed = asyncio.create_task(read(n, ws))
                readers.append(closed)
                closers.append(ws.close)
            await asyncio.wait(
                [ready, closed], timeout=START_TIMEOUT_S, return_when="FIRST_COMPLETED"
            )
            if not ready.done():
                raise ConnectionError(
                    "the notifier closed a connection (or sent nothing) before its first "
                    "message; its log says why"
                )

    try:
        opened = [open_one(n, token) for n, token in enumerate(tokens)]
        failed = [e for e in await asyncio.gather(*opened, return_exceptions=True) if e]
        if failed:
            raise ConnectionError(f"{len(failed)} of {len(tokens)} clients failed: {failed[0]}")
        results.put(("ready", len(tokens)))
        cpu = time.process_time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.all_done.wait(), timeout)
        cpu = time.process_time() - cpu
    finally:
        for reader in readers:
            reader.cancel()
        closing = [closer() for closer in closers]
        waits = [result for result in closing if asyncio.iscoroutine(result)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), 20)
    return {
        "delivered": sum(tally.last),  # in-order deliveries: seq n means 1..n arrived
        "disorder": tally.disorder,
        "complete_at": tally.complete_at,
        "last_at": tally.last_at,
        "cpu_s": cpu,
    }


# --------------------------------------------------------------------------- phases


def _set_ready(redis_url: str, users: list[str], prefix: str) -> None:
    client = redis_io.connect(redis_url)
    try:
        pipe = client.pipeline(transaction=False)
        for user in users:
            progress.queue_progress(pipe, user, _message(READY, 0, 0), prefix)
        pipe.execute()
    finally:
        client.close()


def latency_phase(
    url: str, redis_url: str, prefix: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One client, ``--messages`` paced at ``--rate``: latency from publish to receipt."""
    user = f"lat-{uuid.uuid4().hex[:8]}"
    _set_ready(redis_url, [user], prefix)
    results, go = _SPAWN.Queue(), _SPAWN.Event()
    with _children() as started:
        publisher = _SPAWN.Process(
            target=_publish,
            args=(redis_url, prefix, [user], args.messages, args.rate, args.bundle, go, results),
            name="publisher",
        )
        publisher.start()
        started.append(publisher)
        _await(results, "ready", 1, START_TIMEOUT_S, started)
        timeout = args.messages / args.rate + SETTLE_S
        token = sign_user(user, secret_key=os.environ[SECRET_KEY_VARIABLE])
        arrivals = asyncio.run(_latency_client(url, token, args.messages, timeout, go))
        [(sent, lag, finished, _)] = _await(results, "sent", 1, SETTLE_S, started)
    latencies = sorted((at - sent[seq - 1]) * 1000 for at, seq in arrivals)
    seqs = [seq for _, seq in arrivals]
    span = finished - sent[0]
    return {
        "messages": args.messages,
        "received": len(arrivals),
        "lost": args.messages - len(set(seqs)),
        "disordered": sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b != a + 1),
        "p50_ms": round(_percentile(latencies, 0.50), 2) if latencies else None,
        "p90_ms": round(_percentile(latencies, 0.90), 2) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99), 2) if latencies else None,
        "max_ms": round(latencies[-1], 2) if latencies else None,
        "rate": args.rate,
        "achieved_rate": round(args.messages / span) if span > 0 else None,
        "publish_lag_max_ms": round(lag * 1000, 2),
        "bundle": args.bundle,
    }


def fanout_phase(
    url: str, redis_url: str, prefix: str, pids: tuple[int, int], args: argparse.Namespace
) -> dict[str, Any]:
    """Fan-out; ``pids``: the notifier's and Redis's, whose CPU time is measured."""
    notifier, redis_server = pids
    tag = uuid.uuid4().hex[:8]
    users = [f"fan-{tag}-{n}" for n in range(args.fanout_users)]
    _set_ready(redis_url, users, prefix)
    key = os.environ[SECRET_KEY_VARIABLE]
    tokens = {user: sign_user(user, secret_key=key) for user in users}
    by_client = [tokens[users[n % len(users)]] for n in range(args.clients)]
    procs = max(1, min(args.client_procs, args.clients))
    lean = args.fanout_client == "lean"
    concurrency = max(1, args.connect_concurrency // procs)
    results, go = _SPAWN.Queue(), _SPAWN.Event()
    timeout = SETTLE_S + args.clients * args.fanout_messages / 10_000  # >= 10k deliveries/s
    with _children() as started:
        for n in range(procs):
            mine = by_client[n::procs]
            clients = _SPAWN.Process(
                target=_fanout_clients,
                args=(url, mine, args.fanout_messages, timeout, lean, concurrency, results),
                name=f"clients-{n}",
            )
            clients.start()
            started.append(clients)
        publisher = _SPAWN.Process(
            target=_publish,
            args=(redis_url, prefix, users, args.fanout_messages, 0, SINK_BATCH, go, results),
            name="publisher",
        )
        publisher.start()
        started.append(publisher)
        _await(results, "ready", procs + 1, START_TIMEOUT_S, started)
        before = _cpu_seconds(notifier), _cpu_seconds(redis_server), _machine_cpu()
        start = time.monotonic()
        go.set()
        [(sent, _, published, publisher_cpu)] = _await(results, "sent", 1, timeout, started)
        reports = _await(results, "done", procs, timeout + 30, started)
        cpu = _cpu_seconds(notifier) - before[0]
        status = Path(f"/proc/{notifier}/status").read_text()
        peak = re.search(r"^VmHWM:\s+(\d+)", status, re.MULTILINE)
        rss_kib = int(peak[1]) if peak else 0
        ours = cpu + _cpu_seconds(redis_server) - before[1] + publisher_cpu
        busy, total = (now - then for now, then in zip(_machine_cpu(), before[2], strict=True))
        window = time.monotonic() - start
    expected = args.clients * args.fanout_messages
    client_cpu = sum(report["cpu_s"] for report in reports)
    # CPU the rest of the machine took meanwhile (other jobs on a shared VM), roughly
    others = busy / total * (os.cpu_count() or 1) - (ours + client_cpu) / window
    delivered = sum(report["delivered"] for report in reports)
    seconds = max(report["last_at"] for report in reports) - sent[0]
    everyone = sorted(
        (max(r["complete_at"][seq] for r in reports) - sent[(seq - 1) * len(users)]) * 1000
        for seq in range(1, args.fanout_messages + 1)
        if all(r["complete_at"][seq] for r in reports)
    )
    return {
        "clients": args.clients,
        "fanout_users": len(users),
        "fanout_messages": args.fanout_messages,
        "fanout_expected": expected,
        "fanout_delivered": delivered,
        "fanout_lost": expected - delivered,
        "fanout_disordered": sum(report["disorder"] for report in reports),
        "fanout_seconds": round(seconds, 3),
        "fanout_msgs_per_s": round(delivered / seconds) if seconds > 0 else None,
        "fanout_publish_seconds": round(published - sent[0], 3),
        "fanout_all_clients_p50_ms": round(_percentile(everyone, 0.5), 1) if everyone else None,
        "fanout_all_clients_max_ms": round(everyone[-1], 1) if everyone else None,
        "fanout_client": args.fanout_client,
        "notifier_cpu_pct": round(100 * cpu / seconds) if seconds > 0 else None,
        "clients_cpu_pct": round(100 * client_cpu / seconds) if seconds > 0 else None,
        "others_cpu_pct": round(100 * max(0.0, others)),
        "notifier_peak_rss_mb": round(rss_kib / 1024),
        "notifier_us_per_delivery": round(cpu / delivered * 1e6, 1) if delivered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--messages", type=int, default=10_000, help="messages of the latency phase"
    )
    parser.add_argument(
        "--rate", type=float, default=1_000, help="messages per second of the latency phase"
    )
    parser.add_argument(
        "--bundle",
        type=int,
        default=1,
        help="messages per sink bundle (one Redis round trip) in the latency phase",
    )
    parser.add_argument(
        "--clients", type=int, default=1_000, help="WebSocket clients of the fan-out phase"
    )
    parser.add_argument(
        "--fanout-messages", type=int, default=200, help="messages each fan-out client gets"
    )
    parser.add_argument(
        "--fanout-users",
        type=int,
        default=1,
        help="users the fan-out clients are spread over (1: all clients of one user)",
    )
    parser.add_argument(
        "--client-procs", type=int, default=2, help="processes the fan-out clients run in"
    )
    parser.add_argument(
        "--connect-concurrency",
        type=int,
        default=40,
        help="fan-out clients connecting at once, all processes together (the notifier "
        "queues connections beyond its Redis pool of 50)",
    )
    parser.add_argument(
        "--fanout-client",
        choices=("lean", "websockets"),
        default="lean",
        help="fan-out client: a minimal frame parser (lean) or websockets' asyncio client",
    )
    args = parser.parse_args()
    for name in ("messages", "rate", "bundle", "clients", "fanout_messages", "fanout_users"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # e.g. `timeout`: clean up all the same
    _raise_fd_limit(args.clients + 1024)
    os.environ[SECRET_KEY_VARIABLE] = secrets.token_urlsafe(48)
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"

    wall = time.perf_counter()
    with (
        tempfile.TemporaryDirectory() as state,
        LocalStack(state_dir=state, services=("redis",)) as stack,
        _notifier(stack.env_file, stack.env["REDIS_URL"], prefix, Path(state) / "n.log") as served,
    ):
        (url, pid), redis_url = served, stack.env["REDIS_URL"]
        load = os.getloadavg()[0]
        latency = latency_phase(url, redis_url, prefix, args)
        print(
            f"latency: {latency['received']:,} of {args.messages:,} messages at "
            f"{args.rate:,.0f}/s, bundle {args.bundle}: p50 {latency['p50_ms']} ms, "
            f"p99 {latency['p99_ms']} ms, max {latency['max_ms']} ms",
            flush=True,
        )
        fanout = fanout_phase(url, redis_url, prefix, (pid, stack.pids["redis"]), args)
        print(
            f"fan-out: {fanout['fanout_delivered']:,} of {fanout['fanout_expected']:,} "
            f"deliveries to {args.clients:,} clients of {args.fanout_users} user(s) in "
            f"{fanout['fanout_seconds']} s: {fanout['fanout_msgs_per_s'] or 0:,} msgs/s; "
            f"CPU: notifier {fanout['notifier_cpu_pct']} %, clients "
            f"{fanout['clients_cpu_pct']} %, rest of the machine {fanout['others_cpu_pct']} %",
            flush=True,
        )
    failed = any(
        (latency["lost"], latency["disordered"], fanout["fanout_lost"], fanout["fanout_disordered"])
    )
    if failed:
        print(
            f"MESSAGES LOST OR DISORDERED: latency lost {latency['lost']}, disordered "
            f"{latency['disordered']}; fan-out lost {fanout['fanout_lost']}, disordered "
            f"{fanout['fanout_disordered']}"
        )
    print(
        json.dumps(
            {
                "name": "notifier_latency",
                **latency,
                "p99_goal_ms": P99_GOAL_MS,
                **fanout,
                "cpus": os.cpu_count(),
                "load_1m_before": round(load, 2),
                "clock": "time.monotonic (CLOCK_MONOTONIC, shared by the processes)",
                "seconds": round(time.perf_counter() - wall, 1),
            }
        )
    )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
