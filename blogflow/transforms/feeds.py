"""Personal feeds: the best candidate posts for each active user, boosted by their follows.

:class:`DropRedeliveries` comes first: at-least-once sources deliver an event again (an
SQS message after its visibility timeout, a Kinesis record re-read after a failure, a
producer's retry), and the feed must count it once.

Pure logic then: :class:`CandidateIndex` holds the candidate posts once (the pipeline
broadcasts it to every worker as a side input), and :func:`build_feed` ranks them for one
:class:`UserProfile` in time proportional to the user's follows plus the feed size, not
to the number of candidates: only posts by followed authors or with followed tags score
differently for a user, every other post keeps its base score, and the base ranking is
shared. :class:`BuildFeeds` wires it: profiles in, ``(userId, [(postId, score), ...])`` out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders.coders import BooleanCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Duration
from apache_beam.utils.windowed_value import WindowedValue

from blogflow.events import parse_event
from blogflow.transforms.scoring import ScoringConfig, personal_score, post_score, top_k

__all__ = [
    "FOLLOW_TYPES",
    "POST_TYPES",
    "BuildFeeds",
    "Candidate",
    "CandidateIndex",
    "DropRedeliveries",
    "LatestPostFn",
    "PostInfo",
    "ProfileFn",
    "TopCandidatesFn",
    "UserProfile",
    "build_feed",
    "is_active",
    "post_info",
    "rank_every_candidate",
    "score_for",
    "to_candidate",
]

#: The event types that describe posts, and those that build a user's profile.
POST_TYPES = ("post_published", "post_updated", "post_deleted")
FOLLOW_TYPES = ("user_followed", "tag_followed")


# ------------------------------------------------------------------------ redeliveries

_IN_GLOBAL_WINDOW = (GlobalWindow(),)


def _keyed_by_id(event: Any) -> tuple[str, bytes]:
    # The event crosses the shuffle as its JSON (measured: ~120 bytes, ~17 us to write and
    # parse back), not pickled (~390 bytes, ~36 us; ~630 bytes, ~48 us with the raw
    # record ParseEvents(keep_source=True) attached).
    return event.id, event.to_json()


def _stamped(payload: bytes) -> WindowedValue:
    """The event ``payload`` holds, stamped with its event time, in the global window."""
    event = parse_event(payload)
    return WindowedValue(event, event.event_time, _IN_GLOBAL_WINDOW)


class _OnePerRunFn(beam.DoFn):
    """Batch: one of all deliveries of an id in the run, the others counted. Copies are
    equal; should a producer reuse an id, the smallest JSON wins, so a rerun keeps the same."""

    def __init__(self) -> None:
        self._redelivered = Metrics.counter("blogflow", "events_redelivered")

    def process(self, grouped: tuple[str, Iterable[bytes]]) -> Iterator[WindowedValue]:
        deliveries = list(grouped[1])
        if len(deliveries) > 1:
            self._redelivered.inc(len(deliveries) - 1)
        yield _stamped(min(deliveries))


class _FirstDeliveryFn(beam.DoFn):
    """Streaming: state per event id, forgotten ``horizon`` after the first delivery, in
    the time the source stamped it with (the watermark of such a source follows that
    time: Kinesis arrival, SQS sent time)."""

    SEEN = ReadModifyWriteStateSpec("seen", BooleanCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, horizon: float) -> None:
        self._horizon = Duration.of(horizon)
        self._redelivered = Metrics.counter("blogflow", "events_redelivered")

    def process(
        self,
        element: tuple[str, bytes],
        delivered=beam.DoFn.TimestampParam,
        seen=beam.DoFn.StateParam(SEEN),
        forget=beam.DoFn.TimerParam(FORGET),
    ) -> Iterator[WindowedValue]:
        if seen.read():
            self._redelivered.inc()
            return
        seen.write(True)
        # An event-time timer holds the watermark only at its own, future, time. Beam's
        # Python SDK gives a processing-time timer the element's timestamp as its hold
        # (for the whole horizon), and FnApiRunner fires one once the clock passes that
        # hold: at once, for a replayed event (measured).
        forget.set(delivered + self._horizon)
        yield _stamped(element[1])

    @on_timer(FORGET)
    def _forget(self, seen=beam.DoFn.StateParam(SEEN)) -> None:
        seen.clear()


class DropRedeliveries(beam.PTransform):
    """Lets every event id through once: at-least-once deliveries in, each event once out.

    Input: events in the global window, stamped with the time their source gave them
    (``ParseEvents(event_time=False)``: Kinesis's arrival time, SQS's ``SentTimestamp``,
    Pub/Sub's ``occurredAt`` attribute). Output: one delivery of each id (in streaming,
    the first), stamped with its event time (``occurredAt``), without the raw record
    ``ParseEvents(keep_source=True)`` may have attached.

    How long an id is remembered:

    - a batch run (``streaming=False``: a backfill, a drain) groups every delivery of an
      id in the run, however far apart they arrive;
    - a streaming run keeps each id in state until the source's watermark passes the
      first delivery's source timestamp plus ``horizon`` seconds. The watermark of
      Kinesis and SQS follows the same arrival times, also when an old stream is
      replayed, so a copy that arrived within ``horizon`` of its first delivery is
      dropped, whatever its ``occurredAt``. (Pub/Sub records are stamped with their
      ``occurredAt``: there the horizon counts from the event time.)

    Metric ``events_redelivered``: the deliveries dropped.

    Args:
        horizon: streaming only: seconds (source time) an id is remembered.
        streaming: whether the pipeline streams (decided by the pipeline module).
    """

    def __init__(self, horizon: float, *, streaming: bool) -> None:
        super().__init__()
        if not horizon > 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        self._horizon = horizon
        self._streaming = streaming

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        keyed = events | "KeyById" >> beam.Map(_keyed_by_id).with_output_types(tuple[str, bytes])
        if self._streaming:
            return keyed | "FirstDelivery" >> beam.ParDo(_FirstDeliveryFn(self._horizon))
        # Measured on FnApiRunner: a stateful DoFn costs ~3 ms per key there (each key's
        # state is a request to the runner: 20,000 ids took 61 s), a GroupByKey of the
        # JSON ~40 us per event, a CombinePerKey ~65 us (ids are unique: combining in the
        # bundle saves nothing).
        return keyed | "GroupById" >> beam.GroupByKey() | "OnePerRun" >> beam.ParDo(_OnePerRunFn())


class PostInfo(NamedTuple):
    """A post's latest known state.

    Attributes:
        post_id: the post.
        author_id, tags, published_at: from its latest ``post_published``/``post_updated``.
        deleted: a ``post_deleted`` is its latest event.
        version: ``(occurredAt, event id)`` of the event this state comes from.
    """

    post_id: str
    author_id: str
    tags: tuple[str, ...]
    published_at: float
    deleted: bool
    version: tuple[float, str]


def post_info(event: Any) -> PostInfo:
    """The post state a ``post_published``, ``post_updated`` or ``post_deleted`` event gives."""
    version = (event.event_time, event.id)
    data = event.data
    if event.type == "post_deleted":
        return PostInfo(data.postId, "", (), 0.0, True, version)
    return PostInfo(
        data.postId, data.authorId, data.tags, data.publishedAt.timestamp(), False, version
    )


class LatestPostFn(beam.CombineFn):
    """The latest state of a post from its events, in any order: the event with the
    greatest ``(occurredAt, id)`` wins, so a delete after a publish sticks and a replay
    gives the same state."""

    def create_accumulator(self) -> PostInfo | None:
        return None

    def add_input(self, latest: PostInfo | None, event: Any) -> PostInfo:
        info = post_info(event)
        return info if latest is None or info.version > latest.version else latest

    def merge_accumulators(self, accumulators: Iterable[PostInfo | None]) -> PostInfo | None:
        latest = None
        for info in accumulators:
            if info is not None and (latest is None or info.version > latest.version):
                latest = info
        return latest

    def extract_output(self, latest: PostInfo | None) -> PostInfo | None:
        return latest


class ProfileFn(beam.CombineFn):
    """A user's profile from their events: followed authors and tags, last seen time.

    Input: ``(userId's) events``. Output: :class:`UserProfile` without ``user_id``
    (the caller adds the key).
    """

    def create_accumulator(self) -> tuple[set[str], set[str], float]:
        return set(), set(), 0.0

    def add_input(
        self, acc: tuple[set[str], set[str], float], event: Any
    ) -> tuple[set[str], set[str], float]:
        authors, tags, last_seen = acc
        if event.type == "user_followed":
            authors.add(event.data.authorId)
        elif event.type == "tag_followed":
            tags.add(event.data.tag)
        return authors, tags, max(last_seen, event.event_time)

    def merge_accumulators(
        self, accumulators: Iterable[tuple[set[str], set[str], float]]
    ) -> tuple[set[str], set[str], float]:
        authors: set[str] = set()
        tags: set[str] = set()
        last_seen = 0.0
        for a, t, seen in accumulators:
            authors |= a
            tags |= t
            last_seen = max(last_seen, seen)
        return authors, tags, last_seen

    def extract_output(
        self, acc: tuple[set[str], set[str], float]
    ) -> tuple[frozenset[str], frozenset[str], float]:
        return frozenset(acc[0]), frozenset(acc[1]), acc[2]


def to_candidate(
    post_id: str,
    counts: tuple[int, int, int] | None,
    info: PostInfo | None,
    at: float,
    config: ScoringConfig,
    *,
    window_end: float | None = None,
) -> Candidate | None:
    """A post's candidate for feeds at time ``at``, or None: a post never published
    (unknown id) or deleted is not a candidate, nor one with no engagement, unless it was
    published in the engagement window ``[window_end - window_size, window_end)``: a new
    post is a candidate from the start (score 0 until it is engaged with), so it reaches
    the feeds of those who follow its author or its tags."""
    if info is None or info.deleted:
        return None
    new = (
        window_end is not None and window_end - config.window_size <= info.published_at < window_end
    )
    if counts is None:
        if not new:
            return None
        counts = (0, 0, 0)
    score = post_score(counts, info.published_at, at, config)
    return Candidate(post_id, score, info.author_id, info.tags) if score > 0 or new else None


class Candidate(NamedTuple):
    """A post that may enter feeds, with its score for everyone.

    Attributes:
        post_id: the post.
        score: its engagement score in the current window, decayed by age.
        author_id: its author.
        tags: its tags.
    """

    post_id: str
    score: float
    author_id: str
    tags: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class UserProfile:
    """What feed building needs to know of a user.

    Attributes:
        user_id: the user.
        authors: the authors the user follows.
        tags: the tags the user follows.
        last_seen: event time of the user's latest event, epoch seconds.
    """

    user_id: str
    authors: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    last_seen: float = 0.0


def is_active(profile: UserProfile, as_of: float, config: ScoringConfig) -> bool:
    """Active: any event in the ``config.active_days`` days up to ``as_of``."""
    return as_of - config.active_days * 86400 <= profile.last_seen <= as_of


class CandidateIndex:
    """The candidate posts, ranked once and indexed by author and tag.

    Args:
        candidates: the posts that may enter feeds (the best ``config.candidates``).
    """

    def __init__(self, candidates: Iterable[Candidate]) -> None:
        self.ranked: list[Candidate] = sorted(candidates, key=lambda c: (-c.score, c.post_id))
        self.by_author: dict[str, list[Candidate]] = {}
        self.by_tag: dict[str, list[Candidate]] = {}
        for candidate in self.ranked:
            self.by_author.setdefault(candidate.author_id, []).append(candidate)
            for tag in set(candidate.tags):
                self.by_tag.setdefault(tag, []).append(candidate)

    def __len__(self) -> int:
        return len(self.ranked)


def score_for(profile: UserProfile, candidate: Candidate, config: ScoringConfig) -> float:
    """A candidate's score for one user: :func:`personal_score` with the user's follows."""
    return personal_score(
        candidate.score,
        author_followed=candidate.author_id in profile.authors,
        tags_followed=len(profile.tags.intersection(candidate.tags)),
        config=config,
    )


def rank_every_candidate(
    profile: UserProfile, candidates: Iterable[Candidate], config: ScoringConfig
) -> list[tuple[str, float]]:
    """The feed by definition: every candidate scored for the user, the top K kept.

    :func:`build_feed` gives the same, faster; this is what tests and benchmarks check it by.
    """
    return top_k(((c.post_id, score_for(profile, c, config)) for c in candidates), config.feed_size)


def build_feed(
    profile: UserProfile, index: CandidateIndex, config: ScoringConfig
) -> list[tuple[str, float]]:
    """The user's top ``config.feed_size`` posts, best first: ``[(postId, score), ...]``.

    The same as :func:`rank_every_candidate` (ties to the smaller post id).
    """
    size = config.feed_size
    ranked = index.ranked
    # Every post scores at least its base score for everyone, so the feed's worst score is
    # at least the size-th best base score. A followed post can only get in if its base
    # score times the user's largest boost reaches that: the lists are ranked, so each
    # is read only down to there.
    floor = ranked[size - 1].score if len(ranked) >= size else 0.0
    most = 1.0 + (config.author_boost if profile.authors else 0.0)
    most += config.tag_boost * len(profile.tags)
    boosted: dict[str, Candidate] = {}
    for lists, names in ((index.by_author, profile.authors), (index.by_tag, profile.tags)):
        for name in names:
            for candidate in lists.get(name, ()):
                if candidate.score * most < floor:
                    break
                boosted[candidate.post_id] = candidate
    scored = [(c.post_id, score_for(profile, c, config)) for c in boosted.values()]
    # Every other post keeps its base score: the best of them are the first in the ranking.
    for candidate in ranked:
        if len(scored) >= size + len(boosted):
            break
        if candidate.post_id not in boosted:
            scored.append((candidate.post_id, candidate.score))
    return top_k(scored, size)


class TopCandidatesFn(beam.CombineFn):
    """The best ``n`` candidates (ties to the smaller post id), as a :class:`CandidateIndex`."""

    def __init__(self, n: int) -> None:
        self._n = n

    def create_accumulator(self) -> list[Candidate]:
        return []

    def _prune(self, candidates: list[Candidate]) -> list[Candidate]:
        if len(candidates) <= 2 * self._n:
            return candidates
        candidates.sort(key=lambda c: (-c.score, c.post_id))
        return candidates[: self._n]

    def add_input(self, candidates: list[Candidate], candidate: Candidate) -> list[Candidate]:
        candidates.append(candidate)
        return self._prune(candidates)

    def merge_accumulators(self, accumulators: Iterable[list[Candidate]]) -> list[Candidate]:
        merged: list[Candidate] = []
        for candidates in accumulators:
            merged.extend(candidates)
            merged = self._prune(merged)
        return merged

    def extract_output(self, candidates: list[Candidate]) -> CandidateIndex:
        candidates.sort(key=lambda c: (-c.score, c.post_id))
        return CandidateIndex(candidates[: self._n])


class _BuildFeedsFn(beam.DoFn):
    def __init__(self, config: ScoringConfig) -> None:
        self._config = config

    def process(
        self, profile: UserProfile, index: CandidateIndex
    ) -> Iterator[tuple[str, list[tuple[str, float]]]]:
        feed = build_feed(profile, index, self._config)
        if feed:
            yield profile.user_id, feed


class BuildFeeds(beam.PTransform):
    """Ranks the candidate posts for every user profile.

    Input: :class:`UserProfile` of the users to build feeds for. Side input
    ``candidates``: a PCollection of one :class:`CandidateIndex` per window (none means
    no candidates), broadcast once to every worker. Output: ``(userId, [(postId, score),
    ...])``, best first, at most ``config.feed_size`` posts; a user with no candidate gets
    no feed.
    """

    def __init__(self, candidates: beam.PCollection, config: ScoringConfig) -> None:
        super().__init__()
        self._candidates = candidates
        self._config = config

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        return profiles | "RankCandidates" >> beam.ParDo(
            _BuildFeedsFn(self._config),
            beam.pvalue.AsSingleton(self._candidates, default_value=CandidateIndex(())),
        )
