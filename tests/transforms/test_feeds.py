"""Feed building: build_feed equals ranking every candidate, on a real runner too; and
DropRedeliveries, in batch and in streaming (TestStream on BundleBasedDirectRunner and on
Prism)."""

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from hypothesis import given, settings
from hypothesis import strategies as st

from blogflow.events import SourceRecord, make_event
from blogflow.transforms.feeds import (
    BuildFeeds,
    Candidate,
    CandidateIndex,
    DropRedeliveries,
    UserProfile,
    build_feed,
    is_active,
    rank_every_candidate,
)
from blogflow.transforms.scoring import ScoringConfig
from tests.transforms.test_scoring import RUNNERS, streaming_pipeline

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


# ------------------------------------------------------------------------ redeliveries

OCCURRED = dt.datetime(2026, 11, 21, 10, tzinfo=dt.timezone.utc)
#: When the copies arrive: ten days after they occurred, as in a replay of a stream.
ARRIVED = int(dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc).timestamp())


def view(event_id, minutes=0):
    return make_event(
        "post_viewed",
        {"postId": "p1"},
        user_id="u1",
        occurred_at=OCCURRED + dt.timedelta(minutes=minutes),
        event_id=event_id,
    )


def arrived(event, seconds):
    """A delivery of ``event``, stamped as a source stamps it: when it arrived."""
    return TimestampedValue(event, ARRIVED + seconds)


def id_and_time(event, ts=beam.DoFn.TimestampParam):
    return event.id, ts.micros // 1_000_000


def test_a_batch_run_keeps_the_first_delivery_of_every_id_stamped_with_its_event_time():
    deliveries = [
        arrived(view("e1"), 0),
        arrived(view("e2", minutes=5), 1),
        arrived(view("e1"), 90_000 * 10),  # far apart: any horizon would have passed
        arrived(view("e1"), 3),
    ]
    p = beam.Pipeline(runner=FnApiRunner())
    firsts = p | beam.Create(deliveries) | DropRedeliveries(60, streaming=False)
    assert_that(
        firsts | beam.Map(id_and_time),
        equal_to([("e1", OCCURRED.timestamp()), ("e2", OCCURRED.timestamp() + 300)]),
    )
    result = p.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_name("events_redelivered"))
    assert sum(c.committed for c in counters["counters"]) == 2


def test_the_first_delivery_is_kept_without_its_raw_record():
    event = view("e1")
    event._source = SourceRecord(b"raw bytes", "queue-message-1")
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        firsts = p | beam.Create([event]) | DropRedeliveries(60, streaming=False)
        assert_that(firsts | beam.Map(lambda e: (e, e._source)), equal_to([(view("e1"), None)]))


@pytest.mark.parametrize("runner", RUNNERS)
def test_streaming_remembers_an_id_for_the_horizon_in_arrival_time_not_event_time(runner):
    horizon = 3600
    stream = (
        TestStream()
        .advance_watermark_to(ARRIVED)
        .add_elements([arrived(view("e1"), 0), arrived(view("e2"), 0)])
        .advance_watermark_to(ARRIVED + 1800)
        # Ten days after e1 occurred, within the horizon after its first delivery: a copy.
        # (Beam's DeduplicatePerKey(event_time_duration=25 h) had forgotten e1 by now.)
        .add_elements([arrived(view("e1"), 1800)])
        .advance_watermark_to(ARRIVED + 2 * horizon)
        .add_elements([arrived(view("e2"), 2 * horizon)])  # after the horizon: a new one
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline(runner) as p:
        firsts = p | stream | DropRedeliveries(horizon, streaming=True)
        at = OCCURRED.timestamp()
        assert_that(firsts | beam.Map(id_and_time), equal_to([("e1", at), ("e2", at), ("e2", at)]))


@pytest.mark.parametrize("horizon", [0, -1.0])
def test_the_horizon_must_be_positive(horizon):
    with pytest.raises(ValueError, match="horizon must be positive"):
        DropRedeliveries(horizon, streaming=True)
