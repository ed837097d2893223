"""ReadPubSubEvents and publish_events against the real Pub/Sub emulator of the local stack.

Every integration test gets its own topic and subscription (named after the test), deleted
after it. Beam's read runs as streaming pipelines on Beam's ``BundleBasedDirectRunner``;
blogflow's pull reader (:class:`PullFromPubSub`) runs here bounded, on ``FnApiRunner``, and
streaming on Prism in ``test_pubsub_prism.py``. A DirectRunner streaming pipeline never
stops by itself, so :func:`_streaming` runs it in the background, the test polls (bounded)
a JSON-lines file the pipeline appends every record to, and the pipeline is cancelled on
the way out.

Cancelling needs one trick: the DirectRunner's Pub/Sub read is a synchronous ``pull`` that
the emulator holds open for up to 30 s while the subscription is empty, and ``cancel()``
joins the runner's worker thread, i.e. waits for that pull. :func:`_cancel` therefore
requests the cancellation in a helper thread and publishes a "nudge" message that ends the
pull at once; the collector ignores nudges. It then checks that the pipeline is cancelled
and that none of the runner's worker threads is left.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, DirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.portability.prism_runner import PrismRunner
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.display import DisplayData
from apache_beam.utils.timestamp import Timestamp
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1

from blogflow.events import Event, SourceRecord, make_event, parse_event
from blogflow.io import pubsub
from blogflow.io._polling import CountPosition, CountRestriction, CountTracker
from blogflow.io.pubsub import (
    PublishEventsError,
    PubSubError,
    PullFromPubSub,
    ReadPubSubEvents,
    SubscriptionNotFoundError,
    _event_attributes,
    _message_timestamp,
    _pulled_record,
    _to_source_record,
    create_subscription,
    create_topic,
    default_project,
    publish_events,
    subscription_path,
    topic_path,
)

#: The payload :func:`_cancel` publishes to end the runner's pending pull.
NUDGE = b"__nudge__"
#: Seconds a test waits for records, and for a cancelled pipeline to stop.
WAIT_SECONDS = 20.0
_T0 = dt.datetime(2026, 11, 21, 10, 0, 0, 123456, tzinfo=dt.timezone.utc)


# ------------------------------------------------------------------------------ helpers


class Seen(NamedTuple):
    """One record as the pipeline emitted it, with its element timestamp."""

    payload: bytes
    id: str
    micros: int


class _AppendJSONLines(beam.DoFn):
    """Appends every record, with its timestamp, as one JSON line to a file."""

    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, record: SourceRecord, timestamp=beam.DoFn.TimestampParam) -> None:
        line = {
            "payload": base64.b64encode(record.payload).decode(),
            "id": record.id,
            "micros": timestamp.micros,
        }
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")


def _read_seen(path: Path) -> list[Seen]:
    if not path.exists():
        return []
    seen = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        payload = base64.b64decode(item["payload"])
        if payload != NUDGE:
            seen.append(Seen(payload, item["id"], item["micros"]))
    return seen


def _assert_no_runner_threads() -> None:
    # The DirectRunner names its worker threads "Thread: <n>, <task> (<state>)".
    workers = [t.name for t in threading.enumerate() if t.name.startswith("Thread: ")]
    assert not workers, f"DirectRunner threads still running: {workers}"


def _failure_within(result: PipelineResult, seconds: float, topic: str) -> BaseException | None:
    """Wait, bounded, for a pipeline that should fail by itself; its error, or None.

    If it is still running after ``seconds``, it is cancelled and the test fails.
    """
    outcome: list[BaseException | None] = []

    def wait() -> None:
        try:
            result.wait_until_finish()
            outcome.append(None)
        except BaseException as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait, name="wait-pipeline", daemon=True)
    waiter.start()
    waiter.join(seconds)
    if not outcome:
        _cancel(result, topic)
        raise AssertionError(f"the pipeline was still running after {seconds}s: cancelled")
    _assert_no_runner_threads()
    return outcome[0]


def _cancel(result: PipelineResult, topic: str) -> None:
    """Cancel a streaming DirectRunner pipeline and check that nothing of it keeps running."""
    canceller = threading.Thread(target=result.cancel, name="cancel-pipeline", daemon=True)
    canceller.start()
    deadline = time.monotonic() + WAIT_SECONDS
    while canceller.is_alive() and time.monotonic() < deadline:
        publish_events(topic, [NUDGE], timeout=10)  # ends the pull the runner waits in
        canceller.join(0.5)
    assert not canceller.is_alive(), f"the pipeline did not stop within {WAIT_SECONDS}s"
    assert result.state == PipelineState.CANCELLED
    _assert_no_runner_threads()


@contextlib.contextmanager
def _streaming(build: Callable[[beam.Pipeline], Any], nudge_topic: str) -> Iterator[None]:
    """Run a streaming pipeline on BundleBasedDirectRunner while the block runs."""
    pipeline = beam.Pipeline(
        runner=BundleBasedDirectRunner(), options=PipelineOptions(flags=[], streaming=True)
    )
    build(pipeline)
    result = pipeline.run()
    try:
        yield
    finally:
        _cancel(result, nudge_topic)


def _read_and_collect(subscription: str, topic: str, out: Path, count: int) -> list[Seen]:
    """Read ``subscription`` with ReadPubSubEvents until ``count`` records arrived."""

    def build(p: beam.Pipeline) -> None:
        _ = (
            p
            | "ReadPubSubEvents" >> ReadPubSubEvents(subscription)
            | "Collect" >> beam.ParDo(_AppendJSONLines(str(out)))
        )

    with _streaming(build, topic):
        deadline = time.monotonic() + WAIT_SECONDS
        seen = _read_seen(out)
        while len(seen) < count and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = _read_seen(out)
    assert len(seen) >= count, (
        f"{len(seen)} of {count} records arrived in {WAIT_SECONDS}s "
        "(a pipeline error is in the captured log)"
    )
    return seen


def _micros(event: Event) -> int:
    return round(event.event_time * 1_000_000)


def _events(count: int) -> list[Event]:
    """Events of two types, with distinct occurredAt down to the microsecond."""
    events: list[Event] = []
    for i in range(count):
        occurred = _T0 + dt.timedelta(seconds=37 * i, microseconds=1001 * i)
        if i % 2:
            data = {"arrayId": "a1", "packetId": i, "packetValue": i, "arrayLength": count}
            events.append(make_event("sum_packet", data, user_id="u1", occurred_at=occurred))
        else:
            events.append(make_event("post_viewed", {"postId": f"p{i}"}, occurred_at=occurred))
    return events


# ----------------------------------------------------------------------------- fixtures


# ------------------------------------------------------------- reading from the emulator


@pytest.mark.integration
def test_reads_every_event_stamped_with_its_occurred_at(topic, subscription, tmp_path):
    events = _events(25)  # three pulls of at most 10 messages
    bodies = [event.to_json() for event in events]
    assert publish_events(topic, bodies) == 25

    seen = _read_and_collect(subscription, topic, tmp_path / "seen.jsonl", 25)

    assert sorted(s.payload for s in seen) == sorted(bodies)
    assert sorted(s.id for s in seen) == sorted(event.id for event in events)
    by_id = {event.id: event for event in events}
    assert {s.id: s.micros for s in seen} == {i: _micros(e) for i, e in by_id.items()}
    assert all(by_id[s.id].to_json() == s.payload for s in seen)


@pytest.mark.integration
def test_the_direct_runner_does_not_deduplicate_on_id_label(topic, subscription, tmp_path):
    """The DirectRunner cannot dedup: a repeated event arrives twice, with the same id."""
    events = _events(3)
    twice = events[1].to_json()
    assert publish_events(topic, [e.to_json() for e in events]) == 3
    assert publish_events(topic, [twice]) == 1  # a producer retry: same event, new message

    seen = _read_and_collect(subscription, topic, tmp_path / "seen.jsonl", 4)

    assert collections.Counter(s.id for s in seen) == {
        events[0].id: 1,
        events[1].id: 2,
        events[2].id: 1,
    }
    assert [s.payload for s in seen if s.id == events[1].id] == [twice, twice]


@pytest.mark.integration
def test_beams_direct_runner_rejects_id_label_which_is_why_it_is_left_out(topic, subscription):
    """apache/beam#18939: if this starts to pass through, ReadPubSubEvents can keep id_label."""
    pipeline = beam.Pipeline(
        runner=BundleBasedDirectRunner(), options=PipelineOptions(flags=[], streaming=True)
    )
    _ = pipeline | "ReadFromPubSub" >> ReadFromPubSub(
        subscription=subscription, with_attributes=True, id_label="eventId"
    )
    error = _failure_within(pipeline.run(), WAIT_SECONDS, topic)
    assert isinstance(error, NotImplementedError)
    assert "id_label is not supported" in str(error)


@pytest.mark.integration
def test_a_body_that_is_not_an_event_is_still_delivered(topic, subscription, tmp_path):
    event = _events(1)[0]
    not_json = b"not json {"
    not_an_event = b'{"id": "x1", "type": "post_viewed"}'
    before = time.time()
    assert publish_events(topic, [not_json, not_an_event, event.to_json()]) == 3
    after = time.time()

    seen = _read_and_collect(subscription, topic, tmp_path / "seen.jsonl", 3)

    by_payload = {s.payload: s for s in seen}
    assert sorted(by_payload) == sorted([not_json, not_an_event, event.to_json()])
    assert by_payload[event.to_json()] == Seen(event.to_json(), event.id, _micros(event))
    for raw in (not_json, not_an_event):
        record = by_payload[raw]
        # No attributes: the id is Pub/Sub's message id and the timestamp its publish time.
        assert record.id and record.id not in (event.id, "x1")
        assert before - 1 <= record.micros / 1e6 <= after + 1
    assert by_payload[not_json].id != by_payload[not_an_event].id


# ------------------------------------------------- the pull reader, bounded, on FnApiRunner


def _pulled_with_timestamps(subscription: str, **bounds: Any) -> Callable[[beam.Pipeline], Any]:
    def build(p: beam.Pipeline) -> Any:
        return (
            p
            | "PullFromPubSub" >> PullFromPubSub(subscription, max_bundle_seconds=1, **bounds)
            | "WithTimestamps"
            >> beam.Map(lambda r, t=beam.DoFn.TimestampParam: (r.payload, r.id, t.micros))
        )

    return build


@pytest.mark.integration
def test_the_pull_reader_emits_what_beams_read_emits_and_acks_it(topic, subscription, monkeypatch):
    acked: list[int] = []
    acknowledge = pubsub._PullSubscriptionFn._acknowledge

    def spy(self: Any, path: str, ack_ids: Any) -> None:
        acknowledge(self, path, ack_ids)
        acked.append(len(ack_ids))

    monkeypatch.setattr(pubsub._PullSubscriptionFn, "_acknowledge", spy)
    events = _events(5)
    not_an_event = b"not json {"
    assert publish_events(topic, [e.to_json() for e in events] + [not_an_event]) == 6

    p = beam.Pipeline(runner=FnApiRunner())
    records = _pulled_with_timestamps(subscription, max_records=6, max_read_time=30)(p)
    expected = [(e.to_json(), e.id, _micros(e)) for e in events]
    assert_that(
        records | "Events" >> beam.Filter(lambda r: r[0] != not_an_event), equal_to(expected)
    )
    p.run().wait_until_finish()

    assert sum(acked) == 6  # every message, in the callbacks of the bundles that read them


@pytest.mark.integration
def test_the_pull_reader_fails_clearly_on_a_missing_subscription(pubsub_stack, unique_name):
    missing = f"{unique_name}-gone"
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | "PullFromPubSub" >> PullFromPubSub(missing, max_read_time=10)
    started = time.monotonic()
    with pytest.raises(
        SubscriptionNotFoundError,
        match=rf"Pub/Sub subscription projects/[^/]+/subscriptions/{missing} does not exist",
    ):
        p.run().wait_until_finish()
    assert time.monotonic() - started < 20


@pytest.mark.integration
def test_the_pull_reader_stops_at_its_idle_timeout(subscription):
    p = beam.Pipeline(runner=FnApiRunner())
    records = _pulled_with_timestamps(subscription, idle_timeout=1.5)(p)
    assert_that(records, equal_to([]))
    started = time.monotonic()
    p.run().wait_until_finish()
    assert time.monotonic() - started < 15


# ------------------------------------------------------------------------- the producer


@pytest.mark.integration
def test_publish_sets_attributes_only_on_events(topic, subscription):
    event = _events(1)[0]
    publish_events(topic, [event.to_json(), "not json"])
    with pubsub_v1.SubscriberClient() as subscriber:
        messages: list[Any] = []
        deadline = time.monotonic() + WAIT_SECONDS
        while len(messages) < 2 and time.monotonic() < deadline:
            pulled = subscriber.pull(subscription=subscription, max_messages=10, timeout=5)
            messages.extend(m.message for m in pulled.received_messages)
    attributes = {bytes(m.data): dict(m.attributes) for m in messages}
    assert attributes == {
        event.to_json(): {"occurredAt": "2026-11-21T10:00:00.123456Z", "eventId": event.id},
        b"not json": {},
    }


@pytest.mark.integration
def test_publish_sends_what_came_before_an_invalid_body(topic, subscription):
    event = _events(1)[0]
    with pytest.raises(ValueError, match="message #1 is empty"):
        publish_events(topic, [event.to_json(), b""])
    with pytest.raises(ValueError, match="message #0 must be bytes or str"):
        publish_events(topic, [42])  # type: ignore[list-item]
    with pubsub_v1.SubscriberClient() as subscriber:
        pulled = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
    assert [bytes(m.message.data) for m in pulled.received_messages] == [event.to_json()]


@pytest.mark.integration
def test_publish_to_a_missing_topic_fails_clearly(pubsub_stack, unique_name):
    started = time.monotonic()
    with pytest.raises(PublishEventsError, match=r"2 of 2 messages were not published.*NotFound"):
        publish_events(f"{unique_name}-missing", [b"a", b"b"], timeout=20)
    assert time.monotonic() - started < 20


@pytest.mark.integration
def test_create_topic_and_subscription_are_idempotent(pubsub_stack, unique_name):
    first_topic = create_topic(unique_name)
    other_topic = create_topic(f"{unique_name}-o")
    try:
        assert create_topic(unique_name) == first_topic == topic_path(unique_name)
        name = f"{unique_name}-sub"
        sub = create_subscription(unique_name, name, ack_deadline=30)
        assert create_subscription(first_topic, name, ack_deadline=30) == sub
        assert create_subscription(unique_name, sub, ack_deadline=45) == sub  # kept, logged
        with pubsub_v1.SubscriberClient() as subscriber:
            found = subscriber.get_subscription(subscription=sub)
            assert (found.topic, found.ack_deadline_seconds) == (first_topic, 30)
            with pytest.raises(PubSubError, match="already exists on topic"):
                create_subscription(other_topic, name)
            subscriber.delete_subscription(subscription=sub)
    finally:
        publisher = pubsub_v1.PublisherClient()
        for path in (first_topic, other_topic):
            with contextlib.suppress(google_exceptions.NotFound):
                publisher.delete_topic(topic=path)
        publisher.transport.close()


# --------------------------------------------------------------------- unit: no emulator


class _StubRunner(PipelineRunner):
    """A runner neither Dataflow nor a DirectRunner (as Flink would be). Never runs anything."""


class _FindReads(PipelineVisitor):
    def __init__(self) -> None:
        self.beams: list[ReadFromPubSub] = []
        self.pulls: list[PullFromPubSub] = []

    def enter_composite_transform(self, applied) -> None:
        if isinstance(applied.transform, ReadFromPubSub):
            self.beams.append(applied.transform)
        if isinstance(applied.transform, PullFromPubSub):
            self.pulls.append(applied.transform)

    def visit_transform(self, applied) -> None:
        self.enter_composite_transform(applied)


#: What Dataflow's option validation asks for before anything is built.
_DATAFLOW_FLAGS = [
    "--project=blogflow-prod",
    "--region=europe-west1",
    "--temp_location=gs://blogflow-prod-tmp/tmp",
]


def _reads(runner: PipelineRunner) -> _FindReads:
    flags = _DATAFLOW_FLAGS if isinstance(runner, DataflowRunner) else []
    pipeline = beam.Pipeline(runner=runner, options=PipelineOptions(flags=flags, streaming=True))
    _ = pipeline | "Read" >> ReadPubSubEvents("projects/blogflow-prod/subscriptions/events")
    finder = _FindReads()
    pipeline.visit(finder)
    return finder


def _pubsub_source(runner: PipelineRunner) -> Any:
    finder = _reads(runner)
    assert not finder.pulls
    (read,) = finder.beams
    return read._source


def test_id_label_goes_to_beam_except_on_the_direct_runner(caplog):
    source = _pubsub_source(DataflowRunner())
    assert (source.project, source.subscription_name) == ("blogflow-prod", "events")
    assert (source.id_label, source.timestamp_attribute) == ("eventId", "occurredAt")
    assert source.with_attributes
    with caplog.at_level(logging.WARNING, logger="blogflow.io.pubsub"):
        direct = _pubsub_source(BundleBasedDirectRunner())
    assert direct.id_label is None
    assert direct.timestamp_attribute == "occurredAt"
    assert "does not support id_label" in caplog.text
    assert _pubsub_source(DirectRunner()).id_label is None


@pytest.mark.parametrize("runner", [PrismRunner, FnApiRunner, _StubRunner])
def test_runners_that_cannot_run_beams_read_get_the_pull_reader(runner):
    finder = _reads(runner())
    assert not finder.beams
    (pull,) = finder.pulls
    assert pull.subscription == "projects/blogflow-prod/subscriptions/events"
    assert not pull.bounded  # a streaming source
    spec = pull._spec
    assert (spec.timestamp_attribute, spec.id_label) == ("occurredAt", "eventId")


def test_records_take_their_id_from_the_id_label_attribute_or_the_message_id():
    with_id = PubsubMessage(b"body", {"eventId": "e1"}, message_id="7")
    without = PubsubMessage(b"other", {"occurredAt": "2026-11-21T10:00:00Z"}, message_id="8")
    assert _to_source_record(with_id, "eventId") == SourceRecord(b"body", "e1")
    assert _to_source_record(with_id, "eventId").id == "e1"
    assert _to_source_record(without, "eventId") == SourceRecord(b"other", "8")
    assert _to_source_record(with_id, None) == SourceRecord(b"body", "7")


def _pulled_message(data: bytes, attributes: dict[str, str], message_id: str = "42") -> Any:
    published = dt.datetime(2026, 11, 21, 9, 0, 0, 250000, tzinfo=dt.timezone.utc)
    return pubsub_v1.types.PubsubMessage(
        data=data, attributes=attributes, message_id=message_id, publish_time=published
    )


def test_pulled_messages_become_the_records_beams_read_makes():
    for attributes in ({"eventId": "e1", "occurredAt": "2026-11-21T10:00:00Z"}, {}):
        pulled = _pulled_message(b"body", attributes)
        beams = PubsubMessage(b"body", attributes, message_id="42")
        for id_label in ("eventId", None):
            assert _pulled_record(pulled, id_label) == _to_source_record(beams, id_label)
    assert _pulled_record(_pulled_message(b"x", {"eventId": "e1"}), "eventId").id == "e1"
    assert _pulled_record(_pulled_message(b"x", {}), "eventId").id == "42"


def test_pulled_messages_are_stamped_like_beams_read_stamps_them(caplog):
    published = Timestamp.from_rfc3339("2026-11-21T09:00:00.25Z")
    cases = {
        "2026-11-21T10:00:00.123456Z": Timestamp.from_rfc3339("2026-11-21T10:00:00.123456Z"),
        "2026-11-21T10:00:00.123456789Z": Timestamp(micros=1795255200123456),  # cut to micros
        "1795255200123": Timestamp(micros=1795255200123000),  # epoch milliseconds
    }
    for value, expected in cases.items():
        message = _pulled_message(b"x", {"occurredAt": value})
        assert _message_timestamp(message, "occurredAt") == expected, value
        assert _message_timestamp(message, None) == published
    assert _message_timestamp(_pulled_message(b"x", {}), "occurredAt") == published
    with caplog.at_level(logging.WARNING, logger="blogflow.io.pubsub"):
        bad = _pulled_message(b"x", {"occurredAt": "yesterday"}, message_id="9")
        assert _message_timestamp(bad, "occurredAt") == published
    assert "message 9 has a occurredAt attribute that is not a time" in caplog.text


def test_a_count_tracker_claims_checkpoints_and_stops():
    tracker = CountTracker(CountRestriction(start=3, idle_seconds=1.0), "Pub/Sub subscription")
    assert not tracker.is_bounded()
    assert tracker.try_claim(CountPosition(5))
    with pytest.raises(ValueError, match="must not go backwards"):
        tracker.try_claim(CountPosition(4))
    assert tracker.try_split(0.5) is None  # a subscription cannot be divided
    primary, residual = tracker.try_split(0)
    assert primary == CountRestriction(start=3, stop=5, idle_seconds=1.0)
    assert residual == CountRestriction(start=5, idle_seconds=0.0)
    assert not tracker.try_claim(CountPosition(6))  # checkpointed: the batch is not ours
    tracker.check_done()

    bounded = CountTracker(CountRestriction(stop=10))
    assert bounded.is_bounded()
    assert bounded.try_claim(CountPosition(4))
    with pytest.raises(ValueError, match="returned after 4 items"):
        bounded.check_done()
    assert not bounded.try_claim(CountPosition(4, 2.5, last=True))  # a bound was reached
    assert bounded.current_restriction().stop == 4
    bounded.check_done()
    with pytest.raises(ValueError, match="limited to 10"):
        CountTracker(CountRestriction(stop=10)).try_claim(CountPosition(11))


def test_attributes_are_rfc3339_utc_with_z_as_beam_reads_them():
    paris = dt.timezone(dt.timedelta(hours=2))
    event = make_event("post_liked", {"postId": "p1"}, occurred_at=_T0.astimezone(paris))
    attributes = _event_attributes(event.to_json())
    assert attributes == {"occurredAt": "2026-11-21T10:00:00.123456Z", "eventId": event.id}
    parsed = parse_event(event.to_json())
    assert Timestamp.from_rfc3339(attributes["occurredAt"]).micros == _micros(parsed)
    whole = make_event("post_liked", {"postId": "p1"}, occurred_at=_T0.replace(microsecond=0))
    assert _event_attributes(whole.to_json())["occurredAt"] == "2026-11-21T10:00:00Z"
    assert _event_attributes(b"not json") == {}
    assert _event_attributes(b'{"id": "x"}') == {}


def test_bare_names_resolve_against_the_configured_project(monkeypatch):
    monkeypatch.delenv("PUBSUB_PROJECT_ID", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    assert default_project() == "blogflow-local"
    assert topic_path("events") == "projects/blogflow-local/topics/events"
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "gcp-project")
    assert subscription_path(" events-sub ") == "projects/gcp-project/subscriptions/events-sub"
    monkeypatch.setenv("PUBSUB_PROJECT_ID", "pubsub-project")
    assert ReadPubSubEvents("s-1").subscription == "projects/pubsub-project/subscriptions/s-1"
    full = "projects/other-project/subscriptions/s-1"
    assert ReadPubSubEvents(full).subscription == full


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: topic_path(""), "non-empty"),
        (lambda: topic_path("ab"), "invalid Pub/Sub topic name"),
        (lambda: topic_path("goog-events"), "invalid Pub/Sub topic name"),
        (lambda: topic_path("1events"), "invalid Pub/Sub topic name"),
        (lambda: topic_path("a/b"), "bare name or projects/<project>/topics/<name>"),
        (lambda: topic_path("projects/p-roject/subscriptions/s-1"), "projects/<project>/topics"),
        (lambda: subscription_path("projects/Bad_Project/subscriptions/s-1"), "project id"),
        (lambda: ReadPubSubEvents("   "), "subscription"),
        (lambda: ReadPubSubEvents("s-1", id_label=""), "id_label"),
        (lambda: ReadPubSubEvents("s-1", timestamp_attribute=" "), "timestamp_attribute"),
        (lambda: PullFromPubSub("a/b"), "subscription"),
        (lambda: PullFromPubSub("s-1", id_label=""), "id_label"),
        (lambda: PullFromPubSub("s-1", max_records=0), "max_records"),
        (lambda: PullFromPubSub("s-1", idle_timeout=-1), "idle_timeout"),
        (lambda: PullFromPubSub("s-1", max_bundle_seconds=float("inf")), "max_bundle_seconds"),
        (lambda: PullFromPubSub("s-1", max_bundle_records=1.5), "max_bundle_records"),
        (lambda: create_subscription("t-1", "s-1", ack_deadline=5), "ack_deadline"),
        (lambda: publish_events("t-1", [b"x"], timeout=0), "timeout"),
    ],
)
def test_bad_arguments_are_rejected_before_any_call(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_display_data_names_the_subscription_and_attributes():
    read = ReadPubSubEvents("projects/blogflow-prod/subscriptions/events")
    items = {item.key: item.value for item in DisplayData.create_from(read).items}
    assert items == {
        "subscription": "projects/blogflow-prod/subscriptions/events",
        "timestamp_attribute": "occurredAt",
        "id_label": "eventId",
    }


def test_the_pull_readers_display_data_names_its_settings():
    pull = PullFromPubSub("projects/blogflow-prod/subscriptions/events", idle_timeout=30)
    assert pull.bounded
    items = {item.key: item.value for item in DisplayData.create_from(pull).items}
    assert items == {
        "subscription": "projects/blogflow-prod/subscriptions/events",
        "timestamp_attribute": "occurredAt",
        "id_label": "eventId",
        "idle_timeout": 30,
        "max_bundle_records": 1000,
        "max_bundle_seconds": 5.0,
    }
