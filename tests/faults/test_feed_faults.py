"""The feed job under redelivery: far-apart copies through Kinesis and SQS change nothing.

A generated day of a site (posts, updates, deletions, follows and ~700 engagement events
before the as-of time) is published with more than half of its events delivered twice:
the copies shuffled and each at least a third of the stream behind its original, so an
original and its copy are read in different bundles of the drain. The feeds the job
writes to Redis must equal, user for user and score for score, those of the ``file://``
backfill of the distinct events. (Before the fix the dedupe forgot ids on an event-time
timer while these sources' watermark follows arrival time: copies were counted twice.)

A far-future event, published in a non-canonical form, checks the ``as_of`` dead letter:
the message exactly as received, under the source's own message id.

And Redis stalled when the job comes to write: the job fails in bounded time, every feed
written before stays whole, and the next run writes the right feeds.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from blogflow.events import make_event, parse_event
from blogflow.io import kinesis, sqs
from blogflow.io import redis as redis_io
from blogflow.io.feeds import read_all_feeds
from blogflow.local.stack import LocalStack
from blogflow.pipelines import feed

#: Every test here drains a few hundred to 1,500 messages: far below CI's 300 s limit.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

AS_OF = dt.datetime(2026, 11, 21, 12, 30, tzinfo=dt.timezone.utc)
SEED = 20261121
#: A job whose Redis stalls must fail within this long (its client's socket timeout: 3 s).
FAILS_WITHIN = 30.0


def _at(rng: random.Random, earliest: dt.datetime, latest: dt.datetime) -> dt.datetime:
    return earliest + (latest - earliest) * rng.random()


def site_events(*, posts: int, users: int, engagement: int, seed: int = SEED) -> list[Any]:
    """A day of a small site before ``AS_OF``, seeded: ``posts`` posts by 6 authors (some
    retagged, some deleted, two more never published), ``users`` users with follows, and
    ``engagement`` views, likes and comments of skewed popularity."""
    rng = random.Random(seed)
    start = AS_OF - dt.timedelta(hours=20)
    authors = [f"a{i}" for i in range(6)]
    tags = [f"t{i}" for i in range(5)]
    people = [f"u{i}" for i in range(users)]
    events: list[Any] = []
    published: dict[str, dt.datetime] = {}
    for n in range(posts):
        post_id, author = f"p{n}", rng.choice(authors)
        when = _at(rng, start, AS_OF - dt.timedelta(hours=1))
        published[post_id] = when
        data = {
            "postId": post_id,
            "authorId": author,
            "publicationId": f"pub-{author}",
            "title": f"Post {n}",
            "slug": post_id,
            "tags": rng.sample(tags, rng.randint(0, 2)),
            "publishedAt": when.isoformat(),
        }
        events.append(make_event("post_published", data, user_id=author, occurred_at=when))
        if n % 10 == 3:  # retagged later
            later = _at(rng, when, AS_OF)
            retagged = {**data, "tags": rng.sample(tags, 1)}
            events.append(make_event("post_updated", retagged, user_id=author, occurred_at=later))
        if n % 10 == 7:  # deleted later: in no feed
            later = _at(rng, when, AS_OF)
            events.append(
                make_event("post_deleted", {"postId": post_id}, user_id=author, occurred_at=later)
            )
    for user in people:
        events.append(make_event("user_signed_up", {}, user_id=user, occurred_at=start))
        for author in rng.sample(authors, rng.randint(0, 2)):
            events.append(
                make_event(
                    "user_followed",
                    {"authorId": author},
                    user_id=user,
                    occurred_at=_at(rng, start, AS_OF),
                )
            )
        for tag in rng.sample(tags, rng.randint(0, 2)):
            events.append(
                make_event(
                    "tag_followed", {"tag": tag}, user_id=user, occurred_at=_at(rng, start, AS_OF)
                )
            )
    post_ids = [*published, "p98", "p99"]  # two never published
    weights = [1 / (rank + 1) for rank in range(len(post_ids))]
    for _ in range(engagement):
        post_id = rng.choices(post_ids, weights=weights)[0]
        kind = rng.choices(("post_viewed", "post_liked", "comment_added"), (70, 20, 10))[0]
        when = _at(rng, published.get(post_id, start), AS_OF)
        events.append(
            make_event(kind, {"postId": post_id}, user_id=rng.choice(people), occurred_at=when)
        )
    # after the as-of time but within the skew: left for a later run
    events.append(
        make_event(
            "post_viewed",
            {"postId": "p0"},
            user_id="u0",
            occurred_at=AS_OF + dt.timedelta(minutes=2),
        )
    )
    return events


def with_far_copies(bodies: list[bytes], seed: int = SEED) -> list[bytes]:
    """The bodies in a shuffled order, more than half of them delivered twice: every copy
    at least a third of the stream behind its original, the copies shuffled."""
    rng = random.Random(seed)
    order = bodies[:]
    rng.shuffle(order)
    gap = len(order) // 3
    keyed = [(float(n), body) for n, body in enumerate(order)]
    for n, body in enumerate(order):
        if rng.random() < 0.55:
            keyed.append((rng.uniform(n + gap, len(order) + gap), body))
    keyed.sort(key=lambda item: item[0])
    return [body for _, body in keyed]


def far_future_body() -> bytes:
    """An event far after the as-of time, serialised as no parser would re-serialise it."""
    return (
        b'{ "type" : "post_viewed", "v" : 1, "id" : "future-1", "userId" : "u1",\n'
        b'  "occurredAt" : "2026-11-23T09:00:00+00:00", "data" : { "postId" : "p0" },'
        b' "traceId" : "t-42" }'
    )


def feeds_under(prefix: str) -> dict[str, list[tuple[str, float]]]:
    client = redis_io.connect()
    try:
        return read_all_feeds(client, prefix)
    finally:
        client.close()


def run_feed(source: str, mongo_db: Any, prefix: str, *extra: str) -> PipelineResult:
    return feed.run(
        [
            f"--source={source}",
            f"--as-of={AS_OF.isoformat()}",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={prefix}",
            *extra,
        ]
    )


def copies_up_to_as_of(deliveries: list[bytes], distinct: list[bytes]) -> int:
    """The copies the dedupe sees: those of events after ``AS_OF`` are set aside before."""
    due = [body for body in distinct if parse_event(body).occurredAt <= AS_OF]
    return sum(deliveries.count(body) - 1 for body in due)


def counter(result: PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed for c in counters)


def assert_same_feeds(got: dict[str, Any], expected: dict[str, Any]) -> None:
    differing = sorted(user for user in {*got, *expected} if got.get(user) != expected.get(user))
    assert not differing, (
        f"{len(differing)} of {len(expected)} feeds differ from the backfill's, e.g. "
        f"{differing[0]}: {got.get(differing[0])} != {expected.get(differing[0])}"
    )


def only_as_of_letter(mongo_db: Any) -> dict[str, Any]:
    letters = list(mongo_db.deadletters.find({"pipeline": "feed"}))
    assert [d["stage"] for d in letters] == ["as_of"], letters
    return letters[0]


def backfill(events: list[bytes], tmp_path: Path, mongo_db: Any, prefix: str) -> dict[str, Any]:
    """The feeds of the ``file://`` backfill of ``events``."""
    archive = tmp_path / "distinct.jsonl"
    archive.write_bytes(b"\n".join(events) + b"\n")
    run_feed(f"file://{archive}", mongo_db, prefix)
    assert mongo_db.deadletters.count_documents({}) == 0
    return feeds_under(prefix)


@pytest.fixture
def queue(sqs_client: Any, unique_name: str) -> Iterator[str]:
    """A queue of this test's own whose messages stay invisible longer than a bundle reads."""
    url = sqs.create_queue(unique_name, visibility_timeout=60)
    yield url
    sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def stream(make_stream: Any) -> str:
    """A one-shard Kinesis stream of this test's own."""
    return make_stream(1)


def test_far_apart_copies_through_kinesis_give_the_backfills_feeds(
    stream, kinesis_client, tmp_path, mongo_db, redis_prefix
):
    distinct = [e.to_json() for e in site_events(posts=30, users=60, engagement=700)]
    backfilled = backfill(distinct, tmp_path, mongo_db, f"{redis_prefix}file:")
    assert len(backfilled) >= 60, sorted(backfilled)
    deliveries = with_far_copies(distinct)
    assert 1.4 * len(distinct) < len(deliveries) < 2_000
    assert kinesis.put_records(stream, deliveries[: len(deliveries) // 2]) > 0
    future = kinesis_client.put_record(
        StreamName=stream, Data=far_future_body(), PartitionKey="future"
    )
    assert kinesis.put_records(stream, deliveries[len(deliveries) // 2 :]) > 0

    prefix = f"{redis_prefix}kinesis:"
    result = run_feed(f"kinesis://{stream}", mongo_db, prefix, "--drain", "--idle-timeout=2")

    assert_same_feeds(feeds_under(prefix), backfilled)
    assert counter(result, "events_redelivered") == copies_up_to_as_of(deliveries, distinct)
    letter = only_as_of_letter(mongo_db)
    assert letter["sourceId"] == f"{stream}/{future['ShardId']}/{future['SequenceNumber']}"
    assert letter["payload"] == far_future_body().decode()


def test_far_apart_copies_through_sqs_give_the_backfills_feeds(
    sqs_client, queue, tmp_path, mongo_db, redis_prefix
):
    # moto answers a receive from a queue 500 deep in ~0.5 s: keep this one shallow.
    distinct = [e.to_json() for e in site_events(posts=10, users=20, engagement=120)]
    backfilled = backfill(distinct, tmp_path, mongo_db, f"{redis_prefix}file:")
    assert len(backfilled) >= 20, sorted(backfilled)
    deliveries = with_far_copies(distinct, seed=SEED + 1)
    assert 1.4 * len(distinct) < len(deliveries) < 400
    assert sqs.send_messages(queue, deliveries[: len(deliveries) // 2]) > 0
    future = sqs_client.send_message(QueueUrl=queue, MessageBody=far_future_body().decode())
    assert sqs.send_messages(queue, deliveries[len(deliveries) // 2 :]) > 0

    prefix = f"{redis_prefix}sqs:"
    result = run_feed(f"sqs://{queue}", mongo_db, prefix, "--drain", "--idle-timeout=2")

    assert_same_feeds(feeds_under(prefix), backfilled)
    # SQS may deliver a message again on its own (at-least-once): never fewer.
    assert counter(result, "events_redelivered") >= copies_up_to_as_of(deliveries, distinct)
    letter = only_as_of_letter(mongo_db)
    assert letter["sourceId"] == future["MessageId"]
    assert letter["payload"] == far_future_body().decode()


def test_far_apart_copies_in_an_archive_give_the_same_feeds(tmp_path, mongo_db, redis_prefix):
    distinct = [e.to_json() for e in site_events(posts=10, users=20, engagement=120)]
    backfilled = backfill(distinct, tmp_path, mongo_db, f"{redis_prefix}distinct:")
    deliveries = with_far_copies(distinct)
    archive = tmp_path / "deliveries.jsonl"
    archive.write_bytes(b"\n".join(deliveries) + b"\n")

    result = run_feed(f"file://{archive}", mongo_db, f"{redis_prefix}copies:")

    assert_same_feeds(feeds_under(f"{redis_prefix}copies:"), backfilled)
    assert counter(result, "events_redelivered") == copies_up_to_as_of(deliveries, distinct)


@pytest.fixture
def own_redis(local_stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Redis of this test's own (to stall it), ``REDIS_URL`` pointing at it with the 3 s
    socket timeout a deployment would set; MongoDB stays the session's."""
    with LocalStack(state_dir=tmp_path / "stack", services=("redis",)) as stack:
        monkeypatch.setenv("REDIS_URL", f"{stack.env['REDIS_URL']}?socket_timeout=3")
        yield stack


def test_a_stalled_redis_fails_the_job_in_bounded_time_and_leaves_every_old_feed_whole(
    own_redis, tmp_path, mongo_db, unique_name
):
    events = [e.to_json() for e in site_events(posts=10, users=20, engagement=120)]
    archive = tmp_path / "events.jsonl"
    archive.write_bytes(b"\n".join(events) + b"\n")
    source, prefix, earlier = f"file://{archive}", f"{unique_name}:", AS_OF - dt.timedelta(hours=4)
    run_feed(source, mongo_db, f"{prefix}expected:")
    expected = feeds_under(f"{prefix}expected:")
    run_feed(source, mongo_db, prefix, f"--as-of={earlier.isoformat()}")
    old = feeds_under(prefix)
    assert old and old != expected  # four hours earlier, the feeds were others

    with own_redis.frozen("redis"):
        started = time.monotonic()
        with pytest.raises(Exception, match="(?i)timeout|timed out"):
            run_feed(source, mongo_db, prefix)
        failed_after = time.monotonic() - started
    print(f"redis stalled: the feed job failed after {failed_after:.1f} s")
    assert failed_after < FAILS_WITHIN
    assert feeds_under(prefix) == old

    run_feed(source, mongo_db, prefix)
    assert_same_feeds(feeds_under(prefix), expected)
