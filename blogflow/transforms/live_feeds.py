"""The live feed job: every active user's feed kept current, on a schedule and on events.

    engagement (counted per post, period and bundle), post events ─► PostSnapshots
    PostSnapshots ─► LatestPerBundle ─► RefreshIndex (keyed by refresh)
    RefreshIndex and post events (to every shard), user events (to theirs) ─► FeedShards

A *refresh* comes every ``window_period``: the engagement window ending there.
:class:`PostSnapshotsFn` keeps each post's versions and its engagement per period in
state and, whenever they change, emits a :class:`Snapshot` for each refresh the change
touches: the post's candidate as of that end (what a backfill ``--as-of end`` makes of
it), numbered so a later one replaces an earlier one.
:class:`RefreshIndexFn` keeps the latest snapshot of every post of a refresh and sends
the :class:`Refresh` (its best ``candidates``) when the watermark passes its end, and
again after late data until it closes (its end plus the allowed lateness).

:class:`FeedShardFn` holds the users of one shard (a CRC-32 of the user id, so no key is
hot): their follows and when they were last seen, the indexes of the refreshes that may
still change, and the post events since the latest. A refresh rebuilds the feed of every
user of the shard active at it (reason ``schedule``); a follow rebuilds that user's feed, a
user who becomes active gets one, a post published, updated or deleted since the latest
refresh rebuilds the feeds it may enter or leave (reason ``event``), from the latest index
patched with those posts.

Every step is a stateful DoFn with event-time timers, none a triggered window: Prism
(2.77) fires a window with a custom trigger or allowed lateness only when the watermark
jumps (TestStream), never as a live source's watermark moves (measured). The pure logic
(:func:`snapshot`, :func:`profile_at`, :func:`patch_index`, :func:`refreshes_holding`,
:func:`best_candidates`) is tested without Beam.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from blogflow.io.feeds import FeedUpdate
from blogflow.transforms.combining import CombinePerBundle
from blogflow.transforms.feeds import (
    POST_TYPES,
    Candidate,
    CandidateIndex,
    PostInfo,
    UserProfile,
    build_feed,
    is_active,
    post_info,
    to_candidate,
)
from blogflow.transforms.scoring import (
    ENGAGEMENT_TYPES,
    TOO_LATE,
    CountEngagementFn,
    ScoringConfig,
    TooLate,
    bucket_start,
    post_period_kind,
)

__all__ = [
    "FEED_SHARDS",
    "REFRESHES",
    "FeedShardFn",
    "LatestSnapshotsFn",
    "LiveFeeds",
    "PostSnapshotsFn",
    "Reader",
    "Refresh",
    "RefreshIndexFn",
    "Snapshot",
    "best_candidates",
    "feed_shard",
    "patch_index",
    "profile_at",
    "refreshes_holding",
    "snapshot",
]

#: Shards the users are spread over by default.
FEED_SHARDS = 16
#: Tag of :class:`LiveFeeds`' output of every scheduled feed, ``(userId, end, feed)``,
#: when asked for (``emit_refreshes``): what the parity test compares with backfills.
REFRESHES = "refreshes"

# What an element of the stateful steps is.
_ENGAGEMENT, _POST, _USER, _REFRESH = "engagement", "post", "user", "refresh"
#: Before any refresh.
_NEVER = -(2**62)

#: (views, likes, comments)
Counts = tuple[int, int, int]
_SEEN, _AUTHOR, _TAG = 0, 1, 2


def feed_shard(user_id: str, shards: int) -> int:
    """The shard that holds ``user_id`` (a CRC-32, stable everywhere)."""
    return zlib.crc32(user_id.encode("utf-8")) % shards


def refreshes_holding(at: float, config: ScoringConfig) -> range:
    """The refreshes (window ends) whose window ``[end - size, end)`` holds time ``at``: a
    publication's, or a period's (its start)."""
    first = bucket_start(at, config.window_period) + config.window_period
    last = bucket_start(at + config.window_size, config.window_period)
    return range(first, last + 1, config.window_period)


def _version_at(versions: list[PostInfo], end: float) -> PostInfo | None:
    """The latest of a post's versions (sorted) as of ``end``: events up to it count."""
    latest = None
    for info in versions:
        if info.version[0] > end:
            break
        latest = info
    return latest


def snapshot(
    post_id: str,
    versions: list[PostInfo],
    counts: tuple[int, int, int] | None,
    end: int,
    config: ScoringConfig,
) -> Candidate | None:
    """A post's candidate for the refresh at ``end``: what a backfill ``--as-of end`` makes
    of the post's events up to ``end`` and its engagement in the window ending there."""
    return to_candidate(post_id, counts, _version_at(versions, end), end, config, window_end=end)


class Snapshot(NamedTuple):
    """What one post contributes to the refresh at ``end``.

    Attributes:
        end: the refresh: the end of the engagement window, epoch seconds.
        post_id: the post.
        seq: increases with every snapshot of the post: the greatest is the current one.
        candidate: the post's candidate, or None when it is none (any more).
    """

    end: int
    post_id: str
    seq: int
    candidate: Candidate | None


@dataclasses.dataclass
class _PostState:
    versions: list[PostInfo] = dataclasses.field(default_factory=list)
    #: Engagement per period (its start), for the refreshes still open.
    periods: dict[int, Counts] = dataclasses.field(default_factory=dict)
    #: The candidate last sent for each open refresh.
    sent: dict[int, Candidate | None] = dataclasses.field(default_factory=dict)
    seq: int = 0
    #: Refreshes up to here take no more data (their end + the allowed lateness passed).
    closed: int = _NEVER
    #: When the post's timer is set to fire.
    armed: int | None = None


def _micros_before(end: int) -> Timestamp:
    return Timestamp(micros=end * 1_000_000 - 1)


def _counts_at(periods: dict[int, Counts], end: int, config: ScoringConfig) -> Counts | None:
    """The engagement of the window ending at ``end``, None when there was none."""
    start = end - config.window_size
    inside = [c for p, c in periods.items() if start <= p < end]
    if not inside:
        return None
    return (sum(c[0] for c in inside), sum(c[1] for c in inside), sum(c[2] for c in inside))


class PostSnapshotsFn(beam.DoFn):
    """Per post: its versions and engagement in state, a :class:`Snapshot` out for every
    refresh the post's candidate changed for.

    Input, keyed by post id: ``("post", PostInfo)`` for each post event and
    ``("engagement", (period, counts))`` for each bundle's counts of the post in a period
    (its start). Each change sends at once the snapshots of every refresh it changes,
    stamped just before the refresh's end: engagement changes the refreshes whose window
    holds its period, a post event every refresh from its time on (a refresh counts the
    events up to its end; a post published in a window is a candidate of its refresh even
    with no engagement). :class:`RefreshIndexFn` sends a refresh when the watermark
    passes its end, so a snapshot sent before is in it, and one sent after (late data)
    sends it again. An event-time timer clears the state of refreshes once they are
    closed (their end plus the allowed lateness); engagement that comes after every
    refresh of its period closed goes to :data:`~blogflow.transforms.scoring.TOO_LATE`.
    A post's latest version stays, for engagement that comes later.
    """

    STATE = ReadModifyWriteStateSpec("post", PickleCoder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)

    def __init__(self, config: ScoringConfig) -> None:
        self._config = config
        self._snapshots = Metrics.counter("blogflow", "feed_snapshots")
        self._too_late = Metrics.counter("blogflow", "engagement_too_late")

    def process(
        self,
        element: tuple[str, tuple[str, Any]],
        state=beam.DoFn.StateParam(STATE),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ) -> Iterator[Any]:
        post_id, (kind, value) = element
        post: _PostState = state.read() or _PostState()
        changed = self._apply(post_id, post, kind, value)
        if isinstance(changed, TooLate):
            self._too_late.inc(sum(changed.counts))
            yield beam.pvalue.TaggedOutput(TOO_LATE, changed)
        elif changed is not None:
            yield from self._send(post_id, post, changed)
            self._arm(post, expire)
            state.write(post)

    def _apply(self, post_id: str, post: _PostState, kind: str, value: Any) -> Any:
        """Applies one input to the post's state: the refreshes it changes, TooLate, or
        None (a post event seen before)."""
        config = self._config
        if kind == _ENGAGEMENT:
            period, counts = value
            if period + config.window_size <= post.closed:
                return TooLate(post_id, period, counts)
            held = post.periods.get(period, (0, 0, 0))
            post.periods[period] = (held[0] + counts[0], held[1] + counts[1], held[2] + counts[2])
            return list(refreshes_holding(period, config))
        info: PostInfo = value
        if any(v.version == info.version for v in post.versions):
            return None
        post.versions = sorted([*post.versions, info], key=lambda v: v.version)
        return sorted(e for e in self._due(post) | set(post.sent) if e >= info.version[0])

    def _due(self, post: _PostState) -> set[int]:
        """The refreshes the post has engagement or a publication in."""
        ends: set[int] = set()
        for period in post.periods:
            ends.update(refreshes_holding(period, self._config))
        for version in post.versions:
            if not version.deleted:
                ends.update(refreshes_holding(version.published_at, self._config))
        return ends

    def _arm(self, post: _PostState, expire: Any) -> None:
        """Sets the timer at the close of the latest open refresh the post is in."""
        latest = max((e for e in (*post.sent, *self._due(post)) if e > post.closed), default=None)
        if latest is None:
            return
        at = latest + self._config.allowed_lateness
        if post.armed is None or at > post.armed:
            expire.set(Timestamp(at))
            post.armed = at

    def _send(self, post_id: str, post: _PostState, ends: Iterable[int]) -> Iterator[Any]:
        for end in ends:
            if end <= post.closed:
                continue
            counts = _counts_at(post.periods, end, self._config)
            candidate = snapshot(post_id, post.versions, counts, end, self._config)
            if end in post.sent and post.sent[end] == candidate:
                continue
            if end not in post.sent and candidate is None:
                continue  # nothing sent to take back
            post.seq += 1
            post.sent[end] = candidate
            self._snapshots.inc()
            yield TimestampedValue(Snapshot(end, post_id, post.seq, candidate), _micros_before(end))

    @on_timer(EXPIRE)
    def _expire(
        self,
        fired=beam.DoFn.TimestampParam,
        state=beam.DoFn.StateParam(STATE),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ) -> None:
        post: _PostState = state.read() or _PostState()
        post.armed = None
        post.closed = max(
            post.closed, int(fired.micros // 1_000_000) - self._config.allowed_lateness
        )
        size = self._config.window_size
        post.periods = {p: c for p, c in post.periods.items() if p + size > post.closed}
        post.sent = {e: c for e, c in post.sent.items() if e > post.closed}
        # The latest version as of the oldest open refresh, and every later one.
        older = [v for v in post.versions if v.version[0] <= post.closed]
        post.versions = older[-1:] + [v for v in post.versions if v.version[0] > post.closed]
        self._arm(post, expire)
        state.write(post)


class Refresh(NamedTuple):
    """The candidates of one refresh, as they stand when it goes out.

    Attributes:
        end: the refresh: the end of its engagement window, epoch seconds.
        candidates: its best candidates.
    """

    end: int
    candidates: CandidateIndex


class LatestSnapshotsFn(beam.CombineFn):
    """The latest :class:`Snapshot` of each post of one refresh, by post id."""

    def create_accumulator(self) -> dict[str, Snapshot]:
        return {}

    def add_input(self, latest: dict[str, Snapshot], snap: Snapshot) -> dict[str, Snapshot]:
        held = latest.get(snap.post_id)
        if held is None or snap.seq > held.seq:
            latest[snap.post_id] = snap
        return latest

    def merge_accumulators(
        self, accumulators: Iterable[dict[str, Snapshot]]
    ) -> dict[str, Snapshot]:
        merged: dict[str, Snapshot] = {}
        for latest in accumulators:
            for snap in latest.values():
                self.add_input(merged, snap)
        return merged

    def extract_output(self, latest: dict[str, Snapshot]) -> dict[str, Snapshot]:
        return latest


def best_candidates(latest: dict[str, Snapshot], n: int) -> CandidateIndex:
    """The best ``n`` candidates of the latest snapshots (ties to the smaller post id)."""
    candidates = [s.candidate for s in latest.values() if s.candidate is not None]
    candidates.sort(key=lambda c: (-c.score, c.post_id))
    return CandidateIndex(candidates[:n])


@dataclasses.dataclass
class _RefreshStatus:
    armed: bool = False
    sent_at: float | None = None
    pending: bool = False
    closed: bool = False


class RefreshIndexFn(beam.DoFn):
    """Per refresh: the latest snapshot of each post in state, the :class:`Refresh` out
    once the watermark passes its end, and again after late snapshots (at most once per
    ``late_every`` seconds, and at its close if one is still to go out).

    Input, keyed by the refresh's end: ``(end, {postId: Snapshot})`` as
    :class:`LatestSnapshotsFn` combined them in a bundle. A refresh closes when the
    watermark passes its end plus the allowed lateness; what comes after is counted
    (``feed_snapshots_too_late``) and dropped, and only a closed mark stays in state.
    """

    LATEST = ReadModifyWriteStateSpec("latest", PickleCoder())
    STATUS = ReadModifyWriteStateSpec("status", PickleCoder())
    OUT = TimerSpec("out", TimeDomain.WATERMARK)
    CLOSE = TimerSpec("close", TimeDomain.WATERMARK)

    def __init__(self, config: ScoringConfig, late_every: float) -> None:
        self._n = config.candidates
        self._lateness = config.allowed_lateness
        self._late_every = late_every
        self._too_late = Metrics.counter("blogflow", "feed_snapshots_too_late")

    def process(
        self,
        element: tuple[int, dict[str, Snapshot]],
        latest_state=beam.DoFn.StateParam(LATEST),
        status_state=beam.DoFn.StateParam(STATUS),
        out=beam.DoFn.TimerParam(OUT),
        close=beam.DoFn.TimerParam(CLOSE),
    ) -> Iterator[Refresh]:
        end, snapshots = element
        status = status_state.read() or _RefreshStatus()
        if status.closed:
            self._too_late.inc(len(snapshots))
            return
        combine = LatestSnapshotsFn()
        latest = combine.merge_accumulators([latest_state.read() or {}, snapshots])
        latest_state.write(latest)
        if not status.armed:
            out.set(Timestamp(end))
            close.set(Timestamp(end + self._lateness))
            status.armed = True
        if status.sent_at is not None:  # late
            status.pending = True
            if time.time() - status.sent_at >= self._late_every:
                yield self._refresh(end, latest, status)
        status_state.write(status)

    def _refresh(self, end: int, latest: dict[str, Snapshot], status: _RefreshStatus) -> Refresh:
        status.sent_at, status.pending = time.time(), False
        return Refresh(end, best_candidates(latest, self._n))

    @on_timer(OUT)
    def _out(
        self,
        key=beam.DoFn.KeyParam,
        latest_state=beam.DoFn.StateParam(LATEST),
        status_state=beam.DoFn.StateParam(STATUS),
    ) -> Iterator[Refresh]:
        status = status_state.read() or _RefreshStatus()
        yield self._refresh(key, latest_state.read() or {}, status)
        status_state.write(status)

    @on_timer(CLOSE)
    def _close(
        self,
        key=beam.DoFn.KeyParam,
        latest_state=beam.DoFn.StateParam(LATEST),
        status_state=beam.DoFn.StateParam(STATUS),
    ) -> Iterator[Refresh]:
        status = status_state.read() or _RefreshStatus()
        if status.pending:
            yield self._refresh(key, latest_state.read() or {}, status)
        latest_state.clear()
        status_state.write(_RefreshStatus(armed=True, closed=True))


@dataclasses.dataclass
class Reader:
    """A user as their shard knows them.

    Attributes:
        authors, tags: what they follow, each with the time of its first follow.
        seen: the latest time they were seen in each period (by the refresh that period
            ends at) that a refresh may still need.
        seen_before: the latest time they were seen before those periods.
    """

    authors: dict[str, float] = dataclasses.field(default_factory=dict)
    tags: dict[str, float] = dataclasses.field(default_factory=dict)
    seen: dict[int, float] = dataclasses.field(default_factory=dict)
    seen_before: float = 0.0

    def last_seen(self, until: float = math.inf) -> float:
        """The latest time the user was seen, up to ``until``."""
        recent = [t for t in self.seen.values() if t <= until]
        return max([self.seen_before, *recent])


def profile_at(user_id: str, reader: Reader, at: float = math.inf) -> UserProfile:
    """What a backfill ``--as-of at`` knows of the user (everything, by default)."""
    return UserProfile(
        user_id,
        frozenset(a for a, t in reader.authors.items() if t <= at),
        frozenset(g for g, t in reader.tags.items() if t <= at),
        reader.last_seen(at),
    )


def patch_index(index: CandidateIndex, live: Iterable[PostInfo]) -> CandidateIndex:
    """``index`` with the posts published, updated or deleted since: a deleted post out,
    an updated one with its new author and tags and its score, a new one with score 0
    (it has no engagement counted yet)."""
    candidates = {c.post_id: c for c in index.ranked}
    for info in live:
        if info.deleted:
            candidates.pop(info.post_id, None)
            continue
        held = candidates.get(info.post_id)
        score = held.score if held is not None else 0.0
        candidates[info.post_id] = Candidate(info.post_id, score, info.author_id, info.tags)
    return CandidateIndex(candidates.values())


def _index_of(indexes: dict[int, CandidateIndex], end: int | None) -> CandidateIndex:
    return indexes[end] if end is not None else CandidateIndex(())


def _follows(reader: Reader, author: str, tags: Iterable[str]) -> bool:
    return author in reader.authors or any(tag in reader.tags for tag in tags)


class FeedShardFn(beam.DoFn):
    """The users of one shard: their profiles in state, their feeds out.

    Input, keyed by shard: ``("user", (userId, time, kind, value))`` for every event of
    a user of the shard, ``("post", PostInfo)`` for every post event and ``("refresh",
    Refresh)`` for every pane of every refresh (both sent to every shard). Output:
    :class:`~blogflow.io.feeds.FeedUpdate`, and with ``emit_refreshes`` every scheduled
    feed as ``(userId, end, feed)`` on :data:`REFRESHES`, computed as a backfill as of
    ``end`` would.
    """

    READERS = ReadModifyWriteStateSpec("readers", PickleCoder())
    INDEXES = ReadModifyWriteStateSpec("indexes", PickleCoder())
    LIVE = ReadModifyWriteStateSpec("live", PickleCoder())
    CLOCK = ReadModifyWriteStateSpec("clock", PickleCoder())

    def __init__(self, config: ScoringConfig, *, emit_refreshes: bool = False) -> None:
        self._config = config
        self._keep = config.allowed_lateness + config.window_period
        self._active_for = config.active_days * 86400
        self._emit_refreshes = emit_refreshes
        self._scheduled = Metrics.counter("blogflow", "feeds_scheduled")
        self._on_event = Metrics.counter("blogflow", "feeds_on_event")
        self._patch_cache: dict[int, tuple[Any, CandidateIndex]] = {}

    def process(
        self,
        element: tuple[int, tuple[str, Any]],
        readers_state=beam.DoFn.StateParam(READERS),
        indexes_state=beam.DoFn.StateParam(INDEXES),
        live_state=beam.DoFn.StateParam(LIVE),
        clock_state=beam.DoFn.StateParam(CLOCK),
    ) -> Iterator[Any]:
        _, (kind, value) = element
        readers: dict[str, Reader] = readers_state.read() or {}
        indexes: dict[int, CandidateIndex] = indexes_state.read() or {}
        live: dict[str, PostInfo] = live_state.read() or {}
        clock: float = clock_state.read() or 0.0
        latest = max(indexes, default=None)
        if kind == _USER:
            at = value[1]
            yield from self._on_user(element[0], readers, indexes, live, max(clock, at), value)
            readers_state.write(readers)
            clock_state.write(max(clock, at))
        elif kind == _POST:
            info: PostInfo = value
            held = live.get(info.post_id)
            if held is None or info.version > held.version:
                before = self._patched(element[0], indexes, latest, live)
                live[info.post_id] = info
                live_state.write(live)
                clock_state.write(max(clock, info.version[0]))
                after = self._patched(element[0], indexes, latest, live)
                now = max(clock, info.version[0])
                yield from self._on_post(readers, before, after, info, latest, now)
        elif not indexes or value.end > max(indexes) - self._keep:  # else closed long since
            refresh: Refresh = value
            indexes[refresh.end] = refresh.candidates
            newest = max(indexes)
            indexes = {e: i for e, i in indexes.items() if e > newest - self._keep}
            indexes_state.write(indexes)
            if refresh.end == newest:
                live = {p: i for p, i in live.items() if i.version[0] > newest}
                live_state.write(live)
                self._fold(readers, newest)
                readers_state.write(readers)
                patched = self._patched(element[0], indexes, newest, live)
                yield from self._rebuild(readers, patched, newest, max(newest, clock), "schedule")
            if self._emit_refreshes:
                yield from self._refreshes(readers, ((refresh.end, refresh.candidates),))

    # ------------------------------------------------------------------ what changes

    def _patched(self, shard: int, indexes, latest: int | None, live) -> CandidateIndex:
        """The latest index patched with the posts since, kept while neither changes (a
        shard's users are rebuilt from it one by one as their events come)."""
        index = _index_of(indexes, latest)
        first = index.ranked[0] if index.ranked else None
        token = (
            latest,
            len(index),
            first,
            len(live),
            max((i.version for i in live.values()), default=None),
        )
        held = self._patch_cache.get(shard)
        if held is None or held[0] != token:
            held = self._patch_cache[shard] = (token, patch_index(index, live.values()))
        return held[1]

    def _on_user(self, shard, readers, indexes, live, now, value) -> Iterator[Any]:
        user_id, at, what, name = value
        reader = readers.get(user_id)
        was_active = reader is not None and reader.last_seen() >= now - self._active_for
        if reader is None:
            reader = readers[user_id] = Reader()
        follows = reader.authors if what == _AUTHOR else reader.tags if what == _TAG else None
        followed = False
        if follows is not None and at < follows.get(name, math.inf):
            followed = name not in follows
            follows[name] = at
        period = self._config.window_period
        bucket = math.ceil(at / period) * period
        if at > reader.seen.get(bucket, -math.inf):
            reader.seen[bucket] = at
        latest = max(indexes, default=None)
        if latest is not None and bucket <= latest - self._keep:  # folded already
            reader.seen_before = max(reader.seen_before, reader.seen.pop(bucket))
        if self._emit_refreshes and latest is not None and at <= latest:
            yield from self._refreshes(
                {user_id: reader}, ((e, i) for e, i in sorted(indexes.items()) if e >= at)
            )
        if followed or not was_active:
            index = self._patched(shard, indexes, latest, live)
            yield from self._rebuild({user_id: reader}, index, latest, now, "event")

    def _on_post(self, readers, before, after, info, latest, now) -> Iterator[Any]:
        old = next((c for c in before.ranked if c.post_id == info.post_id), None)
        if info.deleted and old is None:
            return  # in no index: in no feed
        size = self._config.feed_size
        if info.deleted and old in before.ranked[:size]:
            affected = readers  # in the base ranking: in any feed
        else:
            names = [(old.author_id, old.tags)] if old is not None else []
            if not info.deleted:
                names.append((info.author_id, info.tags))
            affected = {
                u: r for u, r in readers.items() if any(_follows(r, a, t) for a, t in names)
            }
        yield from self._rebuild(affected, after, latest, now, "event")

    def _fold(self, readers: dict[str, Reader], newest: int) -> None:
        """Folds the periods no refresh needs any more; an inactive user keeps only their
        follows and the time they were last seen."""
        for reader in readers.values():
            old = [b for b in reader.seen if b <= newest - self._keep]
            for bucket in old:
                reader.seen_before = max(reader.seen_before, reader.seen.pop(bucket))

    # ----------------------------------------------------------------- what goes out

    def _window(self, end: int | None) -> tuple[float, float] | None:
        return None if end is None else (end - self._config.window_size, end)

    def _rebuild(self, readers, index, end: int | None, now: float, reason: str) -> Iterator[Any]:
        window = self._window(end)
        counter = self._scheduled if reason == "schedule" else self._on_event
        for user_id, reader in readers.items():
            profile = profile_at(user_id, reader)
            if is_active(profile, now, self._config):
                counter.inc()
                yield FeedUpdate(user_id, build_feed(profile, index, self._config), window, reason)

    def _refreshes(self, readers, refreshes: Iterable[tuple[int, CandidateIndex]]) -> Iterator[Any]:
        for end, index in refreshes:
            for user_id, reader in readers.items():
                profile = profile_at(user_id, reader, end)
                if is_active(profile, end, self._config):
                    feed = build_feed(profile, index, self._config)
                    yield beam.pvalue.TaggedOutput(REFRESHES, (user_id, end, feed))


# --------------------------------------------------------------------------- wiring


def _user_element(shards: int):  # noqa: ANN202 - a closure, typed by its use
    def element(event: Any) -> tuple[int, tuple[str, Any]]:
        user_id = event.userId
        if event.type == "user_followed":
            what, name = _AUTHOR, event.data.authorId
        elif event.type == "tag_followed":
            what, name = _TAG, event.data.tag
        else:
            what, name = _SEEN, ""
        return feed_shard(user_id, shards), (_USER, (user_id, event.event_time, what, name))

    return element


def _to_every_shard(shards: int, kind: str):  # noqa: ANN202 - a closure, typed by its use
    def fan_out(value: Any) -> Iterator[tuple[int, tuple[str, Any]]]:
        for shard in range(shards):
            yield shard, (kind, value)

    return fan_out


class LiveFeeds(beam.PTransform):
    """Events in, every active user's feed out whenever it changes.

    Input: events, each once, stamped with their event time, in the global window (as
    :class:`~blogflow.transforms.feeds.DropRedeliveries` emits them), from an unbounded
    source. Output: a dict: ``["feeds"]``
    :class:`~blogflow.io.feeds.FeedUpdate` for :class:`~blogflow.io.feeds.WriteFeeds`,
    ``[TOO_LATE]`` engagement after the allowed lateness, and with ``emit_refreshes``
    ``[REFRESHES]`` (see :class:`FeedShardFn`).

    Every ``window_period``, once the watermark passes a window's end, every user active
    then gets the feed of that window's engagement; late data within the allowed
    lateness refreshes it again (at most once per ``late_every`` seconds). Between
    refreshes a follow, a user's first event in ``active_days`` and a post published,
    updated or deleted rebuild the feeds they change, at once.

    Args:
        config: windows, weights and limits.
        shards: keys the users are spread over.
        late_every: whole seconds of processing time between refreshes by late data.
        emit_refreshes: also output every scheduled feed (tests).
    """

    def __init__(
        self,
        config: ScoringConfig,
        *,
        shards: int = FEED_SHARDS,
        late_every: int = 5,
        emit_refreshes: bool = False,
    ) -> None:
        super().__init__()
        if shards < 1:
            raise ValueError(f"shards must be positive, got {shards}")
        if late_every < 1:
            raise ValueError(f"late_every must be at least 1 (second), got {late_every}")
        self._config = config
        self._shards = shards
        self._late_every = late_every
        self._emit_refreshes = emit_refreshes

    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        config, shards = self._config, self._shards
        engagement = (
            events
            | "Engagement" >> beam.Filter(lambda e: e.type in ENGAGEMENT_TYPES)
            | "CountPerPostPeriod"
            >> CombinePerBundle(
                CountEngagementFn(), key_value_fn=post_period_kind(config.window_period)
            )
            | "KeyCounts"
            >> beam.MapTuple(
                lambda key, counts: (key[0], (_ENGAGEMENT, (key[1], tuple(counts))))
            ).with_output_types(tuple[str, Any])
        )
        posts = (
            events
            | "PostEvents" >> beam.Filter(lambda e: e.type in POST_TYPES)
            | "ToPostInfo" >> beam.Map(post_info)
        )
        snapshots = (
            (engagement, posts | "KeyPosts" >> beam.Map(lambda i: (i.post_id, (_POST, i))))
            | "PostInputs" >> beam.Flatten()
            | "PostSnapshots"
            >> beam.ParDo(PostSnapshotsFn(config)).with_outputs(TOO_LATE, main="snapshots")
        )
        refreshes = (
            snapshots.snapshots
            | "LatestPerBundle"
            >> CombinePerBundle(LatestSnapshotsFn(), key_value_fn=lambda s: (s.end, s))
            | "ByRefresh" >> beam.Map(lambda kv: kv).with_output_types(tuple[int, Any])
            | "RefreshIndex" >> beam.ParDo(RefreshIndexFn(config, self._late_every))
            | "RefreshToShards"
            >> beam.FlatMap(_to_every_shard(shards, _REFRESH)).with_output_types(tuple[int, Any])
        )
        users = (
            events
            | "UserEvents" >> beam.Filter(lambda e: e.userId is not None)
            | "KeyByShard" >> beam.Map(_user_element(shards)).with_output_types(tuple[int, Any])
        )
        feeds = (
            (
                users,
                posts
                | "PostToShards"
                >> beam.FlatMap(_to_every_shard(shards, _POST)).with_output_types(tuple[int, Any]),
                refreshes,
            )
            | "ShardInputs" >> beam.Flatten()
            | "FeedShards"
            >> beam.ParDo(FeedShardFn(config, emit_refreshes=self._emit_refreshes)).with_outputs(
                REFRESHES, main="feeds"
            )
        )
        return {
            "feeds": feeds.feeds,
            TOO_LATE: snapshots[TOO_LATE],
            REFRESHES: feeds[REFRESHES],
        }
