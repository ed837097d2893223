"""The summing job under crashes and outages: exact sums, whatever is killed and when.

- the job itself killed with SIGKILL at random points of its drains, then drained again;
- Redis and MongoDB killed mid-run and started again (durable servers: they find their
  data, as a real deployment's would), and stalled with SIGSTOP;
- every time: the job fails clearly rather than hangs, nothing is lost, nothing is counted
  twice, and the last drain leaves exact, complete sums in MongoDB and Redis.

Values are drawn from the whole 32-bit range, so most sums need 64 bits.
"""

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import pymongo
import pytest
import redis

from blogflow.io import sqs
from blogflow.io.sums import redis_key
from blogflow.local.stack import LocalStack
from blogflow.transforms.summing import split_array
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

INT32 = 2**31
#: A failed job must say so within this long: bounded client timeouts, no hang.
FAILS_WITHIN = 60.0


def arrays(seed, count, length):
    """``count`` arrays of ``length`` packets, values over the whole 32-bit range; returns
    the expected sums and the message bodies, shuffled, with a fifth sent twice."""
    rng = random.Random(seed)
    expected, bodies = {}, []
    for index in range(count):
        values = [
            rng.choice((-INT32, INT32 - 1, rng.randrange(-INT32, INT32))) for _ in range(length)
        ]
        array_id, events = split_array(values, array_id=f"s{seed}-{index}")
        expected[array_id] = 2 * sum(values)
        bodies += [event.to_json() for event in events]
    bodies += rng.sample(bodies, len(bodies) // 5)
    rng.shuffle(bodies)
    return expected, bodies


class Job:
    """``python -m blogflow.pipelines.summing`` draining one queue, as a child process."""

    def __init__(self, queue, database, prefix, env):
        self.args = [
            sys.executable,
            "-m",
            "blogflow.pipelines.summing",
            f"--source=sqs://{queue}",
            "--drain",
            "--idle-timeout=2",
            f"--mongo-db={database}",
            f"--redis-prefix={prefix}",
        ]
        self.env = {**os.environ, **env}

    def start(self):
        return subprocess.Popen(
            self.args,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def drain(self, timeout=180):
        done = subprocess.run(
            self.args, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return done.returncode, done.stderr


def stop(process):
    """Ends a child this test started (by its pid) and reaps it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def fail_mid_run(job, mongo_db, fault):
    """Starts the job, injects ``fault`` once it has stored a sum, and waits for the job to
    fail; returns its exit code, how long it took to fail, and its stderr."""
    process = job.start()
    try:
        wait_for(lambda: mongo_db.sums.count_documents({}) > 0, 60, "the job writes sums")
        fault()
        started = time.monotonic()
        returncode = process.wait(FAILS_WITHIN)
        failed_after = time.monotonic() - started
        return returncode, failed_after, process.stderr.read()
    finally:
        stop(process)


def assert_exact(expected, mongo_db, redis_client, prefix):
    docs = {doc["_id"]: doc for doc in mongo_db.sums.find()}
    assert set(docs) == set(expected)
    wrong = {
        key: (docs[key]["sum"], docs[key]["status"], total)
        for key, total in expected.items()
        if (docs[key]["sum"], docs[key]["status"]) != (total, "complete")
    }
    assert not wrong, f"{len(wrong)} sums wrong, e.g. {list(wrong.items())[:3]}"
    mirrored = {
        key: (redis_client.hget(redis_key(key, prefix), "sum") or b"").decode() for key in expected
    }
    assert mirrored == {key: str(total) for key, total in expected.items()}
    assert any(abs(total) >= INT32 for total in expected.values())  # 64-bit sums were made


def queue_is_empty(sqs_client, url):
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(value == "0" for value in attributes.values())


def in_flight(sqs_client, url):
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessagesNotVisible"])


def counted(mongo_db):
    """Packets counted in MongoDB so far: what a run has stored."""
    return sum(doc["packetsSeen"] for doc in mongo_db.sums.find({}, {"packetsSeen": True}))


@pytest.fixture
def queue(local_stack, sqs_client, unique_name):
    # Visibility 5 s: a killed job's messages come back soon, a live bundle keeps its own.
    url = sqs.create_queue(unique_name, visibility_timeout=5)
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def test_kill_9_at_random_points_of_drains_then_a_drain_gives_exact_sums(
    queue, sqs_client, mongo_db, redis_client, redis_prefix
):
    # Five waves of 4 arrays x 25 packets (+ a fifth again), one killed drain per wave:
    # every kill finds work in progress, and earlier waves' leftovers are redelivered.
    expected = {}
    job = Job(queue, mongo_db.name, redis_prefix, {})
    rng = random.Random(9)
    kills_mid_write = 0
    for wave in range(5):
        sums, bodies = arrays(seed=wave, count=4, length=25)
        expected.update(sums)
        sqs.send_messages(queue, bodies)
        written = counted(mongo_db)
        process = job.start()
        try:
            # A random moment after this run first stored something.
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline and process.poll() is None:
                if counted(mongo_db) > written:
                    time.sleep(rng.uniform(0, 1))
                    kills_mid_write += process.poll() is None
                    break
                time.sleep(0.05)
        finally:
            stop(process)
    print(f"kill -9 x5, {kills_mid_write} of them while sums were being written")
    assert kills_mid_write >= 3, "the kills should land while sums are being written"
    # What the last killed drain had received comes back after the visibility timeout (5 s),
    # longer than a drain waits on an empty queue (2 s): the last drain starts after that
    # (as in the tests below).
    wait_for(lambda: in_flight(sqs_client, queue) == 0, 30, "the killed drains' messages")
    returncode, stderr = job.drain()
    assert returncode == 0, stderr[-2000:]
    assert queue_is_empty(sqs_client, queue)
    assert_exact(expected, mongo_db, redis_client, redis_prefix)


@pytest.fixture
def durable_stack(tmp_path):
    with LocalStack(state_dir=tmp_path / "stack", services=("redis", "mongo"), durable=True) as s:
        yield s


def _with_query(url, query):
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=query))


@pytest.mark.parametrize("service", ["redis", "mongo"])
def test_a_store_killed_mid_run_fails_the_job_and_a_drain_after_its_restart_is_exact(
    service, queue, sqs_client, durable_stack, unique_name
):
    env = durable_stack.env
    expected, bodies = arrays(seed=len(service), count=12, length=25)
    sqs.send_messages(queue, bodies)
    job = Job(queue, unique_name, f"{unique_name}:", env)
    mongo_db = pymongo.MongoClient(env["MONGODB_URI"])[unique_name]
    returncode, failed_after, stderr = fail_mid_run(
        job, mongo_db, lambda: durable_stack.kill(service)
    )
    print(f"{service} killed: the job failed after {failed_after:.1f} s")
    assert returncode != 0 and failed_after < FAILS_WITHIN
    assert ("redis" if service == "redis" else "mongo") in stderr.lower(), stderr[-2000:]
    assert not queue_is_empty(sqs_client, queue)  # what it could not store came back
    durable_stack.restart(service)
    wait_for(lambda: in_flight(sqs_client, queue) == 0, 30, "the failed run's messages")
    returncode, stderr = job.drain()
    assert returncode == 0, stderr[-2000:]
    assert queue_is_empty(sqs_client, queue)
    client = redis.Redis.from_url(env["REDIS_URL"])
    assert_exact(expected, mongo_db, client, f"{unique_name}:")


@pytest.mark.parametrize("service", ["redis", "mongo"])
def test_a_stalled_store_fails_the_job_in_bounded_time_and_a_later_drain_is_exact(
    service, queue, sqs_client, durable_stack, unique_name
):
    # Timeouts a deployment would set in its URLs; the defaults wait up to 60 s.
    env = {
        "REDIS_URL": _with_query(durable_stack.env["REDIS_URL"], "socket_timeout=3"),
        "MONGODB_URI": _with_query(
            durable_stack.env["MONGODB_URI"], "socketTimeoutMS=3000&serverSelectionTimeoutMS=3000"
        ),
    }
    expected, bodies = arrays(seed=7 + len(service), count=12, length=25)
    sqs.send_messages(queue, bodies)
    job = Job(queue, unique_name, f"{unique_name}:", env)
    mongo_db = pymongo.MongoClient(durable_stack.env["MONGODB_URI"])[unique_name]
    with contextlib.ExitStack() as thaw_after:
        returncode, failed_after, stderr = fail_mid_run(
            job, mongo_db, lambda: thaw_after.enter_context(durable_stack.frozen(service))
        )
    print(f"{service} stalled: the job failed after {failed_after:.1f} s")
    assert returncode != 0 and failed_after < FAILS_WITHIN, stderr[-2000:]
    wait_for(lambda: in_flight(sqs_client, queue) == 0, 30, "the failed run's messages")
    returncode, stderr = job.drain()
    assert returncode == 0, stderr[-2000:]
    assert queue_is_empty(sqs_client, queue)
    client = redis.Redis.from_url(durable_stack.env["REDIS_URL"])
    assert_exact(expected, mongo_db, client, f"{unique_name}:")
