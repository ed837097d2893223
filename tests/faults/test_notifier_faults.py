"""The notifier across Redis crashes and stalls: it says so on /healthz, and progress
resumes by itself once Redis is back.

Each test has a Redis of its own (the session's is shared by every other test), killed
with SIGKILL and started again on the same port, or stopped with SIGSTOP.
"""

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect

from blogflow.io import progress
from blogflow.io import redis as redis_io
from blogflow.local.stack import LocalStack
from blogflow.notifier.server import Notifier
from blogflow.tokens import sign_user

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "notifier-fault-key-" + "f" * 30
#: What the issue asks: progress flows again within 5 s of Redis being back.
RESUME_WITHIN = 5.0


@pytest.fixture
def own_redis(tmp_path):
    with LocalStack(state_dir=tmp_path / "stack", services=("redis",)) as stack:
        yield stack


def message(done, total=9):
    return {
        "type": "backup_progress",
        "backupId": "b1",
        "postId": f"p{done}",
        "status": "committed",
        "done": done,
        "total": total,
    }


def healthz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def until(condition, within, what):
    """Awaits a condition (a sync callable, run in a thread); returns the seconds taken."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        if time.monotonic() - started > within:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def next_progress(ws, within):
    """The next backup_progress message (catch-up replays may repeat the latest)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no progress within {within} s")
        body = json.loads(await asyncio.wait_for(ws.recv(), left))
        if body.get("type") == "backup_progress":
            return body


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 90))


async def _connected(own_redis):
    url = own_redis.env["REDIS_URL"]
    notifier = Notifier(redis_url=url, secret_key=KEY)
    port = await notifier.start(port=0)
    ws = await connect(f"ws://127.0.0.1:{port}/ws?token={sign_user('alice', secret_key=KEY)}")
    await asyncio.sleep(0.2)  # registered
    return notifier, port, ws, url


def test_progress_resumes_after_redis_is_killed_and_started_again(own_redis):
    async def scenario():
        notifier, port, ws, url = await _connected(own_redis)
        try:
            progress.publish_progress(redis_io.connect(url), "alice", message(1))
            assert await next_progress(ws, 5) == message(1)
            assert await asyncio.to_thread(healthz, port) == (200, "ok\n")

            own_redis.kill("redis")
            await until(lambda: healthz(port)[0] == 503, 5, "/healthz says unhealthy")
            status, text = await asyncio.to_thread(healthz, port)
            assert "Redis" in text, text

            own_redis.restart("redis")
            back = time.monotonic()
            # Published while the notifier may not have subscribed again yet: it still
            # arrives, by the catch-up replay if not live.
            progress.publish_progress(redis_io.connect(url), "alice", message(2))
            assert await next_progress(ws, RESUME_WITHIN) == message(2)
            await until(lambda: healthz(port) == (200, "ok\n"), RESUME_WITHIN, "healthy again")
            # And live again: the next message comes through the new subscription.
            progress.publish_progress(redis_io.connect(url), "alice", message(3))
            assert await next_progress(ws, 2) == message(3)
            assert time.monotonic() - back < RESUME_WITHIN + 2
            assert redis_io.connect(url).execute_command("PUBSUB", "NUMPAT") == 1
        finally:
            await ws.close()
            await notifier.stop()

    run(scenario())


def test_a_stalled_redis_is_unhealthy_and_progress_resumes_when_it_answers(own_redis):
    async def scenario():
        notifier, port, ws, url = await _connected(own_redis)
        try:
            with own_redis.frozen("redis"):
                await until(lambda: healthz(port)[0] == 503, 6, "unhealthy while stalled")
            thawed = time.monotonic()
            await until(lambda: healthz(port) == (200, "ok\n"), RESUME_WITHIN, "healthy again")
            progress.publish_progress(redis_io.connect(url), "alice", message(4))
            assert await next_progress(ws, 2) == message(4)
            assert time.monotonic() - thawed < RESUME_WITHIN + 2
        finally:
            await ws.close()
            await notifier.stop()

    run(scenario())
