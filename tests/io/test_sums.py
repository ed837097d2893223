"""WriteSums and WriteDeadLetters against the real local MongoDB and Redis."""

import base64
import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from blogflow.events import Rejection
from blogflow.io import redis as redis_io
from blogflow.io.deadletter import MAX_PAYLOAD_BYTES, WriteDeadLetters
from blogflow.io.sums import WriteSums, redis_key
from blogflow.transforms.summing import PartialSum


def cached(array_id, prefix):
    """The Redis hash of a sum, decoded."""
    return redis_io.connect().hgetall(redis_key(array_id, prefix))


def partial(*packets):
    acc = PartialSum()
    for packet in packets:
        acc.add(packet)
    return acc


def write(mongo_db, redis_prefix, elements):
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | beam.Create(elements, reshuffle=False)
            | WriteSums(database=mongo_db.name, redis_prefix=redis_prefix)
        )


def test_partial_then_complete_in_mongo_and_redis(mongo_db, redis_client, redis_prefix):
    write(mongo_db, redis_prefix, [("a", partial((0, 6, 3), (1, 2, 3)))])
    doc = mongo_db.sums.find_one({"_id": "a"})
    assert (doc["sum"], doc["packetsSeen"], doc["arrayLength"], doc["status"]) == (
        8,
        2,
        3,
        "partial",
    )
    assert cached("a", redis_prefix)["status"] == "partial"

    write(mongo_db, redis_prefix, [("a", partial((1, 2, 3), (2, 10, 3)))])
    doc = mongo_db.sums.find_one({"_id": "a"})
    assert (doc["sum"], doc["packetsSeen"], doc["status"]) == (18, 3, "complete")
    assert cached("a", redis_prefix) == {
        "sum": "18",
        "status": "complete",
        "packetsSeen": "3",
        "arrayLength": "3",
        "updatedAt": doc["updatedAt"].replace(tzinfo=dt.timezone.utc).isoformat(),
    }


def test_a_complete_sum_is_written_once(mongo_db, redis_prefix):
    write(mongo_db, redis_prefix, [("a", partial((0, 6, 1)))])
    first = mongo_db.sums.find_one({"_id": "a"})
    write(mongo_db, redis_prefix, [("a", partial((0, 6, 1)))])
    again = mongo_db.sums.find_one({"_id": "a"})
    assert first == again and first["rev"] == 1 and first["status"] == "complete"


def test_a_redis_outage_fails_the_run_and_the_replay_repairs_redis(
    mongo_db, redis_client, redis_prefix
):
    with pytest.raises(Exception, match="(?i)connect|redis"):
        with beam.Pipeline(runner=FnApiRunner()) as p:
            _ = (
                p
                | beam.Create([("a", partial((0, 6, 1)))])
                | WriteSums(
                    database=mongo_db.name,
                    redis_url="redis://127.0.0.1:1/0",
                    redis_prefix=redis_prefix,
                )
            )
    assert not redis_client.exists(redis_key("a", redis_prefix))
    write(mongo_db, redis_prefix, [("a", partial((0, 6, 1)))])
    assert cached("a", redis_prefix)["sum"] == "6"
    assert mongo_db.sums.find_one({"_id": "a"})["sum"] == 6


def test_a_lost_race_is_merged_again(mongo_db, redis_prefix):
    """Another writer changes the array between our read and our write: nothing is lost."""
    write(mongo_db, redis_prefix, [("a", partial((0, 6, 3)))])
    from blogflow.io import sums as sums_module

    fn = sums_module._WriteSumsFn(None, mongo_db.name, None, redis_prefix, 100, 4)
    fn.setup()
    real_find = fn._sums.find
    raced = []

    def find_then_race(*args, **kwargs):
        docs = list(real_find(*args, **kwargs))
        if not raced:  # the other writer lands packet 1 right after our read
            raced.append(True)
            write(mongo_db, redis_prefix, [("a", partial((1, 2, 3)))])
        return docs

    fn._sums.find = find_then_race  # type: ignore[method-assign]
    fn.start_bundle()
    fn.process(("a", partial((2, 10, 3))))
    fn.finish_bundle()
    fn.teardown()
    doc = mongo_db.sums.find_one({"_id": "a"})
    assert (doc["sum"], doc["packetsSeen"], doc["status"]) == (18, 3, "complete")


def test_dead_letters_are_stored_once_with_their_reason(mongo_db):
    big = b"x" * (MAX_PAYLOAD_BYTES + 10)
    rejections = [
        Rejection("parse", "invalid JSON: EOF", b"{", "m-1"),
        Rejection("parse", "invalid JSON: EOF", b"{", "m-1"),  # redelivered
        Rejection("parse", "invalid UTF-8 at byte 0", b"\xff", "m-2"),
        Rejection("parse", "too big", big, "m-3"),
    ]
    for _ in range(2):  # a replay of the whole run stores nothing new
        with beam.Pipeline(runner=FnApiRunner()) as p:
            _ = p | beam.Create(rejections) | WriteDeadLetters("summing", database=mongo_db.name)
    docs = {d["sourceId"]: d for d in mongo_db.deadletters.find()}
    assert sorted(docs) == ["m-1", "m-2", "m-3"]
    assert docs["m-1"]["payload"] == "{" and docs["m-1"]["error"] == "invalid JSON: EOF"
    assert docs["m-1"]["pipeline"] == "summing" and docs["m-1"]["stage"] == "parse"
    assert docs["m-2"]["payload"] == b"\xff"
    assert len(docs["m-3"]["payload"]) == MAX_PAYLOAD_BYTES and docs["m-3"]["truncated"]
    assert docs["m-3"]["payloadBytes"] == MAX_PAYLOAD_BYTES + 10


def test_a_sum_stored_as_a_bitmap_is_completed_and_rewritten_with_digests(mongo_db, redis_prefix):
    # The form written before digests were kept: packet 0 of 2 counted, as a bitmap.
    mongo_db.sums.insert_one(
        {
            "_id": "old",
            "sum": 6,
            "arrayLength": 2,
            "packetsSeen": 1,
            "status": "partial",
            "updatedAt": dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
            "seen": "AQ==",
            "rev": 1,
        }
    )
    write(mongo_db, redis_prefix, [("old", partial((0, 99, 2), (1, 4, 2)))])
    doc = mongo_db.sums.find_one({"_id": "old"})
    assert (doc["sum"], doc["status"], doc["rev"]) == (10, "complete", 2)
    assert "seen" not in doc and len(base64.b64decode(doc["digests"])) == 2
