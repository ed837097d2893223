"""A streaming run and a backfill over the same events give the same feeds.

The events are the demo's day of a small site (not written for this test), delivered to a
streaming run out of order, with redeliveries and with late data, on TestStream (on
BundleBasedDirectRunner and on Prism); the backfill reads the same deliveries from a
JSON-lines archive on FnApiRunner.

And the feed job streaming for real: ``--source kinesis://S --as-of T`` (T in the past, no
``--drain``) on Prism writes the as-of feeds to Redis while the job keeps running.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.runner import PipelineResult, PipelineState
from apache_beam.testing.test_stream import TestStream

from blogflow.events import SourceRecord
from blogflow.io import kinesis
from blogflow.io import redis as redis_io
from blogflow.io.feeds import WriteFeeds, read_all_feeds
from blogflow.local.demo import DEMO_AS_OF, demo_events
from blogflow.pipelines import feed
from blogflow.pipelines.feed import ComputeFeeds
from blogflow.runners.profiles import configure_runner
from blogflow.transforms.parsing import ParseEvents
from blogflow.transforms.scoring import HOUR, ScoringConfig
from tests.pipelines.test_feed import AS_OF as SCENARIO_AS_OF
from tests.pipelines.test_feed import scenario

pytestmark = pytest.mark.integration

AS_OF = DEMO_AS_OF.timestamp()
WINDOW_END = AS_OF - AS_OF % HOUR + HOUR  # end of the engagement window holding AS_OF
#: Longest a test waits for a running job's feeds, or for a cancelled job to stop.
DEADLINE = 75.0


def streaming_options(runner: str) -> PipelineOptions:
    """Options of a streaming pipeline on ``runner``: ``direct`` (BundleBasedDirectRunner)
    or ``prism`` (the project's Prism binary, the SDK harness in this process)."""
    if runner == "direct":
        options = PipelineOptions()
        options.view_as(StandardOptions).runner = BundleBasedDirectRunner()
    else:
        options = PipelineOptions(["--runner=PrismRunner"])
        configure_runner(options)
    options.view_as(StandardOptions).streaming = True
    return options


def deliveries(seed):
    """The demo's events as a queue would deliver them: (payload, watermark after) steps.

    In event-time order with some jitter, 5 % redelivered a little later, and 5 % of the
    engagement held back and delivered after the watermark passed the current window's
    end (late, within the allowed lateness).
    """
    rng = random.Random(seed)
    events = sorted(demo_events(), key=lambda e: e.event_time + rng.uniform(0, 600))
    late = [e for e in events if e.type.startswith(("post_v", "post_l")) and rng.random() < 0.05]
    on_time = [e for e in events if e not in late]
    steps = []
    for n, event in enumerate(on_time):
        steps.append(event.to_json())
        if rng.random() < 0.05:  # redelivered a few messages later
            on_time.insert(min(len(on_time), n + rng.randint(2, 20)), event)
    return steps, [e.to_json() for e in late] + [late[0].to_json()]


def stream_of(on_time, late):
    stream = TestStream().advance_watermark_to(0)
    for n in range(0, len(on_time), 25):  # in bundles of 25, early panes between them
        batch = on_time[n : n + 25]
        stream = stream.add_elements([SourceRecord(p, f"m{n + i}") for i, p in enumerate(batch)])
        stream = stream.advance_processing_time(61)
    stream = stream.advance_watermark_to(WINDOW_END + HOUR / 2)  # past the window's end
    stream = stream.add_elements([SourceRecord(p, f"late{n}") for n, p in enumerate(late)])
    return stream.advance_watermark_to_infinity()


def feeds_under(prefix):
    client = redis_io.connect()
    try:
        return read_all_feeds(client, prefix)
    finally:
        client.close()


@pytest.mark.parametrize(("runner", "seed"), [("direct", 1), ("direct", 2), ("prism", 1)], ids=str)
def test_streamed_and_backfilled_feeds_are_identical(
    runner, seed, tmp_path, mongo_db, redis_prefix
):
    on_time, late = deliveries(seed)
    streamed, backfilled = f"{redis_prefix}s:", f"{redis_prefix}b:"

    with beam.Pipeline(options=streaming_options(runner)) as p:
        parsed = (
            p
            | stream_of(on_time, late)
            | "ParseEvents" >> ParseEvents(event_time=False, keep_source=True)
        )
        computed = parsed.events | ComputeFeeds(ScoringConfig(), AS_OF, streaming=True)
        _ = computed["feeds"] | WriteFeeds(prefix=streamed)

    archive = tmp_path / "deliveries.jsonl"
    archive.write_bytes(b"\n".join(on_time + late) + b"\n")
    feed.run(
        [
            f"--source=file://{archive}",
            f"--as-of={DEMO_AS_OF.isoformat()}",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={backfilled}",
        ]
    )

    from_stream, from_archive = feeds_under(streamed), feeds_under(backfilled)
    assert len(from_archive) >= 10 and "demo-reader" in from_archive
    assert from_stream == from_archive


# ------------------------------------------------------------------ streaming for real


@contextlib.contextmanager
def streaming_feed(argv: Sequence[str]) -> Iterator[PipelineResult]:
    """The feed job started as a streaming job on Prism (``run()`` returns at once, the
    job running), cancelled after, within bounded time."""
    pipeline = feed.JOB.pipeline(argv)
    standard = pipeline.options.view_as(StandardOptions)
    assert standard.streaming and standard.runner == "PrismRunner"
    result = pipeline.run()
    try:
        yield result
    finally:
        if not PipelineState.is_terminal(result.state):
            result.cancel()
        deadline = time.monotonic() + DEADLINE
        while not PipelineState.is_terminal(result.state) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert result.state == PipelineState.CANCELLED, result.state


def await_feeds(
    result: PipelineResult, prefix: str, expected: dict[str, Any], timeout: float = DEADLINE
) -> float:
    """Waits until the feeds under ``prefix`` are ``expected``, the job still running;
    returns how long that took. Fails naming the difference after ``timeout``."""
    started = time.monotonic()
    while True:
        got = feeds_under(prefix)
        state = result.state
        if got == expected:
            assert state == PipelineState.RUNNING, f"the job is {state}, not running"
            return time.monotonic() - started
        assert state in (PipelineState.STARTING, PipelineState.RUNNING), state
        if time.monotonic() - started > timeout:
            differing = sorted(u for u in {*got, *expected} if got.get(u) != expected.get(u))
            pytest.fail(
                f"after {timeout:.0f} s, {len(differing)} of {len(expected)} feeds differ from "
                f"the backfill's, e.g. {differing[:1]}; written: {sorted(got)}"
            )
        time.sleep(0.25)


@pytest.fixture
def stream(make_stream: Any) -> str:
    """A two-shard Kinesis stream of this test's own."""
    return make_stream(2)


def test_a_streaming_run_from_kinesis_writes_the_as_of_feeds_while_it_runs_on_prism(
    stream, tmp_path, mongo_db, redis_prefix
):
    bodies = [e.to_json() for e in scenario()]
    archive = tmp_path / "events.jsonl"
    archive.write_bytes(b"\n".join(bodies) + b"\n")
    common = [f"--as-of={SCENARIO_AS_OF.isoformat()}", f"--mongo-db={mongo_db.name}"]
    feed.run([f"--source=file://{archive}", f"--redis-prefix={redis_prefix}file:", *common])
    backfilled = feeds_under(f"{redis_prefix}file:")
    assert sorted(backfilled) == ["alice", "bob", "carol", "u1", "u2"]
    assert kinesis.put_records(stream, bodies) == len(bodies)

    prefix = f"{redis_prefix}kinesis:"
    started = time.monotonic()
    with streaming_feed(
        [f"--source=kinesis://{stream}", f"--redis-prefix={prefix}", *common]
    ) as job:
        waited = await_feeds(job, prefix, backfilled)
        print(
            f"kinesis, streaming on Prism: the feeds appeared {time.monotonic() - started:.1f} s "
            f"after the job was started ({waited:.1f} s after run() returned)"
        )
        time.sleep(1.0)  # still running, and nothing written again differently
        assert job.state == PipelineState.RUNNING
        assert feeds_under(prefix) == backfilled
    # the event far after --as-of is dead-lettered once, under its Kinesis record's id
    letters = mongo_db.deadletters.find({"pipeline": "feed", "stage": "as_of"}, {"sourceId": 1})
    from_stream = [d["sourceId"] for d in letters if d["sourceId"].startswith(f"{stream}/")]
    assert len(from_stream) == 1, from_stream
