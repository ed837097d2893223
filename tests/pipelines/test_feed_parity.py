"""Feed parity across routes and runners: the same deliveries give the same feeds.

A generated day of a small site (:func:`tests.faults.test_feed_faults.site_events`) is
delivered shuffled, more than half of it twice with every copy far behind its original
(:func:`~tests.faults.test_feed_faults.with_far_copies`), through a ``file://`` archive,
a ``kinesis://`` stream and an ``sqs://`` queue; the feeds the job writes must equal,
user for user and score for score, those of the ``file://`` backfill of the distinct
events on FnApiRunner. On FnApiRunner (backfill, drains) and on Prism (backfill, drains,
and a streaming run from Kinesis whose feeds must appear while the job runs).

Each case prints how long its run took (``pytest -s`` shows it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blogflow.io import kinesis, sqs
from blogflow.pipelines import feed
from tests.faults.test_feed_faults import (
    AS_OF,
    assert_same_feeds,
    feeds_under,
    site_events,
    with_far_copies,
)
from tests.pipelines.test_feed_streaming import await_feeds, streaming_feed

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(120)]

#: (route, runner, how): every way the feed job reads the deliveries.
CASES = [
    ("file", "fnapi", "backfill"),
    ("file", "prism", "backfill"),
    ("kinesis", "fnapi", "drain"),
    ("kinesis", "prism", "drain"),
    ("kinesis", "prism", "streaming"),
    ("sqs", "fnapi", "drain"),
    ("sqs", "prism", "drain"),
]


@pytest.fixture(scope="module")
def distinct() -> list[bytes]:
    # 183 distinct events, 280 deliveries: moto slows down with the depth of a queue.
    return [e.to_json() for e in site_events(posts=10, users=20, engagement=100)]


@pytest.fixture(scope="module")
def deliveries(distinct: list[bytes]) -> list[bytes]:
    copies = with_far_copies(distinct)
    assert 1.4 * len(distinct) < len(copies) <= 300
    return copies


def feed_args(source: str, mongo_db: Any, prefix: str, runner: str) -> list[str]:
    return [
        f"--source={source}",
        f"--as-of={AS_OF.isoformat()}",
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={prefix}",
        f"--runner={runner}",
    ]


@pytest.fixture
def backfilled(distinct: list[bytes], tmp_path: Path, mongo_db: Any, redis_prefix: str) -> Any:
    """The feeds of the ``file://`` backfill of the distinct events, on FnApiRunner."""
    archive = tmp_path / "distinct.jsonl"
    archive.write_bytes(b"\n".join(distinct) + b"\n")
    prefix = f"{redis_prefix}expected:"
    feed.run(feed_args(f"file://{archive}", mongo_db, prefix, "fnapi"))
    expected = feeds_under(prefix)
    assert len(expected) >= 20, sorted(expected)
    return expected


@pytest.fixture
def source(
    request: pytest.FixtureRequest,
    deliveries: list[bytes],
    tmp_path: Path,
    sqs_client: Any,
    kinesis_client: Any,
    unique_name: str,
) -> Iterator[str]:
    """The deliveries put where the case's route reads them; removed after."""
    route, _, how = request.param
    if route == "file":
        archive = tmp_path / "deliveries.jsonl"
        archive.write_bytes(b"\n".join(deliveries) + b"\n")
        yield f"file://{archive}"
    elif route == "kinesis":
        # Two shards: Prism may split one's read off and run it after the other's has
        # moved the watermark on (see blogflow.pipelines.feed.ARRIVAL_GRACE).
        kinesis.create_stream(unique_name, shard_count=2)
        assert kinesis.put_records(unique_name, deliveries) == len(deliveries)
        yield f"kinesis://{unique_name}"
        kinesis_client.delete_stream(StreamName=unique_name, EnforceConsumerDeletion=True)
    else:
        url = sqs.create_queue(unique_name, visibility_timeout=60)
        assert sqs.send_messages(url, deliveries) == len(deliveries)
        yield f"sqs://{url}"
        sqs_client.delete_queue(QueueUrl=url)


@pytest.mark.parametrize("source", CASES, indirect=True, ids="-".join)
def test_every_route_and_runner_gives_the_backfills_feeds(
    request, source, backfilled, mongo_db, redis_prefix
):
    route, runner, how = request.node.callspec.params["source"]
    prefix = f"{redis_prefix}{route}:"
    args = feed_args(source, mongo_db, prefix, runner)
    started = time.monotonic()
    if how == "streaming":
        with streaming_feed(args) as job:
            await_feeds(job, prefix, backfilled)
    else:
        if how == "drain":
            args += ["--drain", "--idle-timeout=2"]
        feed.run(args)
    seconds = time.monotonic() - started
    print(f"\nfeed parity: {route}:// on {runner} ({how}): {seconds:.1f} s")
    assert_same_feeds(feeds_under(prefix), backfilled)
