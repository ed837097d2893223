"""Streaming deployments, tested streaming: each job runs on Prism, unbounded, and its
results are asserted while it is still RUNNING; then it is stopped, within bounded time.

Summing from ``sqs://`` (exactly once under redelivery), backup from ``sqs://`` and
``pubsub://`` (a 30-post
backup requested while the job runs is done within 10 s; two backups of one repository
stay serialised), and the command line: ``blogflow run summing --source sqs://Q`` is a
streaming job that SIGINT and SIGTERM stop in one line, losing nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest
from apache_beam.runners.runner import PipelineState

from blogflow.io import pubsub, sqs
from blogflow.io.backups import load_backup
from blogflow.io.users import link_user
from blogflow.pipelines import backup, summing
from blogflow.tokens import Secret
from blogflow.transforms.backups import BackupPost, post_path
from tests.pipelines.conftest import TOKEN
from tests.pipelines.test_backup import (
    KEY,
    add_posts,
    request,
    tree_paths,
    writes,
)
from tests.pipelines.test_summing import packets, queue_is_empty, stored
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

#: Longest a test waits for a result of a running job.
DEADLINE = 60.0


def backup_status(mongo_db, backup_id: str) -> str | None:
    return (load_backup(mongo_db, backup_id) or {}).get("status")


@pytest.fixture
def queue(local_stack, sqs_client, unique_name) -> Iterator[str]:
    url = sqs.create_queue(unique_name, visibility_timeout=10)
    yield url
    sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def running() -> Iterator[Callable[..., Any]]:
    """``running(job, argv)`` starts a job (on Prism: it returns with the job running)
    and checks it streams; every job started is cancelled after the test."""
    started = []

    def start(job, argv):
        result = job.start(argv)
        started.append(result)
        assert result.state in (PipelineState.STARTING, PipelineState.RUNNING)
        return result

    yield start
    for result in started:
        if not PipelineState.is_terminal(result.state):
            result.cancel()
        wait_for(lambda r=result: PipelineState.is_terminal(r.state), 30, "the job to stop")
        assert result.state == PipelineState.CANCELLED


def test_summing_streams_from_sqs_exactly_once_under_redelivery(
    queue, sqs_client, mongo_db, redis_prefix, running
):
    job = running(
        summing.JOB,
        [
            f"--source=sqs://{queue}",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
        ],
    )
    first, bodies = packets([3, 1, 4, 1, 5, 9, 2, 6])
    sqs.send_messages(queue, bodies)
    done = wait_for(lambda: stored(mongo_db, first).get("status") == "complete", DEADLINE, "sum 1")
    assert done and stored(mongo_db, first)["sum"] == 62
    # the same packets again (a producer's retry), with a second array
    second, more = packets(list(range(40)))
    sqs.send_messages(queue, bodies[:5] + more + bodies[5:])
    wait_for(lambda: stored(mongo_db, second).get("status") == "complete", DEADLINE, "sum 2")
    assert job.state == PipelineState.RUNNING
    assert stored(mongo_db, first)["sum"] == 62 and stored(mongo_db, second)["sum"] == 2 * 780
    # committed bundles were finalized: their messages deleted, none left to redeliver
    wait_for(lambda: queue_is_empty(sqs_client, queue), 30, "the queue to empty")


@pytest.fixture(params=["sqs", "pubsub"])
def requests_source(request, unique_name) -> tuple[str, Callable[[list[bytes]], Any]]:
    """``(source URI, send(bodies))`` of an SQS queue or a Pub/Sub subscription of this
    test's own."""
    if request.param == "sqs":
        url = request.getfixturevalue("queue")
        return f"sqs://{url}", lambda bodies: sqs.send_messages(url, bodies)
    topic = request.getfixturevalue("topic")
    subscription = request.getfixturevalue("subscription")
    return f"pubsub://{subscription}", lambda bodies: pubsub.publish_events(topic, bodies)


def test_backup_streams_a_30_post_backup_in_10_s_serialised_per_repository(
    requests_source, mongo_db, redis_prefix, github, repo, running, monkeypatch
):
    source, send = requests_source
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    first = add_posts(mongo_db, "pub-a", 30)
    second = add_posts(mongo_db, "pub-b", 12)
    third = add_posts(mongo_db, "pub-c", 12)
    job = running(
        backup.JOB,
        [
            f"--source={source}",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
            f"--github-api-url={github.url}",
            "--write-interval=0",
            "--posts-per-commit=6",
        ],
    )
    # The job is up once a first request went all the way through.
    send([request("warm-up", "pub-c")])
    wait_for(lambda: backup_status(mongo_db, "warm-up") == "done", DEADLINE, "the warm-up")
    before = len(github.requests())

    sent = time.monotonic()
    send([request("b-30", "pub-a")])
    wait_for(lambda: backup_status(mongo_db, "b-30") == "done", 10, "the 30-post backup")
    took = time.monotonic() - sent
    assert job.state == PipelineState.RUNNING
    stored_backup = load_backup(mongo_db, "b-30")
    assert (stored_backup["done"], stored_backup["total"], stored_backup["failed"]) == (30, 30, 0)
    print(f"30-post backup done {took:.2f} s after its request")  # noqa: T201 - the figure

    # two backups of one repository requested at once: commits one after another
    send([request("b-x", "pub-b"), request("b-y", "pub-a")])
    for backup_id in ("b-x", "b-y"):
        wait_for(lambda b=backup_id: backup_status(mongo_db, b) == "done", DEADLINE, backup_id)
    assert job.state == PipelineState.RUNNING
    paths = {post_path(BackupPost.from_document(p)) for p in first + second + third}
    assert paths <= tree_paths(repo)
    made = writes(github, before)
    # 30 posts in 5 commits, then 2 + 5 (a replay of pub-a under a new id writes again);
    # serialised, so no commit was refused as not a fast forward (422) and rebuilt
    assert made and all(r["status"] in (200, 201) for r in made), [r["status"] for r in made]


def blogflow_cli(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "blogflow.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_command_line_streams_and_stops_cleanly_on_a_signal(
    signum, queue, sqs_client, mongo_db, redis_prefix, redis_client, local_stack
):
    argv = [
        f"--source=sqs://{queue}",
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={redis_prefix}",
    ]
    job = blogflow_cli("run", "summing", *argv)
    try:
        first, bodies = packets([1, 2, 3])
        sqs.send_messages(queue, bodies)
        wait_for(lambda: stored(mongo_db, first).get("status") == "complete", 90, "the sum")
        # its bundle was finalized while the job runs: the messages deleted
        wait_for(lambda: queue_is_empty(sqs_client, queue), 30, "the queue to empty")
        assert job.poll() is None  # still streaming
        prism = [p for p in psutil.Process(job.pid).children(recursive=True) if "prism" in p.name()]
        assert prism, "the job runs on Prism"
        job.send_signal(signum)
        out, err = job.communicate(timeout=30)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 128 + signum
    assert "Traceback" not in err
    name = signal.Signals(signum).name
    assert (
        err.strip().splitlines()[-1].startswith(f"blogflow run summing: stopped by {name} after ")
    )
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in prism)
    # the stack's servers are untouched
    assert redis_client.ping() and mongo_db.command("ping")["ok"]
    # what arrives while no job runs is read by the next one: nothing is lost. A long poll
    # the stopped reader left open at SQS may still take them (they stay invisible for the
    # queue's 10 s visibility timeout), so the drain waits out more than that.
    second, more = packets([10, 20])
    sqs.send_messages(queue, more)
    summing.run([*argv, "--drain", "--idle-timeout=12"])
    assert stored(mongo_db, second)["sum"] == 60 and stored(mongo_db, first)["sum"] == 12
    assert queue_is_empty(sqs_client, queue)
