"""The live feed job agrees with the backfill.

A generated day of a small site is streamed on TestStream (on Prism) as a queue would
deliver it: a little out of order, some events redelivered, and about one in twelve of
every kind (engagement, post events, follows) held back until the watermark has passed
it (late, within the allowed lateness). The live job (``ComputeFeeds`` without an as-of
time) emits every feed it schedules; once the watermark has passed a refresh ``T`` plus
the allowed lateness, the last feed it scheduled for ``T`` of every user must equal the
backfill's ``--as-of T`` (same posts, same order, scores within 1e-9). And the feeds it
left in Redis, after the stream's end, equal the backfill as of its last refresh.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.test_stream import TestStream

from blogflow.events import SourceRecord, make_event, parse_event
from blogflow.io import kinesis
from blogflow.io import redis as redis_io
from blogflow.io.feeds import WriteFeeds, read_all_feeds, read_feed, read_feedmeta
from blogflow.pipelines.feed import ComputeFeeds
from blogflow.transforms.live_feeds import REFRESHES
from blogflow.transforms.parsing import ParseEvents
from blogflow.transforms.scoring import HOUR, ScoringConfig
from tests.faults.test_feed_faults import AS_OF, assert_same_feeds, site_events
from tests.pipelines.test_feed_streaming import DEADLINE, streaming_feed, streaming_options

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

#: The property is checked at every refresh from here to the last event's.
FIRST_CHECKED = int((AS_OF - dt.timedelta(hours=12)).timestamp()) // HOUR * HOUR


def deliveries(events: list[Any], seed: int) -> list[tuple[int, bytes]]:
    """``(watermark after, payload)`` in delivery order: each event delivered within
    10 min of its time, 8 % of them 35 min after it (the watermark trails deliveries by
    11 min, so they are late), 10 % delivered again up to 20 min later."""
    rng = random.Random(seed)
    timed: list[tuple[float, bytes]] = []
    for event in events:
        at = event.event_time
        delay = 35 * 60 if rng.random() < 0.08 else rng.uniform(0, 600)
        timed.append((at + delay, event.to_json()))
        if rng.random() < 0.10:
            timed.append((at + delay + rng.uniform(60, 1200), event.to_json()))
    timed.sort(key=lambda item: item[0])
    return [(int(at - 660), payload) for at, payload in timed]  # TestStream: whole ms


#: Deliveries between two advances of the watermark.
BATCH = 4


def late_deliveries(delivered: list[tuple[int, bytes]]) -> int:
    """How many deliveries come after the watermark passed their event's time."""
    late, watermark = 0, 0
    for n in range(0, len(delivered), BATCH):
        batch = delivered[n : n + BATCH]
        late += sum(1 for _, p in batch if parse_event(p).event_time < watermark)
        watermark = batch[-1][0]
    return late


def stream_of(delivered: list[tuple[int, bytes]]) -> TestStream:
    stream = TestStream().advance_watermark_to(0)
    for n in range(0, len(delivered), BATCH):
        batch = delivered[n : n + BATCH]
        stream = stream.add_elements(
            [SourceRecord(payload, f"m{n + i}") for i, (_, payload) in enumerate(batch)]
        )
        stream = stream.advance_watermark_to(batch[-1][0]).advance_processing_time(30)
    return stream.advance_watermark_to_infinity()


class _KeepRefreshesFn(beam.DoFn):
    """Writes every scheduled feed to Redis, ``{prefix}{end}:{userId}``: the last wins."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def setup(self) -> None:
        self._client = redis_io.connect()

    def process(self, refresh: tuple[str, int, list[tuple[str, float]]]) -> None:
        user_id, end, feed_ = refresh
        self._client.set(f"{self._prefix}{end}:{user_id}", json.dumps(feed_))

    def teardown(self) -> None:
        self._client.close()


def ranked(feeds: dict[str, list[tuple[str, float]]]) -> dict[str, list[tuple[str, float]]]:
    """Feeds best first, ties by post id (Redis returns a tie in reverse member order)."""
    return {
        user: sorted(feed_, key=lambda item: (-item[1], item[0])) for user, feed_ in feeds.items()
    }


def refreshes_under(prefix: str) -> dict[int, dict[str, list[tuple[str, float]]]]:
    client = redis_io.connect()
    try:
        found: dict[int, dict[str, list[tuple[str, float]]]] = {}
        for key in client.scan_iter(match=f"{prefix}*"):
            end, user_id = key[len(prefix) :].split(":", 1)
            feed_ = [(p, s) for p, s in json.loads(client.get(key))]
            if feed_:
                found.setdefault(int(end), {})[user_id] = feed_
        return found
    finally:
        client.close()


def backfills(events: list[Any], times: list[float], prefix: str):
    """The backfill's feeds as of each of ``times`` (one FnApiRunner pipeline, a branch
    per time), by time."""
    with beam.Pipeline(runner=FnApiRunner()) as p:
        parsed = (
            p
            | "Events" >> beam.Create([SourceRecord(e.to_json(), e.id) for e in events])
            | "ParseEvents" >> ParseEvents(event_time=False, keep_source=True)
        )
        for at in times:
            computed = parsed.events | f"AsOf{at:.0f}" >> ComputeFeeds(
                ScoringConfig(), at, streaming=False
            )
            _ = computed["feeds"] | f"Write{at:.0f}" >> WriteFeeds(prefix=f"{prefix}{at:.0f}:")
    client = redis_io.connect()
    try:
        return {at: read_all_feeds(client, f"{prefix}{at:.0f}:") for at in times}
    finally:
        client.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_the_live_job_agrees_with_the_backfill_at_every_refresh(seed, redis_prefix):
    events = site_events(posts=12, users=24, engagement=160, seed=seed)
    delivered = deliveries(events, seed)
    assert sum(1 for _ in delivered) > len(events)  # some redelivered
    late = late_deliveries(delivered)
    assert late >= 10, late

    live, refreshed = f"{redis_prefix}live:", f"{redis_prefix}r:"
    with beam.Pipeline(options=streaming_options("prism")) as p:
        parsed = (
            p
            | "Deliveries" >> stream_of(delivered)
            | "ParseEvents" >> ParseEvents(event_time=False, keep_source=True)
        )
        computed = parsed.events | "ComputeFeeds" >> ComputeFeeds(
            ScoringConfig(), None, streaming=True, late_every=5, emit_refreshes=True
        )
        _ = computed["feeds"] | "WriteFeeds" >> WriteFeeds(prefix=live)
        _ = computed[REFRESHES] | "KeepRefreshes" >> beam.ParDo(_KeepRefreshesFn(refreshed))

    scheduled = refreshes_under(refreshed)
    last = max(scheduled)
    assert last > max(e.event_time for e in events)  # new posts stay candidates a while
    assert last % HOUR == 0
    times = [float(t) for t in range(FIRST_CHECKED, int(AS_OF.timestamp()) + 1, HOUR)]
    expected = backfills(events, [*times, float(last)], f"{redis_prefix}b:")
    for at in times:
        assert len(expected[at]) >= 10, at
        assert_same_feeds(ranked(scheduled.get(int(at), {})), ranked(expected[at]))
    client = redis_io.connect()
    try:
        assert read_all_feeds(client, live) == expected[float(last)]
    finally:
        client.close()


# ------------------------------------------------------------------ streaming for real

#: Short windows, so a refresh comes every PERIOD seconds while the test watches.
PERIOD = 30
LIVE_FLAGS = [
    f"--window-period={PERIOD}",
    f"--window-size={4 * PERIOD}",
    f"--allowed-lateness={PERIOD}",
    "--active-days=1",
    "--max-refresh-delay=4",
]


def _published(post_id: str, author: str, at: dt.datetime, tags: tuple[str, ...] = ()) -> Any:
    data = {
        "postId": post_id,
        "authorId": author,
        "publicationId": f"pub-{author}",
        "title": post_id,
        "slug": post_id,
        "tags": list(tags),
        "publishedAt": at.isoformat(),
    }
    return make_event("post_published", data, user_id=author, occurred_at=at)


def _await(what: str, check, job, timeout: float) -> float:
    """Seconds until ``check()`` holds, the job running all along; fails after ``timeout``."""
    started = time.monotonic()
    while not check():
        assert job.state in (PipelineState.STARTING, PipelineState.RUNNING), job.state
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)
    assert job.state == PipelineState.RUNNING, job.state
    return time.monotonic() - started


def test_the_live_job_follows_publications_deletions_and_refreshes_on_prism(
    make_stream, mongo_db, redis_prefix
):
    stream = make_stream(2)
    now = dt.datetime.now(dt.timezone.utc)
    opening = [
        _published("old", "alice", now - dt.timedelta(seconds=30)),
        _published("other", "bob", now - dt.timedelta(seconds=30)),
        make_event("user_followed", {"authorId": "alice"}, user_id="reader", occurred_at=now),
        make_event("post_viewed", {"postId": "old"}, user_id="stranger", occurred_at=now),
    ]
    assert kinesis.put_records(stream, [e.to_json() for e in opening]) == len(opening)
    client = redis_io.connect()
    argv = [
        f"--source=kinesis://{stream}",
        f"--redis-prefix={redis_prefix}",
        f"--mongo-db={mongo_db.name}",
        *LIVE_FLAGS,
    ]
    try:
        with streaming_feed(argv) as job:

            def posts_of(user: str) -> list[str]:
                return [p for p, _ in read_feed(client, user, redis_prefix)]

            def refreshed_after(moment: float):
                def check() -> bool:
                    meta = read_feedmeta(client, "reader", redis_prefix)
                    if meta.get("reason") != "schedule":
                        return False
                    end = dt.datetime.fromisoformat(meta["window"].split("/")[1])
                    return end.timestamp() > moment

                return check

            _await("a feed for the reader", lambda: "old" in posts_of("reader"), job, DEADLINE)
            # Just after a refresh, so the next is a period away: what comes sooner is
            # the event's doing.
            _await("a refresh", refreshed_after(time.time()), job, DEADLINE)
            fresh = dt.datetime.now(dt.timezone.utc)
            put = [_published("fresh", "alice", fresh)]
            assert kinesis.put_records(stream, [e.to_json() for e in put]) == 1
            shown = _await("the new post", lambda: "fresh" in posts_of("reader"), job, 10)
            assert read_feedmeta(client, "reader", redis_prefix)["reason"] == "event"
            gone = [make_event("post_deleted", {"postId": "fresh"}, user_id="alice")]
            assert kinesis.put_records(stream, [e.to_json() for e in gone]) == 1
            removed = _await("the deletion", lambda: "fresh" not in posts_of("reader"), job, 10)
            print(
                f"live on Prism: a new post shown after {shown:.1f} s, gone {removed:.1f} s after"
            )
            # the job keeps refreshing, every period, while it runs
            waited = _await("a refresh", refreshed_after(time.time()), job, 2 * PERIOD)
            again = _await("the next refresh", refreshed_after(time.time()), job, 2 * PERIOD)
            print(f"refreshed {waited:.1f} s after, then {again:.1f} s later")
            assert "fresh" not in posts_of("reader") and "old" in posts_of("reader")
            assert job.state == PipelineState.RUNNING
    finally:
        client.close()
