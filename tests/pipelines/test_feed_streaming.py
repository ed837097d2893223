"""A streaming run and a backfill over the same events give the same feeds.

The events are the demo's day of a small site (not written for this test), delivered to a
streaming run out of order, with redeliveries and with late data, on TestStream; the
backfill reads the same deliveries from a JSON-lines archive on FnApiRunner.
"""

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream

from blogflow.events import SourceRecord
from blogflow.io import redis as redis_io
from blogflow.io.feeds import WriteFeeds, read_all_feeds
from blogflow.local.demo import DEMO_AS_OF, demo_events
from blogflow.pipelines import feed
from blogflow.pipelines.feed import ComputeFeeds
from blogflow.transforms.parsing import ParseEvents
from blogflow.transforms.scoring import HOUR, ScoringConfig

pytestmark = pytest.mark.integration

AS_OF = DEMO_AS_OF.timestamp()
WINDOW_END = AS_OF - AS_OF % HOUR + HOUR  # end of the engagement window holding AS_OF


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


@pytest.mark.parametrize("seed", [1, 2])
def test_streamed_and_backfilled_feeds_are_identical(seed, tmp_path, mongo_db, redis_prefix):
    on_time, late = deliveries(seed)
    streamed, backfilled = f"{redis_prefix}s:", f"{redis_prefix}b:"

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
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
