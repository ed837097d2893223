"""Feeds in Redis: ``feed:{userId}`` sorted sets (member postId, score) with a TTL.

:class:`WriteFeeds` replaces each feed whole. A feed is written aside to
``feed:{userId}:next`` and renamed over ``feed:{userId}`` by one server-side script, so
a reader sees the old feed or the new one, never a mix, and a write that fails half-way
leaves the old feed in place (the aside key expires by itself). One script call per user,
many users per round trip (a pipeline of ``batch_size`` calls).

Delivery: at-least-once input, exactly-once effect: writing the same feed again leaves
the same sorted set. A Redis outage fails the bundle; the runner retries it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.transforms.display import DisplayDataItem

from blogflow.io import redis
from blogflow.io._redis_sink import RedisBatchFn

__all__ = ["WriteFeeds", "feed_key", "purge_feeds", "read_all_feeds", "read_feed"]

_LOGGER = logging.getLogger(__name__)

#: KEYS[1] the feed, KEYS[2] the aside key; ARGV[1] TTL seconds, ARGV[2] the feed as a
#: JSON array ``[score, postId, score, postId, ...]`` (one argument: packing a hundred
#: separate ones costs the writer more than the whole script costs Redis).
_REPLACE_FEED = """
local items = cjson.decode(ARGV[2])
redis.call('DEL', KEYS[2])
for i = 1, #items, 2000 do
  redis.call('ZADD', KEYS[2], unpack(items, i, math.min(i + 1999, #items)))
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('RENAME', KEYS[2], KEYS[1])
return #items / 2
"""


def feed_key(user_id: str, prefix: str = "") -> str:
    """The sorted set that holds a user's feed."""
    return f"{prefix}feed:{user_id}"


class _WriteFeedsFn(RedisBatchFn):
    def __init__(self, redis_url: str | None, prefix: str, ttl: int, batch_size: int) -> None:
        super().__init__(redis_url, batch_size, "feeds_written")
        self._prefix = prefix
        self._ttl = ttl
        self._script: Any = None

    def setup(self) -> None:
        super().setup()
        self._script = self._client.register_script(_REPLACE_FEED)

    def write(self, pipe: Any, batch: list[tuple[str, Sequence[tuple[str, float]]]]) -> None:
        for user_id, feed in batch:
            key = feed_key(user_id, self._prefix)
            if feed:
                items = json.dumps([x for post_id, score in feed for x in (score, post_id)])
                self._script(keys=[key, key + ":next"], args=[self._ttl, items], client=pipe)
            else:  # an empty feed: no stale feed stays behind
                pipe.delete(key)


class WriteFeeds(beam.PTransform):
    """Writes ``(userId, [(postId, score), ...])`` feeds to Redis, each replaced atomically.

    Args:
        redis_url: the Redis to write to; ``REDIS_URL`` by default.
        prefix: prepended to every key (tests and side-by-side deployments).
        ttl: seconds a feed lives (default 6 h); a feed not rewritten in time disappears.
        batch_size: feeds per round trip.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        prefix: str = "",
        ttl: int = 6 * 3600,
        batch_size: int = 500,
    ) -> None:
        super().__init__()
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._redis_url = redis_url
        self._prefix = prefix
        self._ttl = ttl
        self._batch_size = batch_size

    def expand(self, feeds: beam.PCollection) -> beam.pvalue.PDone:
        _ = feeds | "WriteFeedsToRedis" >> beam.ParDo(
            _WriteFeedsFn(self._redis_url, self._prefix, self._ttl, self._batch_size)
        )
        return beam.pvalue.PDone(feeds.pipeline)

    def display_data(self) -> dict[str, Any]:
        url = self._redis_url
        return {
            "redis": DisplayDataItem(redis.redact_url(url) if url else "REDIS_URL", label="Redis"),
            "ttl": DisplayDataItem(self._ttl, label="Feed TTL (s)"),
        }


def read_feed(client: Any, user_id: str, prefix: str = "") -> list[tuple[str, float]]:
    """A user's feed, best first (empty when there is none)."""
    return [
        (member, float(score))
        for member, score in client.zrevrange(feed_key(user_id, prefix), 0, -1, withscores=True)
    ]


def read_all_feeds(
    client: Any, prefix: str = "", *, batch: int = 1000
) -> dict[str, list[tuple[str, float]]]:
    """Every feed under ``prefix`` (SCAN, never KEYS), by user id, each best first."""
    start = len(f"{prefix}feed:")
    users = [key[start:] for key in client.scan_iter(match=f"{_escape(prefix)}feed:*", count=batch)]
    return {user: read_feed(client, user, prefix) for user in users}


def purge_feeds(client: Any, prefix: str = "", *, batch: int = 1000) -> Iterator[int]:
    """Deletes every feed under ``prefix`` with SCAN (never KEYS) and UNLINK.

    Yields the running count of deleted keys after each batch, for progress.
    """
    deleted = 0
    keys: list[str] = []
    for key in client.scan_iter(match=f"{_escape(prefix)}feed:*", count=batch):
        keys.append(key)
        if len(keys) >= batch:
            deleted += client.unlink(*keys)
            keys = []
            yield deleted
    if keys:
        deleted += client.unlink(*keys)
    yield deleted


def _escape(pattern: str) -> str:
    """Escapes glob characters of a literal prefix for SCAN MATCH."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in pattern)
