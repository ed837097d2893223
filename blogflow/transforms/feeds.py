"""Personal feeds: the best candidate posts for each active user, boosted by their follows.

Pure logic first: :class:`CandidateIndex` holds the candidate posts once (the pipeline
broadcasts it to every worker as a side input), and :func:`build_feed` ranks them for one
:class:`UserProfile` in time proportional to the user's follows plus the feed size, not
to the number of candidates: only posts by followed authors or with followed tags score
differently for a user, every other post keeps its base score, and the base ranking is
shared. :class:`BuildFeeds` wires it: profiles in, ``(userId, [(postId, score), ...])`` out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import apache_beam as beam

from blogflow.transforms.scoring import ScoringConfig, personal_score, top_k

__all__ = [
    "BuildFeeds",
    "Candidate",
    "CandidateIndex",
    "UserProfile",
    "build_feed",
    "is_active",
]


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


def build_feed(
    profile: UserProfile, index: CandidateIndex, config: ScoringConfig
) -> list[tuple[str, float]]:
    """The user's top ``config.feed_size`` posts, best first: ``[(postId, score), ...]``.

    The same as ranking every candidate by :func:`personal_score`, ties to the smaller id.
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
    scored = [
        (
            c.post_id,
            personal_score(
                c.score,
                author_followed=c.author_id in profile.authors,
                tags_followed=len(profile.tags.intersection(c.tags)),
                config=config,
            ),
        )
        for c in boosted.values()
    ]
    # Every other post keeps its base score: the best of them are the first in the ranking.
    for candidate in ranked:
        if len(scored) >= size + len(boosted):
            break
        if candidate.post_id not in boosted:
            scored.append((candidate.post_id, candidate.score))
    return top_k(scored, size)


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
    ``candidates``: a singleton PCollection of one :class:`CandidateIndex`, broadcast
    once to every worker. Output: ``(userId, [(postId, score), ...])``, best first, at
    most ``config.feed_size`` posts; a user with no candidate gets no feed.
    """

    def __init__(self, candidates: beam.PCollection, config: ScoringConfig) -> None:
        super().__init__()
        self._candidates = candidates
        self._config = config

    def expand(self, profiles: beam.PCollection) -> beam.PCollection:
        return profiles | "RankCandidates" >> beam.ParDo(
            _BuildFeedsFn(self._config), beam.pvalue.AsSingleton(self._candidates)
        )
