"""The notifier over real WebSocket connections, with progress published to the real Redis."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from blogflow.io import progress
from blogflow.io import redis as redis_io
from blogflow.notifier.server import UNAUTHORIZED, Notifier
from blogflow.tokens import sign_user

pytestmark = pytest.mark.integration

KEY = "notifier-test-key-" + "z" * 30


def message(backup_id, done, total, post_id="p"):
    return {
        "type": "backup_progress",
        "backupId": backup_id,
        "postId": post_id,
        "status": "committed",
        "done": done,
        "total": total,
    }


async def receive(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 60))


def test_users_get_their_own_progress_live_and_the_latest_at_once(local_stack, redis_prefix):
    async def scenario():
        notifier = Notifier(prefix=redis_prefix, secret_key=KEY)
        port = await notifier.start(port=0)
        sync = redis_io.connect()
        try:
            url = f"ws://127.0.0.1:{port}/ws?token="
            progress.publish_progress(sync, "alice", message("b1", 1, 3), redis_prefix)
            async with (
                connect(url + sign_user("alice", secret_key=KEY)) as alice,
                connect(url + sign_user("bob", secret_key=KEY)) as bob,
            ):
                assert await receive(alice) == message("b1", 1, 3)  # the latest, at once
                await asyncio.sleep(0.2)  # both registered
                progress.publish_progress(sync, "bob", message("b2", 1, 1), redis_prefix)
                progress.publish_progress(sync, "alice", message("b1", 2, 3), redis_prefix)
                assert await receive(alice) == message("b1", 2, 3)
                assert await receive(bob) == message("b2", 1, 1)
                with pytest.raises(TimeoutError):
                    await receive(bob, timeout=0.5)  # never alice's
                connections = sync.hgetall(f"{redis_prefix}notifier:connections")
                assert sorted(connections.values()) == ["alice", "bob"]
            # a late browser sees the current count of every backup at once
            async with connect(url + sign_user("alice", secret_key=KEY)) as late:
                assert await receive(late) == message("b1", 2, 3)
            await asyncio.sleep(0.2)
            assert sync.hgetall(f"{redis_prefix}notifier:connections") == {}
        finally:
            sync.close()
            await notifier.stop()

    run(scenario())


@pytest.mark.parametrize(
    "token",
    [
        "",
        "forged.token",
        sign_user("alice", ttl=-1, secret_key=KEY),  # expired
        sign_user("alice", secret_key="another-key-" + "q" * 30),  # signed by someone else
    ],
)
def test_missing_forged_or_expired_tokens_are_refused(local_stack, redis_prefix, token):
    async def scenario():
        notifier = Notifier(prefix=redis_prefix, secret_key=KEY)
        port = await notifier.start(port=0)
        sync = redis_io.connect()
        try:
            progress.publish_progress(sync, "alice", message("b1", 1, 3), redis_prefix)
            async with connect(f"ws://127.0.0.1:{port}/ws?token={token}") as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await receive(ws)
                assert closed.value.rcvd.code == UNAUTHORIZED
        finally:
            sync.close()
            await notifier.stop()

    run(scenario())


def test_notifier_serve_command(local_stack, redis_prefix):
    import os
    import subprocess
    import sys

    env = {**os.environ, "BLOGFLOW_SECRET_KEY": KEY}
    command = [sys.executable, "-m", "blogflow.cli", "notifier", "serve", "--port", "0"]
    server = subprocess.Popen(
        [*command, "--redis-prefix", redis_prefix], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        line = ""
        while "listening on" not in line:
            line = server.stderr.readline()
            assert line, "the notifier exited before listening"
        url = line.split("listening on ")[1].split(";")[0].strip()

        async def scenario():
            sync = redis_io.connect()
            try:
                progress.publish_progress(sync, "carol", message("b9", 4, 5), redis_prefix)
            finally:
                sync.close()
            async with connect(f"{url}?token={sign_user('carol', secret_key=KEY)}") as ws:
                assert await receive(ws) == message("b9", 4, 5)

        run(scenario())
    finally:
        server.terminate()
        server.wait(timeout=30)
        server.stderr.close()
    missing = subprocess.run(
        command,
        env={k: v for k, v in env.items() if k != "BLOGFLOW_SECRET_KEY"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "BLOGFLOW_SECRET_KEY is not set" in missing.stderr


def test_notify_progress_sink_reaches_the_right_browser(local_stack, redis_prefix):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from blogflow.io.notify import NotifyProgress

    async def scenario():
        notifier = Notifier(prefix=redis_prefix, secret_key=KEY)
        port = await notifier.start(port=0)
        url = f"ws://127.0.0.1:{port}/ws?token="
        try:
            async with (
                connect(url + sign_user("dana", secret_key=KEY)) as dana,
                connect(url + sign_user("erin", secret_key=KEY)) as erin,
            ):
                await asyncio.sleep(0.2)
                sent = [("dana", message("b5", n, 30, f"p{n}")) for n in range(1, 31)]
                sent.append(("erin", message("b6", 1, 1)))

                def pipeline():
                    with beam.Pipeline(runner=FnApiRunner()) as p:
                        messages = p | beam.Create(sent, reshuffle=False)  # in order
                        _ = messages | NotifyProgress(prefix=redis_prefix)

                await asyncio.to_thread(pipeline)
                got = [await receive(dana) for _ in range(30)]
                assert [m["done"] for m in got] == list(range(1, 31))  # in order
                assert await receive(erin) == message("b6", 1, 1)
                with pytest.raises(TimeoutError):
                    await receive(erin, timeout=0.5)
            async with connect(url + sign_user("dana", secret_key=KEY)) as late:
                assert (await receive(late))["done"] == 30  # the latest count at once
        finally:
            await notifier.stop()

    run(scenario())
    with pytest.raises(ValueError, match="backend"):
        NotifyProgress("carrier-pigeon")


def test_a_browser_that_stops_reading_is_dropped_and_holds_up_no_one(local_stack, redis_prefix):
    big = "x" * 2000  # ~2 KB a message: the stalled connection falls behind quickly

    async def scenario():
        notifier = Notifier(prefix=redis_prefix, secret_key=KEY)
        port = await notifier.start(port=0)
        sync = redis_io.connect()
        url = f"ws://127.0.0.1:{port}/ws?token="
        try:
            async with (
                # max_queue=1: the client stops reading its socket once one message waits
                connect(url + sign_user("stuck", secret_key=KEY), max_queue=1) as stalled,
                connect(url + sign_user("stuck", secret_key=KEY)) as same_user,
                connect(url + sign_user("other", secret_key=KEY)) as other_user,
            ):
                await asyncio.sleep(0.3)  # all three registered
                total = 8000
                received = {"same": 0, "other": 0}

                async def read(ws, name, want):
                    while received[name] < want:
                        message = await receive(ws, timeout=20)
                        received[name] += 1
                        assert message["done"] == received[name]  # in order, none lost

                readers = [
                    asyncio.create_task(read(same_user, "same", total)),
                    asyncio.create_task(read(other_user, "other", total)),
                ]
                for start in range(0, total, 100):
                    pipe = sync.pipeline(transaction=False)
                    for done in range(start + 1, start + 101):
                        for user in ("stuck", "other"):
                            progress.queue_progress(
                                pipe, user, message("b1", done, total, big), redis_prefix
                            )
                    pipe.execute()
                    # readers that keep up are at most a batch behind; the stalled one isn't
                    for _ in range(400):
                        if min(received.values()) >= start:
                            break
                        await asyncio.sleep(0.01)
                await asyncio.wait_for(asyncio.gather(*readers), 60)
                assert received == {"same": total, "other": total}
                with pytest.raises(ConnectionClosed):  # dropped, not waited for
                    for _ in range(total):
                        await asyncio.wait_for(stalled.recv(), 5)
        finally:
            sync.close()
            await notifier.stop()

    run(scenario())
