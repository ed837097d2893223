"""Engagement scoring: posts' views, likes and comments in event-time sliding windows.

The business logic is plain functions (:func:`engagement_score`, :func:`recency_decay`,
:func:`post_score`, :func:`personal_score`, :func:`top_k`, :func:`sliding_windows`),
tested without Beam. :class:`ScorePosts` wires them:

    engagement events ─► CountPerPostHour ─► StampHours ─► SplitTooLate ─┬─► Window ─► ...
    (post_viewed,        (per bundle)                                  └─► too late
     post_liked,
     comment_added)     ... ─► SumPerPost ─► PostEngagement per post, window and pane

Beam's event-time windowing costs ~20 us per element, so events are first counted per
``(postId, hour)`` inside each bundle (the hour is the windows' period, so every event
of an hour belongs to the same sliding windows) and only those partial counts enter the
window machinery: early panes (processing time), the on-time pane (watermark) and late
panes (each late element, within the allowed lateness), accumulating.

Data later than the allowed lateness is not silently dropped by the window machinery:
:class:`ScorePosts` sends it to its ``too_late`` output (counted in the metric
``engagement_too_late``), decided by a stateful step that learns how far the watermark
has gone from event-time timers, spread over a few keys by post (each told of every
bundle's periods, so each learns the watermark as one key would). Beam's own allowed
lateness is set one period wider than the configured one, so an element the step let
through just before it learned of the watermark is still counted rather than dropped
(the step's knowledge lags the real watermark by its timer firings; a watermark that
jumps more than one period ahead of them within one bundle could still make Beam drop an
element). In a batch run (a backfill)
nothing is late: there is no ``SplitTooLate`` step and Beam's default trigger is used.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow, SlidingWindows, TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from blogflow.transforms.combining import CombinePerBundle

__all__ = [
    "ENGAGEMENT_TYPES",
    "CountEngagementFn",
    "TOO_LATE",
    "TOO_LATE_SHARDS",
    "PostEngagement",
    "ScorePosts",
    "ScoringConfig",
    "TooLate",
    "bucket_start",
    "engagement_score",
    "personal_score",
    "post_period_kind",
    "post_score",
    "recency_decay",
    "sliding_windows",
    "too_late_shard",
    "top_k",
]

#: The event types that count as engagement, in the order of the counts tuple.
ENGAGEMENT_TYPES = ("post_viewed", "post_liked", "comment_added")
_KIND = {event_type: kind for kind, event_type in enumerate(ENGAGEMENT_TYPES)}

#: Tag of :class:`ScorePosts`' output for data later than the allowed lateness.
TOO_LATE = "too_late"

#: (views, likes, comments)
Counts = tuple[int, int, int]

HOUR = 3600
DAY = 24 * HOUR


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Every weight, window and limit of feed scoring; the defaults are the product's.

    Attributes:
        window_size: length of the sliding engagement windows, seconds.
        window_period: how often a window starts, seconds; also the pre-aggregation bucket.
        allowed_lateness: how late (after a window's end, by the watermark) data is
            still counted, seconds.
        early_firing: seconds of processing time between early panes of a window.
        view_weight, like_weight, comment_weight: weights of the log-scaled counts.
        half_life: recency decay: a post's score halves every ``half_life`` seconds
            after its ``publishedAt``.
        author_boost: a post by an author the user follows scores ``1 + author_boost``
            times as much.
        tag_boost: each followed tag of the post adds ``tag_boost`` to that factor.
        active_days: a user with any event in the last ``active_days`` days is active.
        feed_size: posts per feed (top K).
        candidates: how many of the best posts are considered for every feed.
        feed_ttl: seconds a written feed lives in Redis.
    """

    window_size: int = DAY
    window_period: int = HOUR
    allowed_lateness: int = HOUR
    early_firing: int = 60
    view_weight: float = 1.0
    like_weight: float = 4.0
    comment_weight: float = 8.0
    half_life: float = 12 * HOUR
    author_boost: float = 1.0
    tag_boost: float = 0.5
    active_days: int = 7
    feed_size: int = 50
    candidates: int = 5000
    feed_ttl: int = 6 * HOUR

    def __post_init__(self) -> None:
        for name in ("window_size", "window_period", "half_life", "feed_size", "candidates"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("allowed_lateness", "early_firing", "active_days", "feed_ttl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.window_size % self.window_period:
            raise ValueError(
                f"window_size ({self.window_size}) must be a multiple of window_period "
                f"({self.window_period})"
            )
        if self.allowed_lateness % self.window_period:
            raise ValueError(
                f"allowed_lateness ({self.allowed_lateness}) must be a multiple of "
                f"window_period ({self.window_period})"
            )
        for name in ("view_weight", "like_weight", "comment_weight", "author_boost", "tag_boost"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")


# ------------------------------------------------------------------------- pure logic


def bucket_start(timestamp: float, period: int) -> int:
    """The start of the ``period``-long bucket (aligned to the epoch) ``timestamp`` is in."""
    return int(timestamp // period) * period


def sliding_windows(timestamp: float, size: int, period: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` sliding windows that contain ``timestamp``, oldest first.

    The same windows Beam's ``SlidingWindows(size, period)`` assigns (offset 0).
    """
    last = bucket_start(timestamp, period)
    return [(start, start + size) for start in range(last - size + period, last + 1, period)]


def engagement_score(counts: Counts, config: ScoringConfig) -> float:
    """Weighted, log-scaled engagement: a post's thousandth view adds less than its first."""
    views, likes, comments = counts
    return (
        config.view_weight * math.log1p(views)
        + config.like_weight * math.log1p(likes)
        + config.comment_weight * math.log1p(comments)
    )


def recency_decay(age: float, half_life: float) -> float:
    """1.0 at publication, halving every ``half_life`` seconds; a future post counts as new."""
    return 0.5 ** (max(age, 0.0) / half_life)


def post_score(counts: Counts, published_at: float, at: float, config: ScoringConfig) -> float:
    """A post's score at time ``at``: its engagement, decayed by the age of the post."""
    return engagement_score(counts, config) * recency_decay(at - published_at, config.half_life)


def personal_score(
    score: float, *, author_followed: bool, tags_followed: int, config: ScoringConfig
) -> float:
    """A post's score for one user: boosted for a followed author and each followed tag."""
    boost = 1.0 + (config.author_boost if author_followed else 0.0)
    return score * (boost + config.tag_boost * tags_followed)


def top_k(scored: Iterable[tuple[str, float]], k: int) -> list[tuple[str, float]]:
    """The ``k`` best ``(id, score)`` pairs, best first; ties go to the smaller id.

    Deterministic whatever the input order, so a streamed and a backfilled feed agree.
    """
    best = sorted([(-score, item) for item, score in scored])[:k]
    return [(item, -negated) for negated, item in best]


# ---------------------------------------------------------------------------- combining


class CountEngagementFn(beam.CombineFn):
    """Counts engagement kinds: input a kind index, accumulator ``[views, likes, comments]``."""

    def create_accumulator(self) -> list[int]:
        return [0, 0, 0]

    def add_input(self, counts: list[int], kind: int) -> list[int]:
        counts[kind] += 1
        return counts

    def merge_accumulators(self, accumulators: Iterable[list[int]]) -> list[int]:
        merged = [0, 0, 0]
        for views, likes, comments in accumulators:
            merged[0] += views
            merged[1] += likes
            merged[2] += comments
        return merged

    def extract_output(self, counts: list[int]) -> Counts:
        return (counts[0], counts[1], counts[2])


class _SumCountsFn(beam.CombineFn):
    """Sums ``(views, likes, comments)`` tuples."""

    def create_accumulator(self) -> Counts:
        return (0, 0, 0)

    def add_input(self, total: Counts, counts: Counts) -> Counts:
        return (total[0] + counts[0], total[1] + counts[1], total[2] + counts[2])

    def merge_accumulators(self, accumulators: Iterable[Counts]) -> Counts:
        views = likes = comments = 0
        for v, lk, c in accumulators:
            views += v
            likes += lk
            comments += c
        return (views, likes, comments)

    def extract_output(self, total: Counts) -> Counts:
        return total


class PostEngagement(NamedTuple):
    """A post's engagement in one sliding window, as one pane reported it.

    Attributes:
        post_id: the post.
        window_start, window_end: the window, epoch seconds, ``[start, end)``.
        counts: ``(views, likes, comments)`` so far in the window (panes accumulate).
        timing: ``"EARLY"``, ``"ON_TIME"``, ``"LATE"`` or ``"UNKNOWN"`` (batch).
        pane_index: 0 for the first pane of the window, then 1, 2, ...
    """

    post_id: str
    window_start: int
    window_end: int
    counts: Counts
    timing: str
    pane_index: int


class TooLate(NamedTuple):
    """Engagement that came after the allowed lateness of every window it belongs to.

    Attributes:
        post_id: the post.
        hour: start of the period it happened in, epoch seconds.
        counts: ``(views, likes, comments)`` of that post and period in the late bundle.
    """

    post_id: str
    hour: int
    counts: Counts


_TIMING_NAMES = {0: "EARLY", 1: "ON_TIME", 2: "LATE", 3: "UNKNOWN"}

#: Keys the too-late check is spread over: a post's partial counts go to one of them, by
#: a CRC-32 of its id, so the stateful step runs on up to this many workers at once.
TOO_LATE_SHARDS = 8


def too_late_shard(post_id: str, shards: int = TOO_LATE_SHARDS) -> str:
    """The key of the too-late check that ``post_id``'s counts go to (stable everywhere:
    a CRC-32 of the id, never Python's ``hash``)."""
    return str(zlib.crc32(post_id.encode("utf-8")) % shards)


class _Probe(NamedTuple):
    """What one bundle tells every shard of the too-late check: the first and the last
    period it had counts of (epoch seconds), so each shard arms its watermark timer as if
    it had seen the whole bundle."""

    first_hour: int
    last_hour: int


class _ShardHoursFn(beam.DoFn):
    """Keys each ``((postId, hour), counts)`` of a bundle by its post's shard, stamped
    with its hour, and at the bundle's end sends every shard a :class:`_Probe` of the
    bundle's periods."""

    def __init__(self, shards: int) -> None:
        self._shards = shards

    def start_bundle(self) -> None:
        self._first: int | None = None
        self._last: int | None = None

    def process(self, element: tuple[tuple[str, int], list[int]]) -> Iterator[TimestampedValue]:
        (post_id, hour), (views, likes, comments) = element
        if self._first is None or hour < self._first:
            self._first = hour
        if self._last is None or hour > self._last:
            self._last = hour
        key = too_late_shard(post_id, self._shards)
        yield TimestampedValue((key, (post_id, hour, (views, likes, comments))), hour)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._first is None or self._last is None:
            return
        probe = _Probe(self._first, self._last)
        stamp = Timestamp(self._first)
        for shard in range(self._shards):
            yield WindowedValue((str(shard), probe), stamp, (GlobalWindow(),))


class _SplitTooLateFn(beam.DoFn):
    """Splits off partial counts the window machinery would drop as too late.

    Sees the partial counts (few: one per post, hour and bundle) keyed by
    :func:`too_late_shard`, so the work spreads over :data:`TOO_LATE_SHARDS` keys, and
    every shard a :class:`_Probe` of every bundle. A DoFn cannot read the watermark, so
    each shard learns it from an event-time timer: the timer is set at the earliest expiry
    (the newest window's end + the allowed lateness) of the data seen and, once fired,
    beats every period up to the newest expiry seen plus one period. ``reached`` is the
    last beat: the watermark is at least there, and data that expired before it is too
    late. The probes arm every shard's timer as the bundles' data would arm one key's,
    so each shard knows the watermark as well as one key seeing everything would, also
    for a post it has never seen.
    """

    REACHED = ReadModifyWriteStateSpec("reached", PickleCoder())
    NEWEST = ReadModifyWriteStateSpec("newest", PickleCoder())
    ARMED = ReadModifyWriteStateSpec("armed", PickleCoder())
    PROBE = TimerSpec("probe", TimeDomain.WATERMARK)

    def __init__(self, window_size: int, window_period: int, allowed_lateness: int) -> None:
        self._horizon = window_size + allowed_lateness
        self._period = window_period
        self._too_late = Metrics.counter("blogflow", "engagement_too_late")

    def process(
        self,
        element: tuple[str, tuple[str, int, Counts] | _Probe],
        reached_state=beam.DoFn.StateParam(REACHED),
        newest_state=beam.DoFn.StateParam(NEWEST),
        armed_state=beam.DoFn.StateParam(ARMED),
        probe=beam.DoFn.TimerParam(PROBE),
    ) -> Iterator[Any]:
        _, value = element
        reached = reached_state.read()
        if isinstance(value, _Probe):
            first = value.first_hour + self._horizon
            if reached is not None:
                first = max(first, reached)  # what was too late arms nothing
            last = value.last_hour + self._horizon
            self._learn(first, reached, newest_state, armed_state, probe)
            self._learn(last, reached, newest_state, armed_state, probe)
            return
        post_id, hour, counts = value
        expiry = hour + self._horizon
        if reached is not None and expiry < reached:
            self._too_late.inc(sum(counts))
            yield beam.pvalue.TaggedOutput(TOO_LATE, TooLate(post_id, hour, counts))
            return
        self._learn(expiry, reached, newest_state, armed_state, probe)
        yield post_id, counts

    def _learn(self, expiry: int, reached: int | None, newest_state, armed_state, probe) -> None:
        """Note data that expires at ``expiry`` (not too late): the newest expiry, and the
        timer armed at the earliest beat."""
        newest = newest_state.read()
        if newest is None or expiry > newest:
            newest_state.write(expiry)
        armed = armed_state.read()
        beat = expiry if reached is None else min(expiry, reached + self._period)
        if armed is None or beat < armed:
            probe.set(beat)
            armed_state.write(beat)

    @on_timer(PROBE)
    def _watermark_reached(
        self,
        fired=beam.DoFn.TimestampParam,
        reached_state=beam.DoFn.StateParam(REACHED),
        newest_state=beam.DoFn.StateParam(NEWEST),
        armed_state=beam.DoFn.StateParam(ARMED),
        probe=beam.DoFn.TimerParam(PROBE),
    ) -> None:
        reached = int(fired.micros // 1_000_000)
        reached_state.write(reached)
        beat = reached + self._period
        if beat <= (newest_state.read() or reached) + self._period:
            probe.set(beat)
            armed_state.write(beat)
        else:
            armed_state.clear()


class _ToPostEngagementFn(beam.DoFn):
    def process(
        self,
        element: tuple[str, Counts],
        window=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ) -> Iterator[PostEngagement]:
        post_id, counts = element
        yield PostEngagement(
            post_id,
            int(window.start),
            int(window.end),
            counts,
            _TIMING_NAMES.get(pane.timing, "UNKNOWN"),
            pane.index,
        )


def post_period_kind(period: int):  # noqa: ANN202 - a closure, typed by its use
    """The ``key_value_fn`` that keys an engagement event by ``(postId, period start)``
    with its kind's index, for :class:`CountEngagementFn` in a ``CombinePerBundle``."""
    kind_of = _KIND

    def key_value(event: Any) -> tuple[tuple[str, int], int]:
        return (
            (event.data.postId, int(event.occurredAt.timestamp() // period) * period),
            kind_of[event.type],
        )

    return key_value


def _stamp_hour(element: tuple[tuple[str, int], list[int]]) -> TimestampedValue:
    (post_id, hour), (views, likes, comments) = element
    return TimestampedValue((post_id, (views, likes, comments)), hour)


class ScorePosts(beam.PTransform):
    """Counts each post's engagement in event-time sliding windows.

    Input: engagement events (``post_viewed``, ``post_liked``, ``comment_added``),
    stamped with their event time, in the global window (as ``ParseEvents`` emits them).
    Output: a dict; ``["engagement"]`` holds a
    :class:`PostEngagement` per post, window and pane (early panes every
    ``config.early_firing`` seconds of processing time, the on-time pane, a late pane
    per late element within ``config.allowed_lateness``; accumulating; a batch run has
    one pane per window and nothing too late), and
    ``[TOO_LATE]`` holds :class:`TooLate` for data after the allowed lateness.

    Args:
        config: windows, lateness and early firings.
        streaming: whether the pipeline streams, as its pipeline module decided.
    """

    def __init__(self, config: ScoringConfig | None = None, *, streaming: bool) -> None:
        super().__init__()
        self._config = config or ScoringConfig()
        self._streaming = streaming

    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        config = self._config
        hours = events | "CountPerPostHour" >> CombinePerBundle(
            CountEngagementFn(), key_value_fn=post_period_kind(config.window_period)
        )
        if self._streaming:
            split = (
                hours
                | "StampHours"
                >> beam.ParDo(_ShardHoursFn(TOO_LATE_SHARDS)).with_output_types(tuple[str, Any])
                | "SplitTooLate"
                >> beam.ParDo(
                    _SplitTooLateFn(
                        config.window_size, config.window_period, config.allowed_lateness
                    )
                ).with_outputs(TOO_LATE, main="engagement")
            )
            counted, too_late = split.engagement, split[TOO_LATE]
            windowing: trigger.TriggerFn = trigger.AfterWatermark(
                early=trigger.AfterProcessingTime(int(config.early_firing)),
                late=trigger.AfterCount(1),
            )
            # One period wider than the configured lateness: see the module docstring.
            lateness = config.allowed_lateness + config.window_period
        else:
            # A batch run has no processing time (early panes) and no late data; the
            # default trigger also takes Beam's fast path (~3x less CPU here).
            counted = hours | "StampHours" >> beam.Map(_stamp_hour)
            too_late = events.pipeline | "NothingTooLate" >> beam.Create([])
            windowing = trigger.DefaultTrigger()
            # Nothing is late in a batch run: no lateness, so no runner fires a window
            # again when it closes (Prism fires an accumulating window with lateness once
            # more then, measured).
            lateness = 0
        engagement = (
            counted
            | "Window"
            >> beam.WindowInto(
                SlidingWindows(config.window_size, config.window_period),
                trigger=windowing,
                accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
                allowed_lateness=Duration(lateness),
            )
            | "SumPerPost" >> beam.CombinePerKey(_SumCountsFn())
            | "ToPostEngagement" >> beam.ParDo(_ToPostEngagementFn())
        )
        return {"engagement": engagement, TOO_LATE: too_late}
