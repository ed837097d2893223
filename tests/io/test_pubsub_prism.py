"""ReadPubSubEvents on Prism (blogflow's pull reader) against the real Pub/Sub emulator.

Each test gets its own topic and subscription (ack deadline 10 s, so redeliveries come
quickly) and runs a streaming job on Prism with the SDK harness in this process
(``LOOPBACK``). A job never ends by itself: it is started with ``pipeline.run()``, the test
waits on conditions with deadlines, and the job is cancelled in a ``finally``.

Records reach the test through Redis: a step after the read stores each one, with the wall
time it saw it, under the test's key prefix. Acknowledgements are observed three ways: a
spy on the reader's finalization callback (it runs in this process), the reader's
``messages_acked`` metric, and the subscription itself (after the ack deadline, what was
not acknowledged can be pulled again).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pytest
import redis
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1

from blogflow.events import Event, SourceRecord, make_event
from blogflow.io import pubsub
from blogflow.io.pubsub import ReadPubSubEvents, publish_events
from blogflow.runners.prism import PrismNotFound, prism_binary
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

#: The subscription's ack deadline: the reader's bundles (5 s) end well within it.
ACK_DEADLINE = 10
#: Seconds a test waits for a condition (a job's start included).
WAIT_SECONDS = 40.0
_T0 = dt.datetime(2026, 11, 21, 10, 0, 0, 654321, tzinfo=dt.timezone.utc)


# ------------------------------------------------------------------------------ helpers


def _prism_options() -> PipelineOptions:
    try:
        binary = prism_binary()
    except PrismNotFound as error:
        pytest.skip(f"Prism is not built: {error}")
    return PipelineOptions(
        [
            "--runner=PrismRunner",
            f"--prism_location={binary}",
            "--environment_type=LOOPBACK",
            "--streaming",
        ]
    )


class _StoreInRedis(beam.DoFn):
    """Appends each record, its timestamp and the wall time it got here to a Redis list."""

    def __init__(self, redis_url: str, key: str) -> None:
        self._redis_url = redis_url
        self._key = key
        self._client: Any = None

    def setup(self) -> None:
        self._client = redis.Redis.from_url(self._redis_url)

    def process(self, record: SourceRecord, timestamp=beam.DoFn.TimestampParam) -> None:
        item = {
            "payload": record.payload.decode(),
            "id": record.id,
            "micros": timestamp.micros,
            "seen": time.time(),
        }
        self._client.rpush(self._key, json.dumps(item))

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()


class _FailEveryRecord(beam.DoFn):
    """A step after the read that fails: its bundle is never committed."""

    def process(self, record: SourceRecord) -> None:
        raise RuntimeError(f"downstream failure on record {record.id}")


class Finalized(NamedTuple):
    """One run of the reader's finalization callback."""

    at: float
    ack_ids: int


@pytest.fixture
def finalized(monkeypatch: pytest.MonkeyPatch) -> list[Finalized]:
    """Every run of the reader's finalization callback in this process (LOOPBACK)."""
    runs: list[Finalized] = []
    acknowledge = pubsub._PullSubscriptionFn._acknowledge

    def spy(self: Any, path: str, ack_ids: Any) -> None:
        acknowledge(self, path, ack_ids)
        runs.append(Finalized(time.time(), len(ack_ids)))

    monkeypatch.setattr(pubsub._PullSubscriptionFn, "_acknowledge", spy)
    return runs


def _events(count: int, first: int = 0) -> list[Event]:
    return [
        make_event(
            "post_viewed",
            {"postId": f"p{i}"},
            occurred_at=_T0 + dt.timedelta(seconds=41 * i, microseconds=i),
        )
        for i in range(first, first + count)
    ]


def _micros(event: Event) -> int:
    return round(event.event_time * 1_000_000)


def _stored(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    return [json.loads(item) for item in client.lrange(key, 0, -1)]


def _pull_all(subscription: str, seconds: float, until: int | None = None) -> list[Any]:
    """The messages the subscription delivers within ``seconds``, or until ``until`` came
    (each acknowledged here)."""
    messages: list[Any] = []
    deadline = time.monotonic() + seconds
    with pubsub_v1.SubscriberClient() as subscriber:
        while time.monotonic() < deadline and (until is None or len(messages) < until):
            try:
                response = subscriber.pull(
                    request={"subscription": subscription, "max_messages": 100},
                    timeout=max(0.5, min(3.0, deadline - time.monotonic())),
                    retry=None,
                )
            except google_exceptions.DeadlineExceeded:
                continue
            received = list(response.received_messages)
            if received:
                subscriber.acknowledge(
                    request={"subscription": subscription, "ack_ids": [m.ack_id for m in received]}
                )
                messages.extend(m.message for m in received)
    return messages


def _stop(result: PipelineResult) -> None:
    """Cancel a job unless it already ended; bounded."""
    if PipelineState.is_terminal(result.state):
        return
    canceller = threading.Thread(target=result.cancel, name="cancel-job", daemon=True)
    canceller.start()
    canceller.join(WAIT_SECONDS)
    assert not canceller.is_alive(), f"the job did not cancel within {WAIT_SECONDS}s"


@contextlib.contextmanager
def _running(build: Callable[[beam.Pipeline], Any]) -> Iterator[PipelineResult]:
    """A streaming job on Prism, running while the block runs, cancelled after it."""
    pipeline = beam.Pipeline(options=_prism_options())
    build(pipeline)
    result = pipeline.run()
    try:
        wait_for(lambda: result.state != PipelineState.STARTING, WAIT_SECONDS, "the job starts")
        yield result
    finally:
        _stop(result)


def _counter(result: PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_namespace("blogflow.io.pubsub"))
    return sum(c.committed or 0 for c in counters["counters"] if c.key.metric.name == name)


# -------------------------------------------------------------------------------- tests


def test_records_arrive_while_the_job_runs_and_are_acked_after_their_bundle(
    topic, subscription, local_stack, redis_client, redis_prefix, finalized
):
    key = f"{redis_prefix}records"
    redis_url = local_stack.env["REDIS_URL"]

    def build(p: beam.Pipeline) -> None:
        _ = (
            p
            | "ReadPubSubEvents" >> ReadPubSubEvents(subscription)
            | "Store" >> beam.ParDo(_StoreInRedis(redis_url, key))
        )

    first, second = _events(4), _events(4, first=4)
    published: dict[str, float] = {}
    with _running(build) as result:
        # The job is running and reads nothing yet: its empty bundles are finalized too.
        wait_for(lambda: finalized, WAIT_SECONDS, "an empty bundle is finalized")
        assert sum(run.ack_ids for run in finalized) == 0
        for batch in (first, second):
            published.update((event.id, time.time()) for event in batch)
            publish_events(topic, [event.to_json() for event in batch])
            wait_for(
                lambda n=len(published): len(_stored(redis_client, key)) >= n,
                WAIT_SECONDS,
                f"{len(published)} records reach the running job",
            )
        assert result.state == PipelineState.RUNNING
        # Every message is acknowledged by a finalization callback, and the next bundle
        # counts it in messages_acked; then one more bundle reports the metrics.
        wait_for(lambda: sum(run.ack_ids for run in finalized) >= 8, WAIT_SECONDS, "8 acked")
        runs = len(finalized)
        wait_for(lambda: len(finalized) > runs + 1, WAIT_SECONDS, "two more finalized bundles")
        assert _counter(result, "messages_acked") == 8
        assert _counter(result, "messages_received") == 8
        assert _counter(result, "checkpoints") >= 1

    stored = _stored(redis_client, key)
    events = {event.id: event for event in first + second}
    assert sorted(item["id"] for item in stored) == sorted(events)  # once each
    for item in stored:
        event = events[item["id"]]
        assert item["payload"].encode() == event.to_json()
        assert item["micros"] == _micros(event)
        assert 0 <= item["seen"] - published[item["id"]] < 10
    assert sum(run.ack_ids for run in finalized) == 8
    # No message was acknowledged before it had gone through the step after the read.
    seen = sorted(item["seen"] for item in stored)
    acked = 0
    for run in finalized:
        acked += run.ack_ids
        assert acked <= sum(1 for at in seen if at <= run.at)
    # Acknowledged for good: once the ack deadline passed, nothing comes back.
    time.sleep(1)
    assert _pull_all(subscription, ACK_DEADLINE + 2) == []


def test_a_failure_after_the_read_acks_nothing_and_the_messages_come_back(
    topic, subscription, finalized
):
    events = _events(3)
    publish_events(topic, [event.to_json() for event in events])

    def build(p: beam.Pipeline) -> None:
        _ = (
            p
            | "ReadPubSubEvents" >> ReadPubSubEvents(subscription)
            | "Fail" >> beam.ParDo(_FailEveryRecord())
        )

    with _running(build) as result:
        wait_for(lambda: PipelineState.is_terminal(result.state), WAIT_SECONDS, "the job fails")
        assert result.state == PipelineState.FAILED
    assert sum(run.ack_ids for run in finalized) == 0

    # Pulled by the failed bundle, never acknowledged: delivered again after the deadline.
    again = _pull_all(subscription, ACK_DEADLINE + 10, until=len(events))
    assert sorted(m.attributes["eventId"] for m in again) == sorted(e.id for e in events)
    assert sorted(bytes(m.data) for m in again) == sorted(e.to_json() for e in events)
