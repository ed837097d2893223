"""Feed building: build_feed equals ranking every candidate, on a real runner too."""

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from blogflow.transforms.feeds import (
    BuildFeeds,
    Candidate,
    CandidateIndex,
    UserProfile,
    build_feed,
    is_active,
    rank_every_candidate,
)
from blogflow.transforms.scoring import ScoringConfig

CONFIG = ScoringConfig(feed_size=3, author_boost=1.0, tag_boost=0.5)
CANDIDATES = [
    Candidate("p1", 10.0, "alice", ("python",)),
    Candidate("p2", 8.0, "bob", ("beam", "python")),
    Candidate("p3", 6.0, "carol", ()),
    Candidate("p4", 4.0, "bob", ("redis",)),
    Candidate("p5", 2.0, "dave", ("beam",)),
]


def test_a_user_without_follows_gets_the_global_ranking():
    feed = build_feed(UserProfile("u"), CandidateIndex(CANDIDATES), CONFIG)
    assert feed == [("p1", 10.0), ("p2", 8.0), ("p3", 6.0)]


def test_followed_authors_and_tags_lift_their_posts():
    profile = UserProfile("u", authors=frozenset({"bob"}), tags=frozenset({"beam"}))
    feed = build_feed(profile, CandidateIndex(CANDIDATES), CONFIG)
    # p2: 8 x (1 + 1 + 0.5) = 20; p4: 4 x 2 = 8; p5: 2 x 1.5 = 3
    assert feed == [("p2", 20.0), ("p1", 10.0), ("p4", 8.0)]
    assert feed == rank_every_candidate(profile, CANDIDATES, CONFIG)


def test_activity_window():
    config = ScoringConfig(active_days=7)
    now = 1_000_000_000.0
    assert is_active(UserProfile("u", last_seen=now - 6 * 86400), now, config)
    assert not is_active(UserProfile("u", last_seen=now - 8 * 86400), now, config)
    assert not is_active(UserProfile("u", last_seen=now + 60), now, config)


_ids = st.sampled_from([f"p{i}" for i in range(30)])
_people = st.sampled_from(["a", "b", "c", "d", "e"])
_tags = st.sampled_from(["t1", "t2", "t3", "t4"])


@settings(max_examples=200, deadline=None)
@given(
    candidates=st.dictionaries(
        _ids,
        st.tuples(
            st.floats(0, 100, allow_nan=False).map(lambda s: round(s, 1)),
            _people,
            st.lists(_tags, max_size=3).map(tuple),
        ),
        max_size=30,
    ),
    authors=st.frozensets(_people),
    tags=st.frozensets(_tags),
    size=st.integers(1, 8),
)
def test_build_feed_equals_ranking_every_candidate(candidates, authors, tags, size):
    config = ScoringConfig(feed_size=size, author_boost=0.7, tag_boost=0.3)
    posts = [
        Candidate(pid, score, author, ptags) for pid, (score, author, ptags) in candidates.items()
    ]
    profile = UserProfile("u", authors=authors, tags=tags)
    assert build_feed(profile, CandidateIndex(posts), config) == rank_every_candidate(
        profile, posts, config
    )


def test_build_feeds_broadcasts_the_candidates():
    profiles = [
        UserProfile("u1"),
        UserProfile("u2", authors=frozenset({"dave"})),
    ]
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        index = p | "Index" >> beam.Create([CandidateIndex(CANDIDATES)])
        feeds = p | "Profiles" >> beam.Create(profiles) | BuildFeeds(index, CONFIG)
        assert_that(
            feeds,
            equal_to(
                [
                    ("u1", [("p1", 10.0), ("p2", 8.0), ("p3", 6.0)]),
                    ("u2", [("p1", 10.0), ("p2", 8.0), ("p3", 6.0)]),
                ]
            ),
        )
