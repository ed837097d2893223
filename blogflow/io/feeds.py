"""Feeds in Redis: ``feed:{userId}`` sorted sets (member postId, score) with a TTL, and
beside each a ``feedmeta:{userId}`` hash: when it was computed, from which engagement
window, and why (``computedAt``, ``window``, ``reason``).

:class:`WriteFeeds` replaces each feed whole. A feed is written aside to
``feed:{userId}:next`` and renamed over ``feed:{userId}`` by one server-side script, so
a reader sees the old feed or the new one, never a mix, and a write that fails half-way
leaves the old feed in place (the aside key expires by itself). The same script replaces
the feed's metadata hash, with the same TTL. One script call per user,
many users per round trip (a pipeline of ``batch_size`` calls).

Delivery: at-least-once input, exactly-once effect: writing the same feed again leaves
the same sorted set. A Redis outage fails the bundle; the runner retries it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms.display import DisplayDataItem

from blogflow.io import redis
from blogflow.io._redis_sink import RedisBatchFn

__all__ = [
    "REASONS",
    "FeedUpdate",
    "WriteFeeds",
    "feed_key",
    "feedmeta_key",
    "purge_feeds",
    "read_all_feeds",
    "read_feed",
    "read_feedmeta",
    "window_text",
]

_LOGGER = logging.getLogger(__name__)

#: Why a feed was (re)computed: its window's scheduled refresh, an event that changed
#: it, or a refill after a purge.
REASONS = ("schedule", "event", "purge")

#: KEYS[1] the feed, KEYS[2] the aside key, KEYS[3] the metadata hash; ARGV[1] TTL
#: seconds, ARGV[2] the feed as a JSON array ``[score, postId, score, postId, ...]`` (one
#: argument: packing a hundred separate ones costs the writer more than the whole script
#: costs Redis), ARGV[3..5] computedAt, window, reason. A feed whose stored window is
#: later than ARGV[4] stays (the texts of windows of one size sort as their times do);
#: an empty feed deletes the feed and its metadata.
_REPLACE_FEED = """
local held = redis.call('HGET', KEYS[3], 'window')
if held and held > ARGV[4] then
  return -1
end
local items = cjson.decode(ARGV[2])
if #items == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
  return 0
end
redis.call('DEL', KEYS[2])
for i = 1, #items, 2000 do
  redis.call('ZADD', KEYS[2], unpack(items, i, math.min(i + 1999, #items)))
end
redis.call('EXPIRE', KEYS[2], ARGV[1])
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], 'computedAt', ARGV[3], 'window', ARGV[4], 'reason', ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[1])
return #items / 2
"""


def feed_key(user_id: str, prefix: str = "") -> str:
    """The sorted set that holds a user's feed."""
    return f"{prefix}feed:{user_id}"


def feedmeta_key(user_id: str, prefix: str = "") -> str:
    """The hash that says when and from what a user's feed was computed."""
    return f"{prefix}feedmeta:{user_id}"


def _iso(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def window_text(window: tuple[float, float]) -> str:
    """An engagement window ``[start, end)`` as an ISO 8601 interval, ``start/end``."""
    return f"{_iso(window[0])}/{_iso(window[1])}"


class FeedUpdate(NamedTuple):
    """A feed to write, with where it comes from.

    Attributes:
        user_id: whose feed.
        feed: ``[(postId, score), ...]``, best first; empty deletes the feed.
        window: the engagement window ``(start, end)`` it was computed from, epoch
            seconds, or None when it comes from no window yet.
        reason: why it was computed, one of :data:`REASONS`.
    """

    user_id: str
    feed: Sequence[tuple[str, float]]
    window: tuple[float, float] | None
    reason: str


class _WriteFeedsFn(RedisBatchFn):
    def __init__(
        self,
        redis_url: str | None,
        prefix: str,
        ttl: int,
        batch_size: int,
        window: str,
        reason: str,
    ) -> None:
        super().__init__(redis_url, batch_size, "feeds_written")
        self._prefix = prefix
        self._ttl = ttl
        self._window = window
        self._reason = reason
        self._script: Any = None

    def setup(self) -> None:
        super().setup()
        self._script = self._client.register_script(_REPLACE_FEED)

    def prepare(self, element: Any) -> tuple[str, Sequence[tuple[str, float]], str, str]:
        if isinstance(element, FeedUpdate):
            if element.reason not in REASONS:
                raise ValueError(
                    f"reason must be one of {', '.join(REASONS)}, got {element.reason!r}"
                )
            window = window_text(element.window) if element.window is not None else ""
            return element.user_id, element.feed, window, element.reason
        user_id, feed = element
        return user_id, feed, self._window, self._reason

    def write(
        self, pipe: Any, batch: list[tuple[str, Sequence[tuple[str, float]], str, str]]
    ) -> None:
        computed_at = _iso(time.time())
        for user_id, feed, window, reason in batch:
            key = feed_key(user_id, self._prefix)
            # An empty feed deletes the feed: no stale feed stays behind.
            items = json.dumps([x for post_id, score in feed for x in (score, post_id)])
            args = [self._ttl, items, computed_at, window, reason]
            self._script(
                keys=[key, key + ":next", feedmeta_key(user_id, self._prefix)],
                args=args,
                client=pipe,
            )


class WriteFeeds(beam.PTransform):
    """Writes ``(userId, [(postId, score), ...])`` feeds, or :class:`FeedUpdate`, to
    Redis, each replaced atomically, never by one of an earlier window.

    Args:
        redis_url: the Redis to write to; ``REDIS_URL`` by default.
        prefix: prepended to every key (tests and side-by-side deployments).
        ttl: seconds a feed lives (default 6 h); a feed not rewritten in time disappears.
        batch_size: feeds per round trip.
        window: the engagement window ``(start, end)``, epoch seconds, the feeds were
            computed from; stored in each ``feedmeta:{userId}`` (empty when not given).
            A :class:`FeedUpdate` brings its own window and reason.
        reason: why they were computed, one of :data:`REASONS`.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        prefix: str = "",
        ttl: int = 6 * 3600,
        batch_size: int = 500,
        window: tuple[float, float] | None = None,
        reason: str = "schedule",
    ) -> None:
        super().__init__()
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._redis_url = redis_url
        self._prefix = prefix
        self._ttl = ttl
        self._batch_size = batch_size
        self._window = window_text(window) if window is not None else ""
        self._reason = reason

    def expand(self, feeds: beam.PCollection) -> beam.pvalue.PDone:
        _ = feeds | "WriteFeedsToRedis" >> beam.ParDo(
            _WriteFeedsFn(
                self._redis_url,
                self._prefix,
                self._ttl,
                self._batch_size,
                self._window,
                self._reason,
            )
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


def read_feedmeta(client: Any, user_id: str, prefix: str = "") -> dict[str, str]:
    """A feed's metadata (``computedAt``, ``window``, ``reason``), empty when there is none."""
    return dict(client.hgetall(feedmeta_key(user_id, prefix)))


def read_all_feeds(
    client: Any, prefix: str = "", *, batch: int = 1000
) -> dict[str, list[tuple[str, float]]]:
    """Every feed under ``prefix`` (SCAN, never KEYS), by user id, each best first."""
    start = len(f"{prefix}feed:")
    users = [key[start:] for key in client.scan_iter(match=f"{_escape(prefix)}feed:*", count=batch)]
    return {user: read_feed(client, user, prefix) for user in users}


def purge_feeds(client: Any, prefix: str = "", *, batch: int = 1000) -> Iterator[int]:
    """Deletes every feed under ``prefix``, and its metadata, with SCAN (never KEYS) and
    UNLINK.

    Yields the running count of deleted feeds after each batch, for progress.
    """
    deleted = 0
    keys: list[str] = []
    start = len(f"{prefix}feed:")

    def unlink() -> int:
        metas = [feedmeta_key(key[start:], prefix) for key in keys]
        pipe = client.pipeline(transaction=False)
        pipe.unlink(*keys)
        pipe.unlink(*metas)
        feeds, _ = pipe.execute()
        return int(feeds)

    for key in client.scan_iter(match=f"{_escape(prefix)}feed:*", count=batch):
        keys.append(key)
        if len(keys) >= batch:
            deleted += unlink()
            keys = []
            yield deleted
    if keys:
        deleted += unlink()
    yield deleted


def _escape(pattern: str) -> str:
    """Escapes glob characters of a literal prefix for SCAN MATCH."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in pattern)
