"""WriteFeeds, read_feed and purge_feeds on the real local Redis."""

import socket
import threading

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from blogflow.io.feeds import (
    FeedUpdate,
    WriteFeeds,
    feed_key,
    feedmeta_key,
    purge_feeds,
    read_all_feeds,
    read_feed,
    read_feedmeta,
)
from blogflow.io.redis import connect

pytestmark = pytest.mark.integration


def write(feeds, prefix, **kwargs):
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = p | beam.Create(feeds) | WriteFeeds(prefix=prefix, **kwargs)


def test_feeds_are_written_ranked_with_a_ttl(redis_prefix):
    write([("u1", [("p1", 3.5), ("p2", 1.25)]), ("u2", [("p3", 2.0)])], redis_prefix, ttl=600)
    client = connect()
    assert read_feed(client, "u1", redis_prefix) == [("p1", 3.5), ("p2", 1.25)]
    assert read_feed(client, "u2", redis_prefix) == [("p3", 2.0)]
    assert 0 < client.ttl(feed_key("u1", redis_prefix)) <= 600
    assert not client.exists(feed_key("u1", redis_prefix) + ":next")
    client.close()


def test_each_feed_has_a_metadata_hash_with_the_feeds_ttl(redis_prefix):
    # 2025-11-21T00:00:00Z to 2025-11-22T00:00:00Z
    window = (1763683200, 1763769600)
    write([("u1", [("p1", 1.0)])], redis_prefix, ttl=600, window=window, reason="event")
    client = connect()
    meta = read_feedmeta(client, "u1", redis_prefix)
    assert meta["window"] == "2025-11-21T00:00:00Z/2025-11-22T00:00:00Z"
    assert meta["reason"] == "event"
    assert meta["computedAt"].endswith("Z") and meta["computedAt"][:2] == "20"
    assert 0 < client.ttl(feedmeta_key("u1", redis_prefix)) <= 600
    write([("u1", [("p2", 2.0)])], redis_prefix, window=window)  # replaced whole
    assert read_feedmeta(client, "u1", redis_prefix)["reason"] == "schedule"
    assert read_feed(client, "u1", redis_prefix) == [("p2", 2.0)]
    write([("u1", [])], redis_prefix, window=window)  # no feed, no metadata
    assert read_feedmeta(client, "u1", redis_prefix) == {}
    client.close()


def test_a_feed_is_never_replaced_by_one_of_an_earlier_window(redis_prefix):
    day, hour = (1763683200, 1763769600), 3600
    write([FeedUpdate("u1", [("new", 2.0)], day, "schedule")], redis_prefix)
    earlier = (day[0] - hour, day[1] - hour)
    write(
        [
            FeedUpdate("u1", [("old", 1.0)], earlier, "schedule"),
            FeedUpdate("u1", [], earlier, "event"),  # nor deleted by one
            ("u1", [("windowless", 1.0)]),
        ],
        redis_prefix,
    )
    client = connect()
    assert read_feed(client, "u1", redis_prefix) == [("new", 2.0)]
    assert read_feedmeta(client, "u1", redis_prefix)["reason"] == "schedule"
    # the same window (an event since the refresh) or a later one replaces it
    write([FeedUpdate("u1", [("patched", 3.0)], day, "event")], redis_prefix)
    assert read_feed(client, "u1", redis_prefix) == [("patched", 3.0)]
    later = (day[0] + hour, day[1] + hour)
    write([FeedUpdate("u1", [("later", 1.0)], later, "schedule")], redis_prefix)
    assert read_feed(client, "u1", redis_prefix) == [("later", 1.0)]
    assert read_feedmeta(client, "u1", redis_prefix)["window"].endswith("T01:00:00Z")
    client.close()


def test_a_new_feed_replaces_the_old_one_whole(redis_prefix):
    write([("u1", [("old1", 9.0), ("old2", 8.0)])], redis_prefix)
    write([("u1", [("new", 1.0)])], redis_prefix)
    client = connect()
    assert read_feed(client, "u1", redis_prefix) == [("new", 1.0)]
    write([("u1", [])], redis_prefix)  # nothing to show any more
    assert read_feed(client, "u1", redis_prefix) == []
    client.close()


def test_readers_never_see_a_half_written_feed(redis_prefix):
    big = [(f"p{i}", float(i)) for i in range(5000)]  # several ZADD chunks in the script
    write([("u1", big[:2500])], redis_prefix)
    seen_sizes = set()
    stop = threading.Event()

    def read():
        client = connect()
        while not stop.is_set():
            seen_sizes.add(client.zcard(feed_key("u1", redis_prefix)))
        client.close()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(5):
            write([("u1", big)], redis_prefix)
            write([("u1", big[:2500])], redis_prefix)
    finally:
        stop.set()
        reader.join(timeout=30)
    assert seen_sizes <= {2500, 5000}


def test_a_redis_outage_fails_the_run_and_keeps_the_old_feed(redis_prefix):
    write([("u1", [("kept", 1.0)])], redis_prefix)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    with pytest.raises(Exception, match="(?i)connect"):
        write([("u1", [("lost", 2.0)])], redis_prefix, redis_url=dead)
    client = connect()
    assert read_feed(client, "u1", redis_prefix) == [("kept", 1.0)]
    client.close()


def test_purge_removes_every_feed_with_scan(redis_prefix):
    write([(f"u{i}", [("p", 1.0)]) for i in range(2500)], redis_prefix)
    client = connect()
    client.set(f"{redis_prefix}other", "stays")
    progress = list(purge_feeds(client, redis_prefix, batch=1000))
    assert progress[-1] == 2500 and len(progress) >= 3
    assert list(client.scan_iter(match=f"{redis_prefix}feed:*")) == []
    assert list(client.scan_iter(match=f"{redis_prefix}feedmeta:*")) == []
    assert client.get(f"{redis_prefix}other") == "stays"
    client.close()


def test_bad_arguments():
    with pytest.raises(ValueError, match="ttl"):
        WriteFeeds(ttl=0)
    with pytest.raises(ValueError, match="batch_size"):
        WriteFeeds(batch_size=0)
    with pytest.raises(ValueError, match="reason must be one of schedule, event, purge"):
        WriteFeeds(reason="cron")


def test_read_all_feeds_reads_only_the_feeds_under_the_prefix(redis_client, redis_prefix):
    client = connect()
    try:
        client.zadd(f"{redis_prefix}feed:u1", {"p1": 2.0, "p2": 1.0})
        client.zadd(f"{redis_prefix}feed:u2", {"p3": 1.0})
        client.set(f"{redis_prefix}other", "x")
        assert read_all_feeds(client, redis_prefix) == {
            "u1": [("p1", 2.0), ("p2", 1.0)],
            "u2": [("p3", 1.0)],
        }
        assert read_all_feeds(client, redis_prefix + "*") == {}  # the prefix is literal
    finally:
        client.close()
