"""ReadFromSQS and send_messages against the real moto server of the local stack.

Every queue comes from the ``sqs_queue`` fixture (visibility timeout 2 s), so redelivery
after a crash is observable within a few seconds. Reads use 1 s long polls and 0.5 s
bundles; every waiting loop is bounded.

The tests of deletes (bundle finalization) run on each runner that runs the reader,
``runner`` being FnApiRunner and Prism: on both, a committed bundle's messages are deleted
and a failed bundle's are not. (BundleBasedDirectRunner runs no Splittable DoFn, and never
calls finalization callbacks either: tests/runners/test_finalization.py.)
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineResult
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.display import DisplayData

from blogflow.io import aws, sqs
from blogflow.io.sources import ReadSource
from blogflow.io.sqs import (
    ReadFromSQS,
    SendMessagesError,
    _ReadSpec,
    _wait_seconds,
    send_messages,
)
from blogflow.options import SourceOptions, parse_pipeline_args, read_source, sqs_readers
from blogflow.runners.profiles import configure_runner

#: Most messages one poll returns, so most deletes of one bundle of the tests below.
MAX_BATCH = sqs.MAX_BATCH_ENTRIES

#: Short polls and bundles, well inside the fixture queue's 2 s visibility timeout.
FAST = {"wait_time_seconds": 1, "max_bundle_seconds": 0.5}


# ------------------------------------------------------------------------------ helpers


def run(build: Callable[[beam.Pipeline], Any], runner: str = "fnapi") -> PipelineResult:
    """Build a pipeline with ``build`` and run it to completion on FnApiRunner, or on
    Prism (``runner="prism"``, the project's binary, as ``--runner prism`` runs it)."""
    if runner == "prism":
        options = PipelineOptions(["--runner=PrismRunner"])
        configure_runner(options)
        p = beam.Pipeline(options=options)
    else:
        p = beam.Pipeline(runner=FnApiRunner())
    build(p)
    result = p.run()
    result.wait_until_finish()
    return result


@pytest.fixture(params=["fnapi", "prism"])
def runner(request: pytest.FixtureRequest) -> str:
    """Each runner that runs the reader, by profile name."""
    return request.param


def counter(result: PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed if c.committed is not None else c.attempted for c in counters)


def assert_deleted_counted(result: PipelineResult, runner: str, deleted: int) -> None:
    """Deletes are counted with the reader's next bundle (see blogflow.io.sqs): FnApiRunner
    ends a drain with a bundle that reads nothing, so every delete is counted; Prism may
    end it on the bundle that read the last messages, whose deletes are then not counted
    (the queue's depth shows they happened)."""
    counted = counter(result, "messages_deleted")
    if runner == "fnapi":
        assert counted == deleted
    else:
        assert deleted - MAX_BATCH <= counted <= deleted


def queue_depth(sqs_client: Any, url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = sqs_client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def receive_all(sqs_client: Any, url: str, count: int, timeout: float) -> list[dict]:
    """Receive (and delete) messages until ``count`` arrived or ``timeout`` seconds passed."""
    received: list[dict] = []
    deadline = time.monotonic() + timeout
    while len(received) < count and time.monotonic() < deadline:
        messages = sqs_client.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=1,
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        for message in messages:
            sqs_client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        received.extend(messages)
    return received


def assert_unique(expected_count: int) -> Callable[[list], None]:
    def check(actual: list) -> None:
        assert len(actual) == expected_count, f"{len(actual)} ids, expected {expected_count}"
        assert len(set(actual)) == len(actual), "duplicate ids"

    return check


#: Elements each _FailAfter has seen, by its token: this module's, so shared by every copy
#: of the DoFn that a runner unpickles in this process (LOOPBACK runs them here).
_SEEN: collections.Counter[str] = collections.Counter()


class _FailAfter(beam.DoFn):
    """Passes elements through and raises on the ``n``-th one the step sees, however the
    runner spreads its bundles over DoFn instances."""

    def __init__(self, n: int) -> None:
        self._n = n
        self._token = uuid.uuid4().hex

    def process(self, element):
        _SEEN[self._token] += 1
        if _SEEN[self._token] >= self._n:
            raise RuntimeError("downstream failure")
        yield element


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


# ----------------------------------------------------------------- reading from moto


def test_reads_every_message_once_then_deletes_it(sqs_client, sqs_queue, runner):
    bodies = [f'{{"n":{i}}}' for i in range(30)]
    assert send_messages(sqs_queue, bodies) == 30
    sent_after = time.time()

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(
            _name(sqs_queue), idle_timeout=1.5, max_bundle_records=8, **FAST
        )
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([b.encode() for b in bodies]),
            label="CheckPayloads",
        )
        assert_that(records | "Ids" >> beam.Map(lambda r: r.id), assert_unique(30), label="Ids")
        stamps = records | "Stamps" >> beam.Map(
            lambda r, ts=beam.DoFn.TimestampParam: sent_after - 60 < ts.micros / 1e6 <= sent_after
        )
        assert_that(stamps, equal_to([True] * 30), label="StampedWithSentTimestamp")

    result = run(build, runner)
    assert counter(result, "messages_received") == 30
    assert_deleted_counted(result, runner, 30)
    assert queue_depth(sqs_client, sqs_queue) == (0, 0)
    assert "Messages" not in sqs_client.receive_message(QueueUrl=sqs_queue, WaitTimeSeconds=1)


def test_max_records_stops_at_n_and_leaves_the_rest(sqs_client, sqs_queue):
    send_messages(sqs_queue, [f"m{i}" for i in range(25)])

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(
            sqs_queue, max_records=10, max_bundle_records=4, **FAST
        )
        assert_that(records | "Ids" >> beam.Map(lambda r: r.id), assert_unique(10), label="Ids")

    result = run(build)
    assert counter(result, "messages_received") == 10
    # Nothing beyond the 10 was even received: the rest is visible, nothing in flight.
    assert queue_depth(sqs_client, sqs_queue) == (15, 0)


def test_idle_timeout_drains_then_stops_by_itself(sqs_client, sqs_queue):
    send_messages(sqs_queue, [f"m{i}" for i in range(5)])
    started = time.monotonic()

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(sqs_queue, idle_timeout=1, **FAST)
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([f"m{i}".encode() for i in range(5)]),
        )

    run(build)
    assert time.monotonic() - started < 15
    assert queue_depth(sqs_client, sqs_queue) == (0, 0)


def test_max_read_time_stops_a_read_of_an_idle_queue(sqs_queue):
    started = time.monotonic()

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(sqs_queue, max_read_time=1.5, **FAST)
        assert_that(records | "Count" >> beam.combiners.Count.Globally(), equal_to([0]))

    run(build)
    assert 1.5 <= time.monotonic() - started < 15


def test_a_crash_before_finalization_deletes_nothing_and_redelivers(sqs_client, sqs_queue, runner):
    bodies = [f"m{i}" for i in range(10)]
    send_messages(sqs_queue, bodies)

    def build(p):
        _ = (
            p
            | "ReadFromSQS" >> ReadFromSQS(sqs_queue, idle_timeout=3, **FAST)
            | "Fail" >> beam.ParDo(_FailAfter(1))
        )

    with pytest.raises(Exception, match="downstream failure"):
        run(build, runner)
    visible, in_flight = queue_depth(sqs_client, sqs_queue)
    assert visible + in_flight == 10 and in_flight >= 1  # received, not deleted
    again = receive_all(sqs_client, sqs_queue, 10, timeout=10)
    assert sorted(m["Body"] for m in again) == sorted(bodies)
    redelivered = [m for m in again if int(m["Attributes"]["ApproximateReceiveCount"]) > 1]
    assert len(redelivered) == in_flight


def test_committed_bundles_are_deleted_even_when_a_later_one_fails(sqs_client, sqs_queue, runner):
    bodies = [f"m{i}" for i in range(10)]
    send_messages(sqs_queue, bodies)

    def build(p):
        _ = (
            p
            | "ReadFromSQS" >> ReadFromSQS(sqs_queue, idle_timeout=3, max_bundle_records=4, **FAST)
            | "Fail" >> beam.ParDo(_FailAfter(6))  # in the second bundle
        )

    with pytest.raises(Exception, match="downstream failure"):
        run(build, runner)
    visible, in_flight = queue_depth(sqs_client, sqs_queue)
    assert visible + in_flight == 6  # the first bundle's 4 messages are deleted
    assert len(receive_all(sqs_client, sqs_queue, 6, timeout=10)) == 6


def test_self_checkpointing_reads_all_and_deletes_all(sqs_client, sqs_queue, runner):
    bodies = [f"m{i:03d}" for i in range(60)]
    send_messages(sqs_queue, bodies)

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(
            sqs_queue, idle_timeout=1.5, max_bundle_records=5, **FAST
        )
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([b.encode() for b in bodies]),
        )

    result = run(build, runner)
    assert counter(result, "checkpoints") >= 12  # at least one per 5 messages
    assert_deleted_counted(result, runner, 60)  # one finalization per bundle
    assert queue_depth(sqs_client, sqs_queue) == (0, 0)


def test_several_readers_drain_a_queue_and_delete_every_message(sqs_client, sqs_queue, runner):
    bodies = [f"m{i:03d}" for i in range(60)]
    send_messages(sqs_queue, bodies)

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(
            sqs_queue, idle_timeout=1.5, max_bundle_records=5, readers=3, **FAST
        )
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([b.encode() for b in bodies]),
        )
        assert_that(records | "Ids" >> beam.Map(lambda r: r.id), assert_unique(60), label="Ids")

    result = run(build, runner)
    assert counter(result, "messages_received") == 60
    assert_deleted_counted(result, runner, 60)
    assert queue_depth(sqs_client, sqs_queue) == (0, 0)


def test_max_records_holds_for_all_readers_together(sqs_client, sqs_queue, caplog):
    send_messages(sqs_queue, [f"m{i}" for i in range(30)])

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(
            sqs_queue, max_records=20, max_bundle_records=4, readers=3, **FAST
        )
        assert_that(records | "Ids" >> beam.Map(lambda r: r.id), assert_unique(20), label="Ids")

    with caplog.at_level(logging.INFO, logger="blogflow.io.sqs"):
        result = run(build)
    assert counter(result, "messages_received") == 20
    assert queue_depth(sqs_client, sqs_queue) == (10, 0)
    # Three readers ran, each to its share (7, 7, 6) of the 20.
    stops = sorted(
        r.getMessage().split(" stopped")[0] + " " + r.getMessage().split("after ")[1].split()[0]
        for r in caplog.records
        if " stopped reading SQS queue" in r.getMessage()
    )
    assert stops == ["Reader 1/3 7", "Reader 2/3 7", "Reader 3/3 6"]


def test_read_source_hands_the_aws_settings_to_the_readers(sqs_queue, request):
    """The readers connect where ReadSource's AwsConfig says, with no AWS variable set
    where they run (FnApiRunner runs them in this process)."""
    send_messages(sqs_queue, [f"m{i}" for i in range(5)])
    settings = request.getfixturevalue("aws_settings_only")  # after the messages are sent

    def build(p):
        records = p | "ReadSource" >> ReadSource(
            f"sqs://{_name(sqs_queue)}", drain=True, idle_timeout=1, aws=settings
        )
        assert_that(
            records | "Payloads" >> beam.Map(lambda r: r.payload),
            equal_to([f"m{i}".encode() for i in range(5)]),
        )

    run(build)


def test_a_missing_queue_fails_clearly(local_stack):
    def build(p):
        _ = p | "ReadFromSQS" >> ReadFromSQS("no-such-queue-x1", max_records=1, **FAST)

    with pytest.raises(Exception, match="does not exist"):
        run(build)


# ------------------------------------------------------------------------ the producer


def test_send_messages_batches_many_and_large_bodies(sqs_client, sqs_queue):
    large = ["L" * (100 * 1024) + str(i) for i in range(3)]  # 3 of them exceed 256 KiB
    bodies: list[bytes | str] = [f"s{i}" for i in range(12)] + large + [b"bytes-body"]
    assert send_messages(_name(sqs_queue), bodies) == 16
    received = receive_all(sqs_client, sqs_queue, 16, timeout=10)
    expected = [b if isinstance(b, str) else b.decode() for b in bodies]
    assert sorted(m["Body"] for m in received) == sorted(expected)


def test_send_messages_rejects_bad_input(local_stack, sqs_queue):
    with pytest.raises(ValueError, match="empty"):
        send_messages(sqs_queue, ["ok", ""])
    with pytest.raises(ValueError, match="over SQS's limit"):
        send_messages(sqs_queue, ["x" * (256 * 1024 + 1)])
    with pytest.raises(ValueError, match="UTF-8"):
        send_messages(sqs_queue, [b"\xff\xfe"])
    with pytest.raises(ValueError, match="queue"):
        send_messages(" ", ["ok"])
    with pytest.raises(aws.QueueNotFoundError, match="does not exist"):
        send_messages("no-such-queue-x2", ["ok"])


class _FakeSQS:
    """Answers SendMessageBatch from a script of Failed entries, recording the calls."""

    def __init__(self, failures: list[list[dict]]) -> None:
        self._failures = failures
        self.calls: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict]) -> dict:  # noqa: N803
        self.calls.append([e["Id"] for e in Entries])
        failed = self._failures.pop(0) if self._failures else []
        return {"Successful": [], "Failed": failed}


def _failed(entry_id: str, sender_fault: bool) -> dict:
    return {"Id": entry_id, "SenderFault": sender_fault, "Code": "InternalError", "Message": "x"}


def test_send_retries_only_the_failed_entries(monkeypatch):
    monkeypatch.setattr(sqs, "_backoff", lambda attempt: 0.0)
    client = _FakeSQS([[_failed("1", False)], []])
    sqs._send_batch(client, "url", ["a", "b", "c"])
    assert client.calls == [["0", "1", "2"], ["1"]]


def test_send_gives_up_after_bounded_retries(monkeypatch):
    monkeypatch.setattr(sqs, "_backoff", lambda attempt: 0.0)
    client = _FakeSQS([[_failed("0", False)]] * 20)
    with pytest.raises(SendMessagesError, match="1 of 2 messages could not be sent"):
        sqs._send_batch(client, "url", ["a", "b"])
    assert len(client.calls) == sqs._SEND_ATTEMPTS


def test_send_does_not_retry_sender_faults(monkeypatch):
    monkeypatch.setattr(sqs, "_backoff", lambda attempt: 0.0)
    client = _FakeSQS([[_failed("0", True)]])
    with pytest.raises(SendMessagesError, match="after 1 attempts"):
        sqs._send_batch(client, "url", ["a"])


# -------------------------------------------------------------- arguments, display data


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"queue": ""}, "queue"),
        ({"queue": "   "}, "queue"),
        ({"max_records": -1}, "max_records"),
        ({"max_records": 0}, "max_records"),
        ({"max_records": 2.5}, "max_records"),
        ({"max_records": True}, "max_records"),
        ({"max_read_time": -1}, "max_read_time"),
        ({"idle_timeout": 0}, "idle_timeout"),
        ({"idle_timeout": float("inf")}, "idle_timeout"),
        ({"wait_time_seconds": 0}, "wait_time_seconds"),
        ({"wait_time_seconds": 21}, "wait_time_seconds"),
        ({"max_bundle_records": 0}, "max_bundle_records"),
        ({"max_bundle_seconds": -0.5}, "max_bundle_seconds"),
        ({"readers": 0}, "readers"),
        ({"readers": 1.5}, "readers"),
    ],
)
def test_read_rejects_bad_arguments(kwargs, message):
    kwargs = {"queue": "events", **kwargs}
    with pytest.raises(ValueError, match=message):
        ReadFromSQS(**kwargs)


def test_display_data_shows_the_queue_and_no_credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSHOULDNOTLEAK")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-should-not-leak")
    read = ReadFromSQS("events", idle_timeout=30)
    items = {item.key: item.value for item in DisplayData.create_from(read).items}
    assert items == {
        "queue": "events",
        "idle_timeout": 30,
        "wait_time_seconds": 20,
        "max_bundle_records": 1000,
        "max_bundle_seconds": 5.0,
        "readers": 1,
    }
    assert "LEAK" not in repr(items).upper()


def test_readers_are_elements_of_their_own_after_a_reshuffle():
    specs = sqs._reader_specs(SPEC._replace(max_records=10), 4)
    assert [(s.reader, s.readers, s.max_records) for s in specs] == [
        (0, 4, 3),
        (1, 4, 3),
        (2, 4, 2),
        (3, 4, 2),
    ]
    assert [s.max_records for s in sqs._reader_specs(SPEC, 3)] == [None] * 3
    # More readers than max_records: the readers whose share is 0 are left out.
    assert ReadFromSQS("q", max_records=2, readers=5).readers == 2
    assert ReadFromSQS("q", readers=5).readers == 5

    def graph(readers: int) -> set[str]:
        p = beam.Pipeline()
        _ = p | "ReadFromSQS" >> ReadFromSQS("q", idle_timeout=1, readers=readers)
        transforms = p.to_runner_api().components.transforms.values()
        return {t.unique_name for t in transforms}

    # The N elements are redistributed before the read, so no runner fuses the readers
    # into the stage that created them: each can run on another worker.
    many = graph(3)
    assert "ReadFromSQS/ReadSpec/MaybeReshuffle/Reshuffle" in many, sorted(many)
    assert "ReadFromSQS/ReadSpec/MaybeReshuffle/Reshuffle" not in graph(1)


def test_sqs_readers_are_the_jobs_parallelism_unless_given():
    def readers(*argv: str) -> int:
        return sqs_readers(PipelineOptions(list(argv)))

    assert readers() == 1
    assert readers("--parallelism=4") == 4
    assert readers("--parallelism=-1") == 1
    assert readers("--parallelism=4", "--sqs-readers=2") == 2
    assert readers("--sqs_readers=3") == 3
    with pytest.raises(ValueError, match="--sqs-readers must be at least 1"):
        readers("--sqs-readers=0")
    options = parse_pipeline_args(
        ["--source=sqs://q", "--drain", "--sqs-readers=3"],
        [SourceOptions],
        prog="test",
        description="test",
        environ={},
    )
    p = beam.Pipeline()
    _ = p | "ReadSource" >> read_source(options)
    reads = []

    class FindReads(PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, ReadFromSQS):
                reads.append(node.transform)

    p.visit(FindReads())
    assert [read.readers for read in reads] == [3]


def test_output_is_unbounded_only_without_a_bound():
    assert not (beam.Pipeline() | "Read" >> ReadFromSQS("events")).is_bounded
    assert (beam.Pipeline() | "Read" >> ReadFromSQS("events", max_records=5)).is_bounded


# ---------------------------------------------------------- the restriction, unit level

SPEC = _ReadSpec("q", None, None, None, 20, 100, 5.0)


def test_a_poll_waits_whole_seconds_within_wait_time_seconds():
    assert _wait_seconds(1.5, SPEC) == 2  # rounded up: a bound is never cut short
    assert _wait_seconds(0.0, SPEC) == 1
    assert _wait_seconds(60.0, SPEC) == SPEC.wait_time_seconds


# ------------------------------------------- deletes where bundles are not finalized


@pytest.fixture
def long_queue(sqs_client: Any, unique_name: str) -> Any:
    """A queue whose messages stay invisible (30 s) for the whole of a run."""
    url = sqs.create_queue(f"{unique_name}-long", visibility_timeout=30)
    yield url
    sqs_client.delete_queue(QueueUrl=url)


#: What the queue looked like, (visible, in flight), each time :class:`_Store` stored.
_DEPTHS: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)


class _Store(beam.DoFn):
    """The write of a job: records the queue's depth as it stores each element."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._token = uuid.uuid4().hex

    def setup(self) -> None:
        self._client = aws.make_client("sqs")

    def process(self, element):
        _DEPTHS[self._token].append(queue_depth(self._client, self._url))
        yield element


def test_a_read_without_finalization_deletes_once_the_writes_finished(sqs_client, long_queue):
    send_messages(long_queue, [f"m{i}" for i in range(12)])
    store = _Store(long_queue)

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(
            long_queue, idle_timeout=1, max_bundle_records=4, delete_when_stored=True, **FAST
        )
        # after a shuffle: the read's bundles are committed before any is stored
        _ = records | beam.Reshuffle() | "Store" >> beam.ParDo(store)
        assert sqs.delete_when_stored(p) == 1

    result = run(build)
    seen = _DEPTHS[store._token]
    assert len(seen) == 12
    assert all(visible + in_flight == 12 for visible, in_flight in seen)  # none deleted yet
    assert queue_depth(sqs_client, long_queue) == (0, 0)
    assert counter(result, "messages_deleted") == 12


def test_a_read_without_finalization_deletes_nothing_when_a_write_fails(sqs_client, long_queue):
    send_messages(long_queue, [f"m{i}" for i in range(12)])

    def build(p):
        records = p | "ReadFromSQS" >> ReadFromSQS(
            long_queue, idle_timeout=1, max_bundle_records=4, delete_when_stored=True, **FAST
        )
        _ = records | "Fail" >> beam.ParDo(_FailAfter(9))  # in the third bundle
        sqs.delete_when_stored(p)

    with pytest.raises(Exception, match="downstream failure"):
        run(build)
    visible, in_flight = queue_depth(sqs_client, long_queue)
    assert visible + in_flight == 12  # not even the first two bundles' messages are deleted


def test_delete_when_stored_is_for_bounded_reads_and_adds_nothing_for_others():
    with pytest.raises(ValueError, match="delete_when_stored is for a bounded read"):
        ReadFromSQS("q", delete_when_stored=True)
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | ReadFromSQS("q", idle_timeout=1)
    assert sqs.delete_when_stored(p) == 0
