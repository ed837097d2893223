"""ReadFromKinesis, put_records and create_stream against the real moto server of the
local stack, and the source's restriction, schedule and retries at unit level.

Every integration test gets its own stream (the ``stream`` fixture: two shards, deleted
after). Reads use 0.2 s idle polls and 0.5 s bundles; every waiting loop is bounded.
Unit tests that need an AWS failure moto cannot produce (throttling, expired iterators,
failed PutRecords entries) drive the same code with a small scripted stand-in client.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineResult
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.display import DisplayData
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from botocore.exceptions import ClientError

from blogflow.io import aws, kinesis
from blogflow.io._polling import IDLE_BUNDLE_SECONDS, MonotonicWatermarkEstimator, next_step
from blogflow.io.kinesis import (
    PutRecordsError,
    ReadFromKinesis,
    StreamNotFoundError,
    _bounds,
    _ListShardsFn,
    _ReadShardFn,
    _ReadSpec,
    _ShardPosition,
    _ShardRestriction,
    _ShardSpec,
    _ShardTracker,
    create_stream,
    put_records,
)
from blogflow.io.sources import ReadSource, parse_source

#: Short idle polls and bundles, so drains end quickly.
FAST = {"poll_interval": 0.2, "max_bundle_seconds": 0.5}
_ORIGIN = re.compile(r"(?P<stream>[^/]+)/(?P<shard>shardId-\d{12})/(?P<sequence>\d+)")


# ------------------------------------------------------------------------------ helpers


def run(build: Callable[[beam.Pipeline], Any]) -> PipelineResult:
    """Build a pipeline with ``build`` and run it to completion on FnApiRunner."""
    p = beam.Pipeline(runner=FnApiRunner())
    build(p)
    result = p.run()
    result.wait_until_finish()
    return result


def counter(result: PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed for c in counters)


def read_directly(client: Any, stream: str) -> dict[str, tuple[bytes, int]]:
    """Every record of a stream, read with plain boto3: ``{origin: (data, arrival µs)}``."""
    found: dict[str, tuple[bytes, int]] = {}
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(100):  # bounded: moto returns everything in the first call
            response = client.get_records(ShardIterator=iterator)
            for record in response["Records"]:
                micros = round(record["ApproximateArrivalTimestamp"].timestamp() * 1_000_000)
                origin = f"{stream}/{shard_id}/{record['SequenceNumber']}"
                found[origin] = (record["Data"], micros)
            iterator = response["NextShardIterator"]
            if not response["Records"]:
                break
    return found


def shard_of(origin: str) -> str:
    match = _ORIGIN.fullmatch(origin)
    assert match, f"unexpected origin {origin!r}"
    return match["shard"]


def with_timestamp(record, ts=beam.DoFn.TimestampParam) -> tuple[str, bytes, int]:
    return record.id, record.payload, ts.micros


def _client_error(code: str, message: str = "x", operation: str = "GetRecords") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture
def stream(make_stream: Any) -> str:
    """A two-shard Kinesis stream of this test's own, deleted after it."""
    return make_stream(2)


# ----------------------------------------------------------------- reading from moto


@pytest.mark.integration
def test_drain_reads_every_record_of_two_shards_once(kinesis_client, stream):
    bodies = [f'{{"n":{i}}}' for i in range(40)]
    assert put_records(stream, bodies) == 40
    stored = read_directly(kinesis_client, stream)
    assert len(stored) == 40
    assert {shard_of(origin) for origin in stored} == {
        "shardId-000000000000",
        "shardId-000000000001",
    }, "the default partition key spreads records over both shards"
    expected = [(origin, data, micros) for origin, (data, micros) in stored.items()]

    def build(p):
        records = p | "ReadFromKinesis" >> ReadFromKinesis(stream, idle_timeout=1, **FAST)
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([b.encode() for b in bodies]),
            label="CheckPayloads",
        )
        # ids are stream/shard/sequence, timestamps the records' ApproximateArrivalTimestamp
        assert_that(
            records | "WithTimestamps" >> beam.Map(with_timestamp),
            equal_to(expected),
            label="CheckIdsAndArrivalTimes",
        )

    result = run(build)
    assert counter(result, "records_received") == 40
    assert counter(result, "throttled") == 0


@pytest.mark.integration
def test_tiny_bundles_checkpoint_often_and_lose_or_repeat_nothing(kinesis_client, stream):
    bodies = [f"r{i:03d}" for i in range(45)]
    put_records(stream, bodies)
    expected_ids = sorted(read_directly(kinesis_client, stream))

    def build(p):
        records = p | "ReadFromKinesis" >> ReadFromKinesis(
            stream, idle_timeout=1, max_bundle_records=3, **FAST
        )
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([b.encode() for b in bodies]),
            label="CheckPayloads",
        )
        assert_that(
            records | "Ids" >> beam.Map(lambda r: r.id), equal_to(expected_ids), label="Ids"
        )

    result = run(build)
    assert counter(result, "checkpoints") >= 15  # at least one per 3 records
    assert counter(result, "records_received") == 45


@pytest.mark.integration
def test_max_records_is_split_evenly_over_the_shards(kinesis_client, stream):
    put_records(stream, [f"m{i}" for i in range(30)])
    per_shard: dict[str, int] = {}
    for origin in read_directly(kinesis_client, stream):
        per_shard[shard_of(origin)] = per_shard.get(shard_of(origin), 0) + 1
    # each shard reads at most its share (3 of 6), fewer where it holds fewer records
    expected = sorted((shard, min(3, count)) for shard, count in per_shard.items())

    def build(p):
        records = p | "ReadFromKinesis" >> ReadFromKinesis(
            stream, max_records=6, max_bundle_records=2, **FAST
        )
        counts = (
            records
            | "ByShard" >> beam.Map(lambda r: (shard_of(r.id), 1))
            | "Count" >> beam.CombinePerKey(sum)
        )
        assert_that(counts, equal_to(expected))

    result = run(build)
    assert counter(result, "records_received") == sum(count for _, count in expected) <= 6


@pytest.mark.integration
def test_max_records_below_the_shard_count_reads_one_shard_only(kinesis_client, stream):
    put_records(stream, [f"m{i}" for i in range(20)])

    def build(p):
        records = p | "ReadFromKinesis" >> ReadFromKinesis(stream, max_records=1, **FAST)
        assert_that(
            records | "Shards" >> beam.Map(lambda r: shard_of(r.id)),
            equal_to(["shardId-000000000000"]),
        )

    run(build)


@pytest.mark.integration
def test_max_read_time_stops_a_read_of_an_idle_stream(stream):
    started = time.monotonic()

    def build(p):
        records = p | "ReadFromKinesis" >> ReadFromKinesis(stream, max_read_time=1.5, **FAST)
        assert_that(records | "Count" >> beam.combiners.Count.Globally(), equal_to([0]))

    run(build)
    assert 1.5 <= time.monotonic() - started < 15


@pytest.mark.integration
def test_start_position_datetime_reads_records_that_arrived_from_then_on(stream):
    put_records(stream, [f"old{i}" for i in range(6)])
    time.sleep(0.05)  # separate the two batches' arrival times (millisecond precision)
    since = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.05)
    put_records(stream, [f"new{i}" for i in range(6)])

    def build(p):
        records = p | "ReadFromKinesis" >> ReadFromKinesis(
            stream, start_position=since, idle_timeout=1, **FAST
        )
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([f"new{i}".encode() for i in range(6)]),
        )

    run(build)


@pytest.mark.integration
def test_a_missing_stream_fails_clearly(local_stack):
    def build(p):
        _ = p | "ReadFromKinesis" >> ReadFromKinesis("no-such-stream-x1", max_records=1, **FAST)

    with pytest.raises(Exception, match="Kinesis stream 'no-such-stream-x1' does not exist"):
        run(build)


@pytest.mark.integration
def test_read_source_kinesis_uri_drains_the_stream(stream):
    put_records(stream, [f"s{i}" for i in range(8)])
    assert parse_source(f"kinesis://{stream}") == ("kinesis", stream)
    started = time.monotonic()

    def build(p):
        records = p | "ReadSource" >> ReadSource(f"kinesis://{stream}", drain=True, idle_timeout=1)
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([f"s{i}".encode() for i in range(8)]),
        )

    run(build)
    assert time.monotonic() - started < 20


@pytest.mark.integration
def test_read_source_hands_the_aws_settings_to_the_readers(stream, request):
    """The shard lister and readers connect where ReadSource's AwsConfig says, with no AWS
    variable set where they run (FnApiRunner runs them in this process)."""
    put_records(stream, [f"s{i}" for i in range(6)])
    settings = request.getfixturevalue("aws_settings_only")  # after the records are put

    def build(p):
        records = p | "ReadSource" >> ReadSource(
            f"kinesis://{stream}", drain=True, idle_timeout=1, aws=settings
        )
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([f"s{i}".encode() for i in range(6)]),
        )

    run(build)


@pytest.mark.integration
def test_list_shards_follows_next_token(kinesis_client, unique_name):
    create_stream(unique_name, shard_count=3)
    try:
        shards = kinesis._list_shards(kinesis_client, unique_name, page_size=1)
    finally:
        kinesis_client.delete_stream(StreamName=unique_name)
    assert [s["ShardId"] for s in shards] == [f"shardId-00000000000{i}" for i in range(3)]


# ------------------------------------------------------------------------ the producer


@pytest.mark.integration
def test_put_records_batches_more_than_500_records(kinesis_client, stream, monkeypatch):
    calls: list[int] = []
    make_client = aws.make_client

    def spying_client(service: str, **kwargs: Any) -> Any:
        client = make_client(service, **kwargs)
        client.meta.events.register(
            "provide-client-params.kinesis.PutRecords",
            lambda params, **_: calls.append(len(params["Records"])),
        )
        return client

    monkeypatch.setattr(aws, "make_client", spying_client)
    bodies = [f"b{i:04d}" for i in range(1201)]
    assert put_records(stream, bodies) == 1201
    assert calls == [500, 500, 201]
    stored = read_directly(kinesis_client, stream)
    assert sorted(data for data, _ in stored.values()) == [b.encode() for b in bodies]


@pytest.mark.integration
def test_put_records_with_one_partition_key_fills_one_shard(kinesis_client, stream):
    assert put_records(stream, [b"a", "b", b"c"], partition_key="user-1") == 3
    assert len({shard_of(origin) for origin in read_directly(kinesis_client, stream)}) == 1


@pytest.mark.integration
def test_put_records_to_a_missing_stream_fails_clearly(local_stack):
    with pytest.raises(StreamNotFoundError, match="'no-such-stream-x2' does not exist"):
        put_records("no-such-stream-x2", ["x"])


@pytest.mark.integration
def test_create_stream_is_idempotent(kinesis_client, unique_name):
    try:
        arn = create_stream(unique_name, shard_count=2)
        assert create_stream(unique_name, shard_count=2) == arn
        assert arn.endswith(f"/{unique_name}")
        summary = kinesis_client.describe_stream_summary(StreamName=unique_name)
        assert summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE"
        assert summary["StreamDescriptionSummary"]["OpenShardCount"] == 2
    finally:
        kinesis_client.delete_stream(StreamName=unique_name)


def test_put_batches_respect_the_5_mib_limit():
    record = b"x" * (1024 * 1024 - 100)  # just under 1 MiB with its partition key
    entries = list(kinesis._entries([record] * 6, None))
    batches = list(kinesis._put_batches(entries))
    assert [len(b) for b in batches] == [5, 1]
    assert all(sum(kinesis._entry_size(e) for e in b) <= kinesis.MAX_PUT_BYTES for b in batches)


def test_put_rejects_bad_input():
    with pytest.raises(ValueError, match="over Kinesis's limit"):
        list(kinesis._entries([b"x" * (1024 * 1024)], None))
    with pytest.raises(ValueError, match="bytes or str"):
        list(kinesis._entries([42], None))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="partition key"):
        list(kinesis._entries(["x"], ""))
    with pytest.raises(ValueError, match="partition key"):
        list(kinesis._entries(["x"], "k" * 257))
    with pytest.raises(ValueError, match="stream"):
        put_records(" ", ["x"])
    with pytest.raises(ValueError, match="shard_count"):
        create_stream("s", shard_count=0)


def test_default_partition_keys_differ_per_body():
    keys = {e["PartitionKey"] for e in kinesis._entries([f"e{i}" for i in range(50)], None)}
    assert len(keys) == 50


class _FakePut:
    """Answers PutRecords from a script of failed entry indexes, recording the calls."""

    def __init__(self, failures: list[set[int]]) -> None:
        self._failures = failures
        self.calls: list[list[bytes]] = []

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:  # noqa: N803
        self.calls.append([r["Data"] for r in Records])
        failed = self._failures.pop(0) if self._failures else set()
        results = [
            {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "slow down"}
            if i in failed
            else {"SequenceNumber": str(i), "ShardId": "shardId-000000000000"}
            for i in range(len(Records))
        ]
        return {"FailedRecordCount": len(failed), "Records": results}


def _put_entries(*bodies: bytes) -> list[dict]:
    return [{"Data": b, "PartitionKey": b.decode()} for b in bodies]


def test_put_retries_only_the_failed_records(monkeypatch):
    monkeypatch.setattr(kinesis, "_backoff", lambda attempt: 0.0)
    client = _FakePut([{1}, set()])
    kinesis._put_batch(client, "s", _put_entries(b"a", b"b", b"c"))
    assert client.calls == [[b"a", b"b", b"c"], [b"b"]]


def test_put_gives_up_after_bounded_retries(monkeypatch):
    monkeypatch.setattr(kinesis, "_backoff", lambda attempt: 0.0)
    client = _FakePut([{0}] * 20)
    with pytest.raises(PutRecordsError, match="1 of 2 records could not be put.*slow down"):
        kinesis._put_batch(client, "s", _put_entries(b"a", b"b"))
    assert len(client.calls) == kinesis._PUT_ATTEMPTS


# --------------------------------------------------- the reader against a stand-in client


class _FakeKinesis:
    """Scripted GetShardIterator / GetRecords answers: each a response dict or an error."""

    def __init__(self, answers: list[dict | Exception]) -> None:
        self._answers = answers
        self.iterator_requests: list[dict] = []
        self.get_records_calls: list[dict] = []

    def get_shard_iterator(self, **kwargs: Any) -> dict:
        self.iterator_requests.append(kwargs)
        return {"ShardIterator": f"it-{len(self.iterator_requests)}"}

    def get_records(self, **kwargs: Any) -> dict:
        self.get_records_calls.append(kwargs)
        answer = self._answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _records(*sequence_numbers: int, arrival: float = 1_700_000_000.0) -> list[dict]:
    return [
        {
            "SequenceNumber": str(n),
            "Data": f"d{n}".encode(),
            "ApproximateArrivalTimestamp": dt.datetime.fromtimestamp(arrival + n, dt.timezone.utc),
        }
        for n in sequence_numbers
    ]


SPEC = _ReadSpec("s", None, None, None, "TRIM_HORIZON", None, 100, 5.0, 0.01)
SHARD = _ShardSpec(SPEC, "shardId-000000000000", None, None, None)


def read_with(client: Any, restriction: _ShardRestriction = _ShardRestriction()):
    """Drive the reader's ``process`` with ``client``: (values, tracker, watermark)."""
    fn = _ReadShardFn()
    fn._client = client
    tracker = _ShardTracker(restriction)
    watermark = MonotonicWatermarkEstimator(None)
    values = list(fn.process(SHARD, tracker=tracker, watermark=watermark))
    return values, tracker, watermark


@pytest.fixture
def no_waits(monkeypatch) -> list[int]:
    """No backoff or rate-limit sleeps; returns the backoff attempts asked for."""
    attempts: list[int] = []

    def backoff(attempt: int) -> float:
        attempts.append(attempt)
        return 0.0

    monkeypatch.setattr(kinesis, "_backoff", backoff)
    monkeypatch.setattr(kinesis, "_MIN_GET_RECORDS_INTERVAL", 0.0)
    return attempts


def test_throttled_get_records_backs_off_then_continues(no_waits):
    throttled = _client_error("ProvisionedThroughputExceededException", "Rate exceeded")
    client = _FakeKinesis(
        [
            throttled,
            throttled,
            {"Records": _records(1, 2), "NextShardIterator": None, "MillisBehindLatest": 0},
        ]
    )
    values, tracker, _ = read_with(client)
    assert [v.value.payload for v in values] == [b"d1", b"d2"]
    assert no_waits == [1, 2]  # one growing backoff per throttled call
    assert len(client.get_records_calls) == 3
    assert len(client.iterator_requests) == 1  # the iterator stays valid
    tracker.check_done()  # the closed shard ends the read


def test_backoff_is_exponential_jittered_and_capped():
    for attempt in range(1, 30):
        delay = kinesis._backoff(attempt)
        nominal = min(kinesis._MAX_BACKOFF_SECONDS, kinesis._BACKOFF_SECONDS * 2 ** (attempt - 1))
        assert nominal / 2 <= delay <= nominal


def test_an_expired_iterator_is_replaced_after_the_last_claimed_record(no_waits):
    client = _FakeKinesis(
        [
            {"Records": _records(1, 2), "NextShardIterator": "next", "MillisBehindLatest": 0},
            _client_error("ExpiredIteratorException", "Iterator expired"),
            {"Records": _records(3), "NextShardIterator": None, "MillisBehindLatest": 0},
        ]
    )
    values, tracker, _ = read_with(client)
    assert [v.value.id for v in values] == [f"s/shardId-000000000000/{n}" for n in (1, 2, 3)]
    assert [r["ShardIteratorType"] for r in client.iterator_requests] == [
        "TRIM_HORIZON",
        "AFTER_SEQUENCE_NUMBER",
    ]
    assert client.iterator_requests[1]["StartingSequenceNumber"] == "2"
    assert tracker.current_restriction().end_sequence_number == "3"


def test_a_resumed_read_starts_after_its_sequence_number(no_waits):
    client = _FakeKinesis([{"Records": _records(8), "NextShardIterator": None}])
    values, _, _ = read_with(client, _ShardRestriction(after_sequence_number="7", emitted=7))
    assert client.iterator_requests[0]["ShardIteratorType"] == "AFTER_SEQUENCE_NUMBER"
    assert client.iterator_requests[0]["StartingSequenceNumber"] == "7"
    assert [v.value.payload for v in values] == [b"d8"]


def test_records_carry_their_arrival_time_and_move_the_watermark(no_waits):
    client = _FakeKinesis(
        [
            {"Records": _records(1, 2), "NextShardIterator": "a", "MillisBehindLatest": 5},
            {"Records": [], "NextShardIterator": "b", "MillisBehindLatest": 0},
            {"Records": [], "NextShardIterator": None, "MillisBehindLatest": 0},
        ]
    )
    values, _, watermark = read_with(client)
    assert [v.timestamp for v in values] == [Timestamp(1_700_000_001), Timestamp(1_700_000_002)]
    # caught up: the watermark moved on to the wall clock minus a few seconds
    lag = (Timestamp.now() - watermark.current_watermark()).micros / 1e6
    assert 4 <= lag <= 60


def test_other_errors_surface_without_secrets(no_waits):
    denied = _client_error("UnrecognizedClientException", "key AKIDSHOULDNOTLEAK is invalid")
    with pytest.raises(aws.AWSError, match="UnrecognizedClientException") as raised:
        read_with(_FakeKinesis([denied]))
    assert "LEAK" not in str(raised.value)
    gone = _client_error("ResourceNotFoundException", "Shard gone")
    with pytest.raises(StreamNotFoundError, match="does not exist"):
        read_with(_FakeKinesis([gone]))


def test_idle_timeout_ends_a_read_of_an_empty_shard(no_waits):
    empty = {"Records": [], "NextShardIterator": "again", "MillisBehindLatest": 0}
    client = _FakeKinesis([empty] * 1000)
    started = time.monotonic()
    _, tracker, _ = read_with(client, _ShardRestriction(idle_timeout=0.2))
    assert time.monotonic() - started < 5
    tracker.check_done()
    assert tracker.current_restriction().closed


class _FakeLister:
    """ListShards the way Kinesis pages: a follow-up page takes the NextToken alone."""

    def __init__(self, shards: list[dict]) -> None:
        self._shards = shards
        self.requests: list[dict] = []

    def list_shards(self, **kwargs: Any) -> dict:
        self.requests.append(kwargs)
        if "NextToken" in kwargs and "StreamName" in kwargs:
            raise _client_error("InvalidArgumentException", "both", "ListShards")
        start = int(kwargs.get("NextToken", 0))
        end = start + kwargs["MaxResults"]
        token = {"NextToken": str(end)} if end < len(self._shards) else {}
        return {"Shards": self._shards[start:end], **token}


def _shard(n: int, closed: bool = False) -> dict:
    numbers = {"StartingSequenceNumber": "1", **({"EndingSequenceNumber": "9"} if closed else {})}
    return {"ShardId": f"shardId-{n:012d}", "SequenceNumberRange": numbers}


def test_list_shards_pages_with_the_next_token_alone():
    client = _FakeLister([_shard(n) for n in range(5)])
    shards = kinesis._list_shards(client, "s", page_size=2)
    assert [s["ShardId"] for s in shards] == [f"shardId-{n:012d}" for n in range(5)]
    assert [sorted(r) for r in client.requests] == [
        ["MaxResults", "StreamName"],
        ["MaxResults", "NextToken"],
        ["MaxResults", "NextToken"],
    ]


def test_lister_splits_max_records_and_pins_latest(monkeypatch):
    client = _FakeLister([_shard(0, closed=True), _shard(1), _shard(2), _shard(3)])
    fn = _ListShardsFn()
    fn._client = client
    spec = SPEC._replace(max_records=7, max_read_time=10.0)
    shards = list(fn.process(spec))
    assert [(s.shard_id[-1], s.max_records) for s in shards] == [
        ("0", 2),
        ("1", 2),
        ("2", 2),
        ("3", 1),
    ]
    assert len({s.deadline for s in shards}) == 1 and shards[0].deadline > time.time()
    latest = list(fn.process(spec._replace(start_position="LATEST", max_records=None)))
    assert [s.shard_id[-1] for s in latest] == ["1", "2", "3"]  # closed shards skipped
    assert all(abs(s.at_timestamp - time.time()) < 5 for s in latest)


# -------------------------------------------------------------- arguments, display data


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stream": ""}, "stream"),
        ({"stream": "   "}, "stream"),
        ({"stream": "bad/name"}, "stream"),
        ({"stream": "x" * 129}, "stream"),
        ({"max_records": -1}, "max_records"),
        ({"max_records": 0}, "max_records"),
        ({"max_records": 2.5}, "max_records"),
        ({"max_records": True}, "max_records"),
        ({"max_read_time": -1}, "max_read_time"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": float("inf")}, "idle_timeout"),
        ({"start_position": "EARLIEST"}, "start_position"),
        ({"start_position": dt.datetime(2026, 1, 1)}, "timezone-aware"),
        ({"max_bundle_records": 0}, "max_bundle_records"),
        ({"max_bundle_seconds": -0.5}, "max_bundle_seconds"),
        ({"poll_interval": 0}, "poll_interval"),
    ],
)
def test_read_rejects_bad_arguments(kwargs, message):
    kwargs = {"stream": "events", **kwargs}
    with pytest.raises(ValueError, match=message):
        ReadFromKinesis(**kwargs)


def test_display_data_shows_the_stream_and_no_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSHOULDNOTLEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-should-not-leak")
    read = ReadFromKinesis("events", idle_timeout=30)
    items = {item.key: item.value for item in DisplayData.create_from(read).items}
    assert items == {
        "stream": "events",
        "start_position": "TRIM_HORIZON",
        "idle_timeout": 30,
        "max_bundle_records": 1000,
        "max_bundle_seconds": 5.0,
        "poll_interval": 1.0,
    }
    assert "LEAK" not in repr(items).upper()


def test_output_is_unbounded_only_without_a_bound():
    assert not (beam.Pipeline() | "Read" >> ReadFromKinesis("events")).is_bounded
    assert (beam.Pipeline() | "Read" >> ReadFromKinesis("events", max_records=5)).is_bounded


# ---------------------------------------------------------- the restriction, unit level


def test_checkpoint_residual_starts_after_the_last_claimed_record():
    start = _ShardRestriction(
        after_sequence_number="10", emitted=4, max_records=100, idle_timeout=9
    )
    tracker = _ShardTracker(start)
    assert tracker.try_claim("11")
    assert tracker.try_claim("15")
    assert tracker.try_claim(_ShardPosition(None, idle_seconds=2.5))
    primary, residual = tracker.try_split(0)
    # the primary ends with the last claimed record ...
    assert primary == start._replace(closed=True, end_sequence_number="15")
    # ... and the residual resumes right after it, with the bound's bookkeeping
    assert residual == start._replace(after_sequence_number="15", emitted=6, idle_seconds=2.5)
    assert not tracker.try_claim("16")
    tracker.check_done()
    assert tracker.try_split(0) is None


def test_checkpoint_before_any_claim_keeps_the_start_position():
    start = _ShardRestriction(at_timestamp=1_700_000_000.0)
    tracker = _ShardTracker(start)
    primary, residual = tracker.try_split(0)
    assert primary == start._replace(closed=True)
    assert residual == start  # not a later LATEST: nothing between the two is lost


def test_residual_of_a_timestamp_start_continues_by_sequence_number():
    tracker = _ShardTracker(_ShardRestriction(at_timestamp=1_700_000_000.0))
    assert tracker.try_claim("3")
    _, residual = tracker.try_split(0)
    assert (residual.after_sequence_number, residual.at_timestamp) == ("3", None)


def test_tracker_refuses_fractional_splits_and_backward_claims():
    tracker = _ShardTracker(_ShardRestriction(after_sequence_number="5"))
    assert tracker.try_split(0.5) is None
    with pytest.raises(ValueError, match="must advance"):
        tracker.try_claim("5")
    assert tracker.try_claim("100000000000000000000000000000000000000000000000000000007")
    with pytest.raises(ValueError, match="must advance"):
        tracker.try_claim("99")  # compared as numbers, not strings


def test_tracker_stops_at_max_records_and_on_a_last_claim():
    tracker = _ShardTracker(_ShardRestriction(max_records=2))
    assert tracker.try_claim("1") and tracker.try_claim("2")
    assert not tracker.try_claim("3")
    tracker.check_done()
    assert tracker.current_progress().remaining_work == 0

    tracker = _ShardTracker(_ShardRestriction())
    assert tracker.try_claim("1")
    with pytest.raises(ValueError, match="without reaching a bound"):
        tracker.check_done()
    assert not tracker.try_claim(_ShardPosition(None, 1.0, last=True))
    assert tracker.current_restriction().end_sequence_number == "1"
    tracker.check_done()


def test_next_step_stops_at_each_bound_first():
    # next_step and the watermark estimator are shared with the SQS source.
    now = 1000.0
    common = {"idle_seconds": 0.0, "bundle_records": 0, "bundle_seconds": 0.0, "now": now}

    def action(restriction: _ShardRestriction, emitted: int = 0, **progress: Any) -> str:
        return next_step(
            SPEC, _bounds(restriction), emitted=emitted, **{**common, **progress}
        ).action

    assert action(_ShardRestriction(max_records=3), emitted=3) == "stop"
    assert action(_ShardRestriction(deadline=now)) == "stop"
    assert action(_ShardRestriction(idle_timeout=2), idle_seconds=2.0) == "stop"
    assert action(_ShardRestriction(), bundle_records=100) == "checkpoint"
    assert action(_ShardRestriction(), bundle_records=1, bundle_seconds=5.0) == "checkpoint"
    # a bundle that read nothing yet hands over after IDLE_BUNDLE_SECONDS, not 5 s
    assert action(_ShardRestriction(), bundle_seconds=IDLE_BUNDLE_SECONDS) == "checkpoint"
    assert action(_ShardRestriction(), bundle_records=1, bundle_seconds=1.5) == "poll"


def test_next_step_asks_for_no_more_than_allowed():
    step = next_step(
        SPEC,
        _bounds(_ShardRestriction(max_records=13, idle_timeout=10)),
        emitted=10,
        idle_seconds=8.5,
        bundle_records=1,
        bundle_seconds=1.0,
        now=0.0,
    )
    assert step == ("poll", "", 3, 1.5)  # 3 records left; 1.5 s of idle budget left
    idle = next_step(
        SPEC,
        _bounds(_ShardRestriction()),
        emitted=0,
        idle_seconds=0.25,
        bundle_records=0,
        bundle_seconds=0.25,
        now=0.0,
    )
    assert idle == ("poll", "", SPEC.max_bundle_records, IDLE_BUNDLE_SECONDS - 0.25)


def test_watermark_never_moves_backwards():
    estimator = MonotonicWatermarkEstimator(None)
    assert estimator.current_watermark() == MIN_TIMESTAMP
    estimator.advance(Timestamp(100))
    estimator.advance(Timestamp(50))
    assert estimator.current_watermark() == Timestamp(100)
    assert MonotonicWatermarkEstimator(Timestamp(7)).get_estimator_state() == Timestamp(7)
