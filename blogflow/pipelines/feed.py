"""The feed job: engagement scored in event-time windows, a top-K feed per active user.

    the backfill:
    source ─► ParseEvents ─► SplitAsOf ─► DropDuplicates ─► events up to --as-of
    events ─► ScorePosts ─► CurrentWindow ─┐
    events ─► LatestPost ──────────────────┴─► JoinPosts ─► Candidates ─► TopCandidates
    events ─► Profiles ─► ActiveUsers ─► BuildFeeds (TopCandidates as side input) ─► WriteFeeds
    rejected by ParseEvents, events far after --as-of ─► WriteDeadLetters
    the live job:
    source ─► ParseEvents ─► DropDuplicates ─► LiveFeeds ─► WriteFeeds

Two jobs in one composite (:class:`ComputeFeeds`). Without ``--as-of``, a stream or
queue read without ``--drain`` runs **the live job** (on Prism locally): it keeps every
active user's feed current, refreshed at every ``--window-period`` and rebuilt at once by
the events that change it (see :mod:`blogflow.transforms.live_feeds`). With ``--as-of``
(or on a file or a drain, as of now by default) a run is **a backfill**: it computes the
feeds *as of* one time: the engagement of the window ending at the first period boundary
at or after it, each post's latest state, each user's follows and activity up to it. A
backfill of an archive gives the feeds the site would have shown then, running it twice
gives the same feeds, and as of a refresh it gives what the live job scheduled there.

Run it with ``blogflow run feed --source file://GLOB`` (or ``kinesis://STREAM`` or
``sqs://QUEUE``, with ``--drain`` or without) or ``python -m blogflow.pipelines.feed
--help``. ``--as-of T`` on a stream without ``--drain`` is a one-off snapshot: it writes
the feeds once its source's watermark has passed the as-of window's close, the time it
started and a few seconds after the last event that counts arrived, and keeps running.

Defined outcomes of odd input:

- a duplicate event id (a redelivery) is counted once: a batch run (a backfill, a drain)
  compares every delivery of the run; a streaming run remembers an id for
  ``--dedupe-horizon`` seconds of source time after its first delivery (Kinesis arrival,
  SQS sent time), however far the copy's ``occurredAt`` lies behind the watermark;
- engagement on a post that was never published, or whose latest event is
  ``post_deleted``, puts no post in any feed;
- with ``--as-of``, an event more than ``--max-skew`` seconds after it is dead-lettered
  (stage ``as_of``) as the source delivered it: its raw message under the source's message id;
  one within the skew is left for a later run (metric ``events_after_as_of``). Both are
  decided per delivery, before duplicates are dropped;
- an event before the epoch is rejected when parsed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders.coders import BooleanCoder, FloatCoder, IntervalWindowCoder
from apache_beam.metrics import Metrics
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import (
    GlobalWindow,
    GlobalWindows,
    IntervalWindow,
    NonMergingWindowFn,
    TimestampedValue,
)
from apache_beam.utils.timestamp import MAX_TIMESTAMP, MIN_TIMESTAMP, Duration, Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from blogflow.events import reject_event
from blogflow.io.deadletter import WriteDeadLetters
from blogflow.io.feeds import WriteFeeds
from blogflow.options import SourceOptions, StoreOptions, read_source
from blogflow.pipelines.job import Job
from blogflow.runners.profiles import keeps_late_batch_data
from blogflow.transforms.feeds import (
    FOLLOW_TYPES,
    POST_TYPES,
    BuildFeeds,
    DropRedeliveries,
    LatestPostFn,
    ProfileFn,
    TopCandidatesFn,
    UserProfile,
    is_active,
    to_candidate,
)
from blogflow.transforms.live_feeds import FEED_SHARDS, REFRESHES, LiveFeeds
from blogflow.transforms.parsing import REJECTED, ParseEvents
from blogflow.transforms.scoring import (
    ENGAGEMENT_TYPES,
    TOO_LATE,
    ScorePosts,
    ScoringConfig,
)

__all__ = ["NAME", "ComputeFeeds", "FeedOptions", "JOB", "build", "engagement_window", "run"]

_LOGGER = logging.getLogger(__name__)

NAME = "feed"
#: Every event type the feed job reads.
FEED_TYPES = (*ENGAGEMENT_TYPES, *POST_TYPES, *FOLLOW_TYPES, "user_signed_up")
FUTURE = "future"


def parse_as_of(value: str) -> float:
    """``--as-of``: an ISO 8601 time with a zone (``2026-11-21T12:00:00Z``) or ``now``."""
    if value == "now":
        return time.time()
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {value!r} (e.g. 2026-11-21T12:00:00Z)"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone, e.g. {value}Z")
    return parsed.timestamp()


class FeedOptions(PipelineOptions):
    """The feed job's time, windows, weights and limits."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        d = ScoringConfig()
        group = parser.add_argument_group("feeds")
        group.add_argument(
            "--as-of",
            "--as_of",
            dest="as_of",
            default=None,
            help="compute the feeds once, as of this time (ISO 8601 with a zone, e.g. "
            "2026-11-21T12:00:00Z, or 'now'): a backfill, or a one-off snapshot of a "
            "stream. Default: now for a file or a drain; a stream or queue read without "
            "--drain runs the live job, which keeps every active user's feed current",
        )
        group.add_argument(
            "--feed-shards",
            "--feed_shards",
            dest="feed_shards",
            type=int,
            default=FEED_SHARDS,
            help="live job: keys the users are spread over (default: %(default)s)",
        )
        group.add_argument(
            "--max-refresh-delay",
            "--max_refresh_delay",
            dest="max_refresh_delay",
            type=float,
            default=10.0,
            help="live job: seconds within which late data refreshes the feeds again "
            "(default: %(default)s)",
        )
        group.add_argument(
            "--max-skew",
            "--max_skew",
            dest="max_skew",
            type=float,
            default=300.0,
            help="with --as-of: seconds an event may lie after it before it is "
            "dead-lettered (default: %(default)s)",
        )
        group.add_argument(
            "--dedupe-horizon",
            "--dedupe_horizon",
            dest="dedupe_horizon",
            type=float,
            default=None,
            help="streaming runs: seconds of source time (Kinesis arrival, SQS sent time) "
            "an event id is remembered after its first delivery, so a redelivery within it "
            "counts once (default: --window-size plus --allowed-lateness); a batch run "
            "compares every delivery of the run",
        )
        for flag, name, kind, help_text in (
            ("--feed-size", "feed_size", int, "posts per feed"),
            ("--feed-ttl", "feed_ttl", int, "seconds a feed lives in Redis"),
            ("--candidates", "candidates", int, "best posts considered for every feed"),
            ("--active-days", "active_days", int, "days of activity that make a user active"),
            ("--window-size", "window_size", int, "engagement window length, seconds"),
            ("--window-period", "window_period", int, "a window starts every ... seconds"),
            ("--allowed-lateness", "allowed_lateness", int, "seconds late data still counts"),
            ("--early-firing", "early_firing", int, "seconds between early panes (streaming)"),
            ("--view-weight", "view_weight", float, "weight of log(1 + views)"),
            ("--like-weight", "like_weight", float, "weight of log(1 + likes)"),
            ("--comment-weight", "comment_weight", float, "weight of log(1 + comments)"),
            ("--half-life", "half_life", float, "seconds in which a post's score halves"),
            ("--author-boost", "author_boost", float, "extra factor for followed authors"),
            ("--tag-boost", "tag_boost", float, "extra factor per followed tag"),
        ):
            # Both spellings, as Beam's own flags and the other jobs' take them.
            spellings = dict.fromkeys((flag, f"--{name}"))
            group.add_argument(
                *spellings,
                dest=name,
                type=kind,
                default=getattr(d, name),
                help=f"{help_text} (default: %(default)s)",
            )

    def config(self) -> ScoringConfig:
        """The options as a validated :class:`ScoringConfig` (ValueError if nonsense)."""
        names = [f.name for f in ScoringConfig.__dataclass_fields__.values()]
        return ScoringConfig(**{name: getattr(self, name) for name in names})


class _SplitAsOfFn(beam.DoFn):
    def __init__(self, as_of: float, max_skew: float) -> None:
        self._as_of = as_of
        self._max_skew = max_skew
        self._after = Metrics.counter("blogflow", "events_after_as_of")

    def process(self, event: Any) -> Iterator[Any]:
        at = event.event_time
        if at <= self._as_of:
            yield event
        elif at > self._as_of + self._max_skew:
            reason = (
                f"occurredAt {event.occurredAt.isoformat()} is more than {self._max_skew:g} s "
                f"after the run's as-of time"
            )
            yield beam.pvalue.TaggedOutput(FUTURE, reject_event(event, "as_of", reason))
        else:
            self._after.inc()


def engagement_window(as_of: float, config: ScoringConfig) -> tuple[int, int]:
    """The sliding window ``[start, end)`` a run as of ``as_of`` scores engagement in:
    the one that ends at the first period boundary at or after ``as_of``, so a run as of
    a boundary scores the window the live job refreshes the feeds from there."""
    end = math.ceil(as_of / config.window_period) * config.window_period
    return end - config.window_size, end


def _profile(item: tuple[str, tuple[frozenset[str], frozenset[str], float]]) -> UserProfile:
    user_id, (authors, tags, last_seen) = item
    return UserProfile(user_id, authors, tags, last_seen)


class _CandidatesFn(beam.DoFn):
    def __init__(self, as_of: float, config: ScoringConfig) -> None:
        self._as_of = as_of
        self._config = config
        self._window_end = engagement_window(as_of, config)[1]
        self._unknown = Metrics.counter("blogflow", "engagement_unknown_post")
        self._deleted = Metrics.counter("blogflow", "engagement_deleted_post")

    def process(self, joined: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
        post_id, sides = joined
        counts = next(iter(sides["counts"]), None)
        info = next(iter(sides["post"]), None)
        if counts is not None and info is None:
            self._unknown.inc()
        elif counts is not None and info is not None and info.deleted:
            self._deleted.inc()
        candidate = to_candidate(
            post_id, counts, info, self._as_of, self._config, window_end=self._window_end
        )
        if candidate is not None:
            yield candidate


class _AsOfWindows(NonMergingWindowFn):
    """Puts every element in one window, ``[epoch, close)``: what a run as of a time sees."""

    def __init__(self, close: int) -> None:
        self._window = IntervalWindow(0, close)

    def assign(self, context: Any) -> list[IntervalWindow]:
        return [self._window]

    def get_window_coder(self) -> IntervalWindowCoder:
        return IntervalWindowCoder()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _AsOfWindows) and other._window == self._window

    def __hash__(self) -> int:
        return hash(self._window)


#: Processing time a hold's timer is set ahead: it never fires, its release clears it.
_HOLD_FOR = Duration(seconds=100 * 365 * 86400)
#: Seconds of source time the release waits after the last event of the run arrived.
#: Longer than a source's reader keeps a bundle (5 s): Prism (2.77) takes a splittable
#: read's watermark from its latest bundle's residuals alone, so a shard whose read it
#: split off and runs later does not hold it, and that shard's events come after the
#: watermark has passed the release (engine/elementmanager.go, ``estimatedOutput``).
ARRIVAL_GRACE = 10.0


class _HoldWatermarkFn(beam.DoFn):
    """Holds its output watermark at the start marker's timestamp until its input
    watermark passes ``release`` and ``grace`` seconds after the last arrival; it
    outputs nothing.

    Input: ``("", 0)``, the start marker, and ``("", n)`` for every bundle of ``n``
    events that arrived: one key, since the hold is one for the whole run, and one small
    element per bundle, not per event. Beam's Python SDK holds the output watermark of a
    processing-time timer at the timestamp of the element that set it (an event-time
    timer holds at its firing time): the hold is such a timer, set by the marker never to
    fire, and cleared by an event-time timer at the release, which each arrival pushes to
    ``grace`` seconds after it (its wall-clock time: a polling source's watermark
    follows the wall clock).
    """

    HOLD = TimerSpec("hold", TimeDomain.REAL_TIME)
    RELEASE = TimerSpec("release", TimeDomain.WATERMARK)
    RELEASE_AT = ReadModifyWriteStateSpec("release_at", FloatCoder())
    RELEASED = ReadModifyWriteStateSpec("released", BooleanCoder())

    def __init__(self, release: float | None, grace: float) -> None:
        self._release = release
        self._grace = grace

    def process(
        self,
        element: tuple[str, int],
        hold=beam.DoFn.TimerParam(HOLD),
        release=beam.DoFn.TimerParam(RELEASE),
        release_at=beam.DoFn.StateParam(RELEASE_AT),
        released=beam.DoFn.StateParam(RELEASED),
    ) -> Iterator[Any]:
        if released.read():
            return iter(())
        if not element[1]:  # the start marker
            hold.set(Timestamp.now() + _HOLD_FOR)
        if self._release is None:  # at the end of the input
            if not element[1]:
                release.set(_END_OF_INPUT)
            return iter(())
        at = self._release
        if element[1]:  # events of the run still arrive
            at = max(at, time.time() + self._grace)
        planned = release_at.read()
        if planned is None or at > planned:
            release.set(Timestamp.of(at))
            release_at.write(at)
        return iter(())

    @on_timer(RELEASE)
    def _released(
        self, hold=beam.DoFn.TimerParam(HOLD), released=beam.DoFn.StateParam(RELEASED)
    ) -> Iterator[Any]:
        hold.clear()
        released.write(True)
        return iter(())

    @on_timer(HOLD)
    def _never(self) -> Iterator[Any]:
        return iter(())


#: The end of :class:`_WholeTimeWindows`' window: the watermark passes it only at the end
#: of the input (the end of the global window comes before, while a GroupByKey of it emits).
_END_OF_INPUT = MAX_TIMESTAMP - Duration(micros=1)


class _WholeTimeWindows(NonMergingWindowFn):
    """Puts every element in one window that ends at the end of time, after the global
    window: its timers fire only once the input has ended."""

    _WINDOW = IntervalWindow(MIN_TIMESTAMP, MAX_TIMESTAMP)

    def assign(self, context: Any) -> list[IntervalWindow]:
        return [self._WINDOW]

    def get_window_coder(self) -> IntervalWindowCoder:
        return IntervalWindowCoder()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _WholeTimeWindows)

    def __hash__(self) -> int:
        return hash(type(self))


def _marker(at: int) -> TimestampedValue:
    return TimestampedValue(("", 0), at)


class _ArrivalsFn(beam.DoFn):
    """``("", n)`` for each bundle of ``n > 0`` elements, nothing else."""

    def start_bundle(self) -> None:
        self._count = 0
        self._last: Timestamp | None = None

    def process(self, _: Any, at=beam.DoFn.TimestampParam) -> Iterator[Any]:
        self._count += 1
        self._last = at
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._count and self._last is not None:
            yield WindowedValue(("", self._count), self._last, (GlobalWindow(),))


class _HoldEventTime(beam.PTransform):
    """Events restamped behind their source's watermark in, the same events out, their
    watermark held at ``at`` until the input's watermark passes ``release`` and
    ``grace`` seconds after the last of them arrived.

    A source stamps deliveries with its own time (Kinesis arrival, SQS sent time) and its
    watermark follows that time; :class:`DropRedeliveries` restamps them with their event
    time, which for a replay of old events lies far behind that watermark (and in a
    batch run behind the end of the global window its GroupByKey emits at): a runner
    that drops late data (Prism, in streaming and in batch) would drop every event in the
    event-time windows after it. The hold keeps their watermark at ``at`` (no earlier
    than anything they must count) until the input's watermark, still in source time,
    passes the release: by then every delivery the source stamped before it has been
    restamped and is on its way (it holds the watermark of the steps it is in); then the
    held watermark jumps to the input's. ``release=None`` holds it until the input ends
    (a batch run: the watermark after its GroupByKey passes the source's while the
    events wait in it).
    """

    def __init__(self, at: int, release: float | None, grace: float) -> None:
        super().__init__()
        self._at = at
        self._release = release
        self._grace = grace

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        marker = (
            events.pipeline
            | "Start" >> beam.Create([self._at])
            | "StampStart" >> beam.Map(_marker).with_output_types(tuple[str, int])
        )
        # With the watermark of the events' own step: the clock of the release.
        arrivals = events | "Arrivals" >> beam.ParDo(_ArrivalsFn()).with_output_types(
            tuple[str, int]
        )
        inputs = (marker, arrivals) | "HoldInputs" >> beam.Flatten()
        if self._release is None:
            inputs = inputs | "UntilTheEnd" >> beam.WindowInto(_WholeTimeWindows())
        held = inputs | "Hold" >> beam.ParDo(_HoldWatermarkFn(self._release, self._grace))
        if self._release is None:
            held = held | "Global" >> beam.WindowInto(GlobalWindows())
        return (events, held) | "HeldEvents" >> beam.Flatten()


class _LatestPaneFn(beam.CombineFn):
    """Of a post's accumulating panes, the counts of the latest (the most complete)."""

    def create_accumulator(self) -> tuple[int, Any]:
        return (-1, None)

    def add_input(self, latest: tuple[int, Any], pane: tuple[int, Any]) -> tuple[int, Any]:
        return max(latest, pane, key=lambda p: p[0])

    def merge_accumulators(self, accumulators: Iterable[tuple[int, Any]]) -> tuple[int, Any]:
        return max(accumulators, key=lambda p: p[0])

    def extract_output(self, latest: tuple[int, Any]) -> Any:
        return latest[1]


class ComputeFeeds(beam.PTransform):
    """Typed events in, feeds out: as of ``as_of`` (a backfill, a snapshot), or, with
    ``as_of=None`` in a streaming pipeline, the live job's
    :class:`~blogflow.io.feeds.FeedUpdate` whenever a feed changes (see
    :class:`~blogflow.transforms.live_feeds.LiveFeeds`; then ``["dead"]`` is empty and the
    output has ``[REFRESHES]`` too). What follows is the backfill's.

    Input: events as ``ParseEvents(event_time=False, keep_source=True)`` emits them,
    globally windowed, from a bounded or an unbounded source: stamped with their source's
    time (see :class:`~blogflow.transforms.feeds.DropRedeliveries`, which restamps them
    with their event time) and carrying their raw record (for the dead letters). Output:
    a dict: ``["feeds"]`` the feeds of the active users, ``["dead"]``
    :class:`~blogflow.events.Rejection` for events too far after ``as_of`` (the message
    as received, under its source id), and ``["too_late"]`` engagement after the allowed
    lateness.

    Everything but the engagement windows lives in one event-time window that closes
    when the engagement window holding ``as_of`` can get no more late data (its end +
    the allowed lateness + one period). A streaming run holds its event time at the start
    of that engagement window until its source's watermark, in source time (Kinesis
    arrival, SQS sent time, Pub/Sub ``occurredAt``), passes that close, the time the run
    started and ``grace`` seconds after the last event that counts arrived; then the
    windows fire and the feeds are written once, while the job keeps running, from every
    delivery stamped before then: a live stream's up to the close, a stream's whole
    backlog for a run started after it (an as-of time in the past). A batch run holds it
    until its input ends and sees the same data: the two give the same feeds.
    Deliveries after that are left to a later run.

    Args:
        config: windows, weights and limits.
        as_of: the time the feeds are computed as of, epoch seconds; None: the live job
            in a streaming pipeline, now in a batch one.
        streaming: whether the pipeline streams (decided by the pipeline module).
        max_skew: seconds an event may lie after ``as_of`` before it is dead-lettered.
        dedupe_horizon: streaming only: seconds of source time an event id is remembered
            (default: the window size plus the allowed lateness).
        started: when the run started, epoch seconds (default: when this transform is
            made).
        grace: seconds of source time the feeds wait after the last event that counts
            arrived (see :data:`ARRIVAL_GRACE`).
        shards, late_every, emit_refreshes: the live job's, see
            :class:`~blogflow.transforms.live_feeds.LiveFeeds`.
        keeps_late_data: a batch run on a runner whose batch GroupByKey groups by window
            and never drops data behind the watermark (Flink's batch translation): no
            hold, and the one global window instead of the as-of window, since that runner
            runs only Beam's standard WindowFns. The feeds are the same.
    """

    def __init__(
        self,
        config: ScoringConfig,
        as_of: float | None,
        *,
        streaming: bool,
        keeps_late_data: bool = False,
        max_skew: float = 300.0,
        dedupe_horizon: float | None = None,
        started: float | None = None,
        grace: float = ARRIVAL_GRACE,
        shards: int = FEED_SHARDS,
        late_every: int = 5,
        emit_refreshes: bool = False,
    ) -> None:
        super().__init__()
        self._config = config
        self._live = as_of is None and streaming
        self._as_of = time.time() if as_of is None else as_of
        self._max_skew = max_skew
        if dedupe_horizon is None:
            dedupe_horizon = config.window_size + config.allowed_lateness
        if not dedupe_horizon > 0:
            raise ValueError(f"dedupe_horizon must be positive, got {dedupe_horizon}")
        self._dedupe_horizon = dedupe_horizon
        self._streaming = streaming
        if keeps_late_data and streaming:
            raise ValueError("keeps_late_data applies to a batch run only")
        self._keeps_late_data = keeps_late_data
        self._started = time.time() if started is None else started
        self._grace = grace
        self._live_feeds = LiveFeeds(
            config, shards=shards, late_every=late_every, emit_refreshes=emit_refreshes
        )

    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        if self._live:
            current = events | "DropDuplicates" >> DropRedeliveries(
                self._dedupe_horizon, streaming=True
            )
            live = current | "LiveFeeds" >> self._live_feeds
            nothing = events.pipeline | "NoDeadLetters" >> beam.Create([])
            return {
                "feeds": live["feeds"],
                "dead": nothing,
                TOO_LATE: live[TOO_LATE],
                REFRESHES: live[REFRESHES],
            }
        config, as_of = self._config, self._as_of
        window_start, window_end = engagement_window(as_of, config)
        close = window_end + config.allowed_lateness + config.window_period
        # Before the dedupe's shuffle, while the events still carry their raw records:
        # the shuffle then carries no raw payloads.
        split = events | "SplitAsOf" >> beam.ParDo(
            _SplitAsOfFn(as_of, self._max_skew)
        ).with_outputs(FUTURE, main="events")
        current = split.events | "DropDuplicates" >> DropRedeliveries(
            self._dedupe_horizon, streaming=self._streaming
        )
        # Restamped with event time, behind the source's watermark (a batch run's too,
        # after its GroupByKey): see _HoldEventTime. A batch run counts all its input.
        release = max(close, self._started) if self._streaming else None
        if not self._keeps_late_data:
            current = current | "HoldEventTime" >> _HoldEventTime(
                window_start, release=release, grace=self._grace
            )
        as_of_window = GlobalWindows() if self._keeps_late_data else _AsOfWindows(close)

        scored = (
            current
            | "EngagementInWindow"
            >> beam.Filter(
                lambda e: e.type in ENGAGEMENT_TYPES and window_start <= e.event_time < window_end
            )
            | "ScorePosts" >> ScorePosts(config, streaming=self._streaming)
        )
        counts = (
            scored["engagement"]
            | "CurrentWindow" >> beam.Filter(lambda e: e.window_end == window_end)
            | "PaneCounts" >> beam.Map(lambda e: (e.post_id, (e.pane_index, e.counts)))
            | "AsOfCounts" >> beam.WindowInto(as_of_window)
            | "LatestPane" >> beam.CombinePerKey(_LatestPaneFn())
        )
        as_of_events = current | "AsOfWindow" >> beam.WindowInto(as_of_window)
        posts = (
            as_of_events
            | "PostEvents" >> beam.Filter(lambda e: e.type in POST_TYPES)
            | "KeyByPost" >> beam.Map(lambda e: (e.data.postId, e))
            | "LatestPost" >> beam.CombinePerKey(LatestPostFn())
        )
        index = (
            {"counts": counts, "post": posts}
            | "JoinPosts" >> beam.CoGroupByKey()
            | "Candidates" >> beam.ParDo(_CandidatesFn(as_of, config))
            # The one global step of the job, by nature (one candidate list for every
            # feed): runners lift the CombineFn, so each worker keeps its own top
            # --candidates and only those partial lists meet under the one key.
            | "TopCandidates"
            >> beam.CombineGlobally(TopCandidatesFn(config.candidates)).without_defaults()
        )
        feeds = (
            as_of_events
            | "WithUser" >> beam.Filter(lambda e: e.userId is not None)
            | "KeyByUser" >> beam.Map(lambda e: (e.userId, e))
            | "Profiles" >> beam.CombinePerKey(ProfileFn())
            | "ToProfile" >> beam.Map(_profile)
            | "ActiveUsers" >> beam.Filter(is_active, as_of, config)
            | "BuildFeeds" >> BuildFeeds(index, config)
        )
        return {"feeds": feeds, "dead": split[FUTURE], TOO_LATE: scored[TOO_LATE]}


def build(pipeline: beam.Pipeline, options: PipelineOptions, *, streaming: bool) -> None:
    """Adds the feed job to ``pipeline``."""
    stores = options.view_as(StoreOptions)
    feed = options.view_as(FeedOptions)
    config = feed.config()
    as_of = parse_as_of(feed.as_of) if feed.as_of is not None else None
    if as_of is None and not streaming:  # a file or a drain: as of now
        as_of = time.time()
    records = pipeline | "ReadSource" >> read_source(options)
    # Left stamped with the source's time, for DropRedeliveries; it stamps event time.
    parsed = records | "ParseEvents" >> ParseEvents(
        accept=FEED_TYPES, event_time=False, keep_source=True
    )
    computed = parsed.events | "ComputeFeeds" >> ComputeFeeds(
        config,
        as_of,
        streaming=streaming,
        max_skew=feed.max_skew,
        dedupe_horizon=feed.dedupe_horizon,
        keeps_late_data=not streaming and keeps_late_batch_data(options),
        shards=feed.feed_shards,
        late_every=max(1, int(feed.max_refresh_delay // 2)),
    )
    # The live job's feeds say themselves which window they come from and why.
    window = None if as_of is None else engagement_window(as_of, config)
    _ = computed["feeds"] | "WriteFeeds" >> WriteFeeds(
        redis_url=stores.redis_url,
        prefix=stores.redis_prefix,
        ttl=config.feed_ttl,
        window=window,
        reason="schedule",
    )
    _ = (parsed[REJECTED], computed["dead"]) | "WriteDeadLetters" >> WriteDeadLetters(
        NAME, mongo_uri=stores.mongo_uri, database=stores.mongo_db
    )


JOB = Job(
    NAME,
    "Score post engagement in event-time windows and write every active "
    "user's top-K feed to Redis 'feed:{userId}'. Bad events go to MongoDB 'deadletters'.",
    (
        SourceOptions,
        StoreOptions,
        FeedOptions,
    ),
    build,
)
run = JOB.run

if __name__ == "__main__":
    JOB.main()
