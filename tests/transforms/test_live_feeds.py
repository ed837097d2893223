"""The live feed job's pure logic: snapshots, profiles as of a time, patched indexes."""

from blogflow.transforms.feeds import (
    Candidate,
    CandidateIndex,
    PostInfo,
    UserProfile,
    build_feed,
    to_candidate,
)
from blogflow.transforms.live_feeds import (
    LatestSnapshotsFn,
    Reader,
    Snapshot,
    best_candidates,
    feed_shard,
    patch_index,
    profile_at,
    refreshes_holding,
    snapshot,
)
from blogflow.transforms.scoring import HOUR, ScoringConfig, post_score

CONFIG = ScoringConfig(window_size=4 * HOUR, window_period=HOUR, feed_size=3)
T = 1_700_000_000 // HOUR * HOUR


def info(post_id="p1", at=T, published=T, *, deleted=False, author="alice", tags=("x",)):
    return PostInfo(post_id, author, tags, published, deleted, (at, f"e-{post_id}-{at}"))


def test_a_post_is_in_the_refreshes_whose_window_holds_its_publication():
    assert list(refreshes_holding(T + 10, CONFIG)) == [T + h * HOUR for h in (1, 2, 3, 4)]
    assert list(refreshes_holding(T, CONFIG)) == [T + h * HOUR for h in (1, 2, 3, 4)]


def test_a_new_post_is_a_candidate_with_score_zero_only_in_its_window():
    new = info(published=T + 60, at=T + 60)
    assert to_candidate("p1", None, new, T + HOUR, CONFIG, window_end=T + HOUR).score == 0.0
    assert to_candidate("p1", None, new, T + HOUR, CONFIG) is None  # no window: as before
    later = T + 6 * HOUR  # its window has passed: engagement makes it a candidate again
    assert to_candidate("p1", None, new, later, CONFIG, window_end=later) is None
    assert to_candidate("p1", (1, 0, 0), new, later, CONFIG, window_end=later).score > 0
    gone = info(published=T + 60, at=T + 120, deleted=True)
    assert to_candidate("p1", (9, 9, 9), gone, later, CONFIG, window_end=later) is None


def test_a_snapshot_takes_the_posts_version_as_of_its_refresh():
    published = info(at=T + 60, published=T + 60, tags=("x",))
    retagged = info(at=T + HOUR + 60, published=T + 60, tags=("y",))
    deleted = info(at=T + 2 * HOUR + 60, published=T + 60, deleted=True)
    versions = [published, retagged, deleted]
    first = snapshot("p1", versions, (3, 1, 0), T + HOUR, CONFIG)
    assert first.tags == ("x",)
    assert first.score == post_score((3, 1, 0), T + 60, T + HOUR, CONFIG)
    assert snapshot("p1", versions, None, T + 2 * HOUR, CONFIG).tags == ("y",)
    assert snapshot("p1", versions, (5, 0, 0), T + 3 * HOUR, CONFIG) is None
    assert snapshot("p1", [], (5, 0, 0), T + HOUR, CONFIG) is None  # never published


def test_a_profile_as_of_a_time_counts_what_happened_up_to_it():
    reader = Reader(
        authors={"alice": T, "bob": T + HOUR}, tags={"x": T + 2 * HOUR}, seen={T + HOUR: T + 30}
    )
    reader.seen_before = T - 10
    assert profile_at("u", reader, T) == UserProfile("u", frozenset({"alice"}), frozenset(), T - 10)
    assert profile_at("u", reader, T + HOUR).authors == {"alice", "bob"}
    assert profile_at("u", reader, T + HOUR).last_seen == T + 30
    assert profile_at("u", reader) == UserProfile(
        "u", frozenset({"alice", "bob"}), frozenset({"x"}), T + 30
    )


def test_a_patched_index_takes_posts_out_in_and_keeps_scores():
    index = CandidateIndex([Candidate("p1", 5.0, "alice", ("x",)), Candidate("p2", 3.0, "bob", ())])
    patched = patch_index(
        index,
        [
            info("p1", deleted=True),
            info("p2", author="bob", tags=("y",)),
            info("p3", author="carol", tags=()),
        ],
    )
    assert [(c.post_id, c.score, c.tags) for c in patched.ranked] == [
        ("p2", 3.0, ("y",)),
        ("p3", 0.0, ()),
    ]
    follower = UserProfile("u", frozenset({"carol"}))
    assert [p for p, _ in build_feed(follower, patched, CONFIG)] == ["p2", "p3"]


def test_the_refresh_index_keeps_the_latest_snapshot_of_each_post():
    combine = LatestSnapshotsFn()
    a = [
        Snapshot(T, "p1", 1, Candidate("p1", 1.0, "a", ())),
        Snapshot(T, "p2", 1, Candidate("p2", 2.0, "a", ())),
    ]
    b = [
        Snapshot(T, "p1", 3, Candidate("p1", 9.0, "a", ())),
        Snapshot(T, "p2", 2, None),  # deleted since
        Snapshot(T, "p3", 1, Candidate("p3", 0.5, "a", ())),
    ]
    accumulators = []
    for part in (a, b[::-1]):  # any order
        acc = combine.create_accumulator()
        for snap in part:
            acc = combine.add_input(acc, snap)
        accumulators.append(acc)
    latest = combine.extract_output(combine.merge_accumulators(accumulators[::-1]))
    assert sorted(s.seq for s in latest.values()) == [1, 2, 3]
    best = best_candidates(latest, 2)
    assert [(c.post_id, c.score) for c in best.ranked] == [("p1", 9.0), ("p3", 0.5)]


def test_users_spread_over_the_shards():
    shards = [feed_shard(f"u{n}", 16) for n in range(1600)]
    assert set(shards) == set(range(16))
    assert max(shards.count(s) for s in range(16)) < 2 * 100
    assert feed_shard("u1", 16) == feed_shard("u1", 16)
