"""Scoring: the pure functions, and ScorePosts' panes on TestStream and in batch, on
BundleBasedDirectRunner and on Prism (the local streaming runner)."""

import datetime as dt
import math

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from blogflow.events import make_event
from blogflow.runners.profiles import configure_runner
from blogflow.transforms.scoring import (
    HOUR,
    TOO_LATE,
    PostEngagement,
    ScorePosts,
    ScoringConfig,
    TooLate,
    bucket_start,
    engagement_score,
    personal_score,
    post_score,
    recency_decay,
    sliding_windows,
    top_k,
)

T0 = int(dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc).timestamp())
CONFIG = ScoringConfig(window_size=2 * HOUR, window_period=HOUR, allowed_lateness=HOUR)


def engagement(event_type, post_id, at, user_id="u1", event_id=None):
    occurred = dt.datetime.fromtimestamp(at, dt.timezone.utc)
    event = make_event(
        event_type, {"postId": post_id}, user_id=user_id, occurred_at=occurred, event_id=event_id
    )
    return TimestampedValue(event, at)


# ------------------------------------------------------------------------- pure logic


def test_sliding_windows_match_the_period_grid():
    assert sliding_windows(T0 + 600, 2 * HOUR, HOUR) == [
        (T0 - HOUR, T0 + HOUR),
        (T0, T0 + 2 * HOUR),
    ]
    assert len(sliding_windows(T0 + 1, 24 * HOUR, HOUR)) == 24
    assert bucket_start(T0 + HOUR - 1, HOUR) == T0
    assert bucket_start(T0 + HOUR, HOUR) == T0 + HOUR


def test_engagement_is_weighted_and_log_scaled():
    config = ScoringConfig()
    assert engagement_score((0, 0, 0), config) == 0
    one_like = engagement_score((0, 1, 0), config)
    assert one_like == pytest.approx(config.like_weight * math.log(2))
    assert engagement_score((0, 0, 1), config) > one_like > engagement_score((1, 0, 0), config)
    # the thousandth view adds less than the first
    assert engagement_score((1000, 0, 0), config) < 1000 * engagement_score((1, 0, 0), config)


def test_recency_decay_halves_every_half_life():
    assert recency_decay(0, HOUR) == 1
    assert recency_decay(HOUR, HOUR) == pytest.approx(0.5)
    assert recency_decay(3 * HOUR, HOUR) == pytest.approx(0.125)
    assert recency_decay(-HOUR, HOUR) == 1  # published "in the future": as new
    config = ScoringConfig(half_life=HOUR)
    assert post_score((1, 0, 0), T0, T0 + HOUR, config) == pytest.approx(math.log(2) / 2)


def test_personal_score_boosts_followed_authors_and_tags():
    config = ScoringConfig(author_boost=1.0, tag_boost=0.5)
    assert personal_score(2.0, author_followed=False, tags_followed=0, config=config) == 2.0
    assert personal_score(2.0, author_followed=True, tags_followed=0, config=config) == 4.0
    assert personal_score(2.0, author_followed=True, tags_followed=2, config=config) == 6.0


def test_top_k_is_deterministic_on_ties():
    scored = [("b", 1.0), ("a", 1.0), ("c", 3.0), ("d", 0.5)]
    assert top_k(scored, 3) == [("c", 3.0), ("a", 1.0), ("b", 1.0)]
    assert top_k(reversed(scored), 3) == top_k(scored, 3)


def test_config_refuses_nonsense():
    with pytest.raises(ValueError, match="multiple of window_period"):
        ScoringConfig(window_size=90 * 60, window_period=HOUR)
    with pytest.raises(ValueError, match="feed_size"):
        ScoringConfig(feed_size=0)
    with pytest.raises(ValueError, match="like_weight"):
        ScoringConfig(like_weight=float("nan"))


# ---------------------------------------------------------------------------- panes


#: The runners TestStream tests run on: ``direct`` (BundleBasedDirectRunner) and ``prism``.
RUNNERS = ("direct", "prism")


def pipeline_options(runner, *, streaming=True):
    """Options of a pipeline on ``runner``: ``direct`` (BundleBasedDirectRunner), ``fnapi``
    or ``prism`` (the project's Prism binary, the SDK harness in this process)."""
    if runner == "prism":
        options = PipelineOptions(["--runner=PrismRunner"])
        configure_runner(options)
    else:
        options = PipelineOptions()
        options.view_as(StandardOptions).runner = (
            BundleBasedDirectRunner() if runner == "direct" else FnApiRunner()
        )
    options.view_as(StandardOptions).streaming = streaming
    return options


def streaming_pipeline(runner="direct"):
    return BeamTestPipeline(options=pipeline_options(runner))


@pytest.mark.parametrize("runner", RUNNERS)
def test_early_on_time_late_and_too_late_panes(runner):
    first_window = (T0 - HOUR, T0 + HOUR)
    stream = (
        TestStream()
        .advance_watermark_to(T0)
        .add_elements(
            [
                engagement("post_viewed", "p1", T0 + 600),
                engagement("post_viewed", "p1", T0 + 900),
            ]
        )
        .advance_processing_time(CONFIG.early_firing + 1)  # early panes
        .advance_watermark_to(T0 + HOUR)  # on time for [T0-1h, T0+1h)
        .add_elements([engagement("post_liked", "p1", T0 + 1200)])  # late, within lateness
        .advance_watermark_to(T0 + 5 * HOUR)  # past every window of T0's hour + lateness
        .add_elements([engagement("comment_added", "p1", T0 + 1800)])  # too late
        .advance_watermark_to_infinity()
    )
    panes = [("ON_TIME", (2, 0, 0)), ("LATE", (2, 1, 0))]
    if runner == "direct":
        panes.insert(0, ("EARLY", (2, 0, 0)))
    # else Prism (2.77), measured: the TestStream's processing-time advance fires no early
    # pane of ScorePosts' windows, which lie behind a stateful step (a window right after
    # the TestStream does get its early pane on Prism); every other pane is the same.
    with streaming_pipeline(runner) as p:
        scored = p | stream | ScorePosts(CONFIG, streaming=True)
        assert_that(
            scored["engagement"]
            | beam.Filter(lambda e: (e.window_start, e.window_end) == first_window),
            equal_to(
                [
                    PostEngagement("p1", *first_window, counts, timing, index)
                    for index, (timing, counts) in enumerate(panes)
                ]
            ),
            label="FirstWindow",
        )
        assert_that(scored[TOO_LATE], equal_to([TooLate("p1", T0, (0, 0, 1))]), label="TooLate")


@pytest.mark.parametrize("runner", RUNNERS)
def test_too_late_data_is_never_counted_in_a_window(runner):
    stream = (
        TestStream()
        .advance_watermark_to(T0)
        .add_elements([engagement("post_viewed", "p2", T0 + 10)])
        .advance_watermark_to(T0 + 10 * HOUR)
        .add_elements(
            [
                engagement("post_viewed", "p2", T0 + 20),  # too late
                engagement("post_viewed", "p3", T0 + 30),  # a post never seen: too late too
                engagement("post_viewed", "p2", T0 + 10 * HOUR + 5),  # on time
            ]
        )
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline(runner) as p:
        scored = p | stream | ScorePosts(CONFIG, streaming=True)
        final = scored["engagement"] | beam.Filter(lambda e: e.timing == "ON_TIME")
        assert_that(
            final | beam.Map(lambda e: (e.post_id, e.window_start, e.counts)),
            equal_to(
                [
                    ("p2", T0 - HOUR, (1, 0, 0)),
                    ("p2", T0, (1, 0, 0)),
                    ("p2", T0 + 9 * HOUR, (1, 0, 0)),
                    ("p2", T0 + 10 * HOUR, (1, 0, 0)),
                ]
            ),
            label="OnTime",
        )
        assert_that(
            scored[TOO_LATE] | beam.Map(lambda late: (late.post_id, late.counts)),
            equal_to([("p2", (1, 0, 0)), ("p3", (1, 0, 0))]),
            label="TooLate",
        )


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_pipeline_modules_decision_wins_over_the_option(runner):
    stream = (
        TestStream()
        .advance_watermark_to(T0)
        .add_elements([engagement("post_viewed", "p1", T0 + 600)])
        .advance_processing_time(CONFIG.early_firing + 1)  # no early pane in batch mode
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline(runner) as p:
        scored = p | stream | ScorePosts(CONFIG, streaming=False)
        assert_that(
            scored["engagement"] | beam.Map(lambda e: (e.window_start, e.timing, e.pane_index)),
            equal_to([(T0 - HOUR, "ON_TIME", 0), (T0, "ON_TIME", 0)]),
            label="OnTimeOnly",
        )
        assert_that(scored[TOO_LATE], equal_to([]), label="NothingLate")


@pytest.mark.parametrize("runner", ["fnapi", "prism"])
def test_batch_counts_every_event_in_all_its_windows(runner):
    events = [
        engagement("post_viewed", "p1", T0 + 10),
        engagement("post_viewed", "p1", T0 + 20),
        engagement("post_liked", "p1", T0 + HOUR + 30),
        engagement("comment_added", "p2", T0 + 40),
    ]
    # One pane per window on either runner (Prism fires an accumulating window with
    # allowed lateness once more when it closes: a batch run has none).
    with BeamTestPipeline(options=pipeline_options(runner, streaming=False)) as p:
        scored = (
            p | beam.Create(events) | ScorePosts(CONFIG, streaming=False)
        )  # Create keeps the timestamps
        assert_that(
            scored["engagement"] | beam.Map(lambda e: (e.post_id, e.window_start, e.counts)),
            equal_to(
                [
                    ("p1", T0 - HOUR, (2, 0, 0)),
                    ("p1", T0, (2, 1, 0)),
                    ("p1", T0 + HOUR, (0, 1, 0)),
                    ("p2", T0 - HOUR, (0, 0, 1)),
                    ("p2", T0, (0, 0, 1)),
                ]
            ),
            label="Windows",
        )
        assert_that(scored[TOO_LATE], equal_to([]), label="NothingLate")
