"""The summing pipeline end to end: SQS (moto) -> Beam (FnApiRunner) -> MongoDB and Redis."""

import json
import os
import subprocess
import sys
import time

import pytest
from apache_beam.metrics.metric import MetricsFilter

from blogflow.events import make_event
from blogflow.io import redis as redis_io
from blogflow.io import sqs
from blogflow.io.sums import redis_key
from blogflow.pipelines import summing
from blogflow.transforms.summing import split_array

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(local_stack, sqs_client, unique_name):
    """A queue whose visibility timeout (10 s) outlasts a bundle of the drain."""
    url = sqs.create_queue(unique_name, visibility_timeout=10)
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def drain(queue_url, mongo_db, redis_prefix, *extra):
    return summing.run(
        [
            f"--source=sqs://{queue_url}",
            "--drain",
            "--idle-timeout=1",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
            *extra,
        ]
    )


def queue_is_empty(sqs_client, url):
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return all(value == "0" for value in attributes.values())


def stored(mongo_db, array_id):
    return mongo_db.sums.find_one({"_id": array_id}) or {}


def cached(array_id, prefix):
    return redis_io.connect().hgetall(redis_key(array_id, prefix))


def packets(values):
    array_id, events = split_array(values)
    return array_id, [event.to_json() for event in events]


def test_sums_duplicates_and_bad_messages_over_two_drains(
    queue, sqs_client, mongo_db, redis_prefix
):
    arrays = {}
    first, second = [], []
    for values in ([3, 1, 4, 1, 5], [10, -20, 30], [7] * 12):
        array_id, bodies = packets(values)
        arrays[array_id] = 2 * sum(values)
        first += bodies[::2]  # half of every array in the first drain...
        second += bodies[1::2]  # ...the rest, and some redeliveries, in the second
        second += bodies[:2]
    bad = [
        b"not json at all",
        b'{"id":"x1","type":"sum_packet","v":1,"occurredAt":"2026-11-21T10:00:00Z",'
        b'"data":{"arrayId":"z","packetId":0,"packetValue":1,"arrayLength":-1}}',
        make_event("post_liked", {"postId": "p1"}).to_json(),
        b'{"id":"x2","type":"sum_packet","v":1,"occurredAt":"2026-11-21 soon","data":{}}',
    ]
    sqs.send_messages(queue, first + bad[:2])
    drain(queue, mongo_db, redis_prefix)
    assert queue_is_empty(sqs_client, queue)
    for array_id in arrays:
        doc = stored(mongo_db, array_id)
        assert doc["status"] == "partial" and doc["packetsSeen"] < doc["arrayLength"]
        assert cached(array_id, redis_prefix)["status"] == "partial"

    sqs.send_messages(queue, second + bad[2:])
    drain(queue, mongo_db, redis_prefix)
    assert queue_is_empty(sqs_client, queue)
    for array_id, total in arrays.items():
        doc = stored(mongo_db, array_id)
        assert (doc["sum"], doc["status"]) == (total, "complete"), array_id
        assert doc["packetsSeen"] == doc["arrayLength"]
        assert cached(array_id, redis_prefix)["sum"] == str(total)
    letters = sorted(mongo_db.deadletters.find(), key=lambda d: d["error"])
    assert [d["error"].split(":")[0] for d in letters] == [
        "bad timestamp",
        "data.arrayLength",
        "event type 'post_liked' is not one this pipeline reads",
        "invalid JSON",
    ]
    assert all(d["pipeline"] == "summing" and d["stage"] == "parse" for d in letters)
    assert {
        d["payload"] if isinstance(d["payload"], bytes) else d["payload"].encode() for d in letters
    } == set(bad)


def test_an_oversized_message_is_dead_lettered_cut_at_64_kib(mongo_db, redis_prefix, tmp_path):
    big = json.dumps({"id": "big", "padding": "x" * 300_000}).encode()
    archive = tmp_path / "big.jsonl"
    archive.write_bytes(big + b"\n")
    summing.run([f"--source=file://{archive}", f"--mongo-db={mongo_db.name}"])
    (letter,) = mongo_db.deadletters.find()
    assert "over the 262144 limit" in letter["error"]
    assert letter["truncated"] and len(letter["payload"]) == 64 * 1024


def test_a_replayed_drain_changes_nothing(queue, mongo_db, redis_prefix):
    array_id, bodies = packets([1, 2, 3])
    sqs.send_messages(queue, bodies)
    drain(queue, mongo_db, redis_prefix)
    before = stored(mongo_db, array_id)
    assert before["status"] == "complete" and before["sum"] == 12
    sqs.send_messages(queue, bodies)  # the whole array delivered again
    drain(queue, mongo_db, redis_prefix)
    assert stored(mongo_db, array_id) == before


def test_a_sum_past_32_bits_is_mirrored_and_its_redelivery_drains(
    queue, sqs_client, mongo_db, redis_prefix
):
    # MongoDB hands a stored number of 2**31 or more back as bson's Int64: a redelivery
    # then mirrors the stored sum to Redis, which once failed every drain after it.
    array_id, bodies = packets([2_000_000_000, 2_000_000_000])
    other_id, others = packets([1])
    sqs.send_messages(queue, bodies)
    drain(queue, mongo_db, redis_prefix)
    sqs.send_messages(queue, [*bodies, *others])  # a redelivery, and a good array after it
    drain(queue, mongo_db, redis_prefix)
    assert queue_is_empty(sqs_client, queue)
    assert stored(mongo_db, array_id)["sum"] == 8_000_000_000
    assert cached(array_id, redis_prefix)["sum"] == "8000000000"
    assert cached(other_id, redis_prefix)["status"] == "complete"


def conflicts_counted(result):
    found = result.metrics().query(MetricsFilter().with_name("sum_packet_conflicts"))
    return sum(counter.committed for counter in found["counters"])


def test_every_conflicting_copy_is_counted_and_never_summed(queue, mongo_db, redis_prefix):
    # 100 packets sent twice with other values: once in a later drain (met against the
    # store), once in the same drain (met in the bundle or against the store).
    def copies(value):
        return [
            make_event(
                "sum_packet",
                {"arrayId": f"c{i}", "packetId": 0, "packetValue": value + i, "arrayLength": 1},
                event_id=f"c{i}:{value}",
            ).to_json()
            for i in range(100)
        ]

    sqs.send_messages(queue, copies(1000))
    first = drain(queue, mongo_db, redis_prefix)
    sqs.send_messages(queue, copies(5000) + copies(9000))
    later = drain(queue, mongo_db, redis_prefix)
    assert conflicts_counted(first) == 0
    # The values are fixed, and so are their one-byte digests: none of these collide.
    assert conflicts_counted(later) == 200
    for i in range(100):
        doc = stored(mongo_db, f"c{i}")
        assert (doc["sum"], doc["status"]) == (2 * (1000 + i), "complete")  # counted first


def test_a_mongo_outage_fails_the_run_and_loses_nothing(
    local_stack, sqs_client, mongo_db, redis_prefix, unique_name
):
    """A crash between emit and finalize: no message is deleted before its sum is stored."""
    url = sqs.create_queue(unique_name, visibility_timeout=2)
    try:
        array_id, bodies = packets([5, 6, 7])
        sqs.send_messages(url, bodies)
        with pytest.raises(Exception, match="(?i)timed out|refused|connect"):
            drain(
                url,
                mongo_db,
                redis_prefix,
                "--mongo-uri=mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300",
            )
        assert stored(mongo_db, array_id) == {}
        time.sleep(2.5)  # the visibility timeout: SQS makes the messages visible again
        drain(url, mongo_db, redis_prefix)
        assert stored(mongo_db, array_id)["sum"] == 36
        assert queue_is_empty(sqs_client, url)
    finally:
        sqs_client.delete_queue(QueueUrl=url)


def test_from_a_jsonl_archive(mongo_db, redis_prefix, tmp_path):
    array_id, bodies = packets(list(range(1, 101)))
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(bodies[:50]) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(bodies[50:] + bodies[:10] + [b"\xff"]) + b"\n")
    summing.run(
        [
            f"--source=file://{tmp_path}/*.jsonl",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
        ]
    )
    doc = stored(mongo_db, array_id)
    assert (doc["sum"], doc["status"], doc["packetsSeen"]) == (10100, "complete", 100)
    (letter,) = mongo_db.deadletters.find()
    assert letter["error"] == "invalid UTF-8 at byte 0" and letter["payload"] == b"\xff"
    assert letter["sourceId"].endswith(
        "b.jsonl@" + str(sum(len(b) + 1 for b in bodies[50:] + bodies[:10]))
    )


def test_the_command_line_end_to_end(queue, mongo_db, redis_prefix):
    def blogflow(*args):
        done = subprocess.run(
            [sys.executable, "-m", "blogflow.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ},
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    array_id = blogflow("sum", "3", "1", "4", "1", "5", "--queue", queue).strip()
    out = blogflow(
        "run",
        "summing",
        f"--source=sqs://{queue}",
        "--drain",
        "--idle-timeout=1",
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={redis_prefix}",
    )
    assert "events_parsed: 5" in out
    assert f"array {array_id}: sum=28 status=complete packets=5/5" in blogflow(
        "result", array_id, "--mongo-db", mongo_db.name
    )
    assert blogflow("deadletters", "count", "--mongo-db", mongo_db.name).strip() == "0"
