"""The feed job end to end: a JSON-lines archive in, feeds in the real local Redis out."""

import datetime as dt
import json

import pytest

from blogflow.events import make_event
from blogflow.io import redis as redis_io
from blogflow.io.feeds import read_feed, read_feedmeta, window_text
from blogflow.pipelines import feed
from blogflow.transforms.scoring import ScoringConfig, personal_score, post_score

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)
AS_OF = T0 + dt.timedelta(hours=12, minutes=30)


def at(hours):
    return T0 + dt.timedelta(hours=hours)


def post(kind, post_id, author, tags, when, **extra):
    data = {
        "postId": post_id,
        "authorId": author,
        "publicationId": "pub1",
        "title": f"Post {post_id}",
        "slug": post_id,
        "tags": tags,
        "publishedAt": when.isoformat(),
    }
    return make_event(kind, data, user_id=author, occurred_at=when, **extra)


def engage(kind, post_id, user, when, event_id=None):
    return make_event(kind, {"postId": post_id}, user_id=user, occurred_at=when, event_id=event_id)


def scenario():
    """Events, as the site would emit them, in no particular order."""
    like = engage("post_liked", "p2", "u1", at(6), event_id="like-p2-u1")
    events = [
        post("post_published", "p1", "alice", ["python"], at(1)),
        post("post_published", "p2", "bob", ["beam"], at(2)),
        post("post_published", "p3", "carol", [], at(3)),
        make_event("post_deleted", {"postId": "p3"}, user_id="carol", occurred_at=at(5)),
        make_event("user_followed", {"authorId": "bob"}, user_id="u1", occurred_at=at(4)),
        make_event("tag_followed", {"tag": "python"}, user_id="u2", occurred_at=at(4)),
        make_event("user_signed_up", {}, user_id="u3", occurred_at=T0 - dt.timedelta(days=10)),
        like,
        like,  # redelivered: counted once
        engage("post_liked", "p2", "u2", at(7)),
        engage("comment_added", "p2", "u2", at(8)),
        *[engage("post_viewed", "p1", f"u{i % 2 + 1}", at(5 + i / 10)) for i in range(5)],
        engage("post_liked", "p1", "u2", at(9)),
        *[engage("post_viewed", "p3", "u1", at(6)) for _ in range(10)],  # deleted post
        engage("post_viewed", "p9", "u1", at(6)),  # never published
        # after --as-of but within the skew: left for a later run
        engage("post_viewed", "p1", "u4", AS_OF + dt.timedelta(minutes=2)),
        engage("post_viewed", "p1", "u5", at(30)),  # far after --as-of: dead letter
    ]
    return events


def expected_scores():
    config = ScoringConfig()
    as_of = AS_OF.timestamp()
    p1 = post_score((5, 1, 0), at(1).timestamp(), as_of, config)
    p2 = post_score((0, 2, 1), at(2).timestamp(), as_of, config)
    return config, p1, p2


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [e.to_json() for e in scenario()] + [b'{"type": "post_viewed", "oops"']
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def run_feed(archive, mongo_db, redis_prefix, *extra):
    feed.run(
        [
            "--source",
            f"file://{archive}",
            "--as-of",
            AS_OF.isoformat(),
            "--mongo-db",
            mongo_db.name,
            "--redis-prefix",
            redis_prefix,
            *extra,
        ]
    )


def test_feeds_from_an_archive(archive, mongo_db, redis_prefix):
    run_feed(archive, mongo_db, redis_prefix)
    config, p1, p2 = expected_scores()
    client = redis_io.connect()
    u1 = read_feed(client, "u1", redis_prefix)  # follows bob, who wrote p2
    u2 = read_feed(client, "u2", redis_prefix)  # follows #python, p1's tag
    boosted_p2 = personal_score(p2, author_followed=True, tags_followed=0, config=config)
    boosted_p1 = personal_score(p1, author_followed=False, tags_followed=1, config=config)
    assert [p for p, _ in u1] == sorted(
        ["p1", "p2"], key=lambda p: -{"p1": p1, "p2": boosted_p2}[p]
    )
    assert dict(u1) == pytest.approx({"p1": p1, "p2": boosted_p2})
    assert dict(u2) == pytest.approx({"p1": boosted_p1, "p2": p2})
    # authors are active users too; u3 was last seen 10 days ago; u4 and u5 only later
    for user in ("alice", "bob", "carol"):
        assert dict(read_feed(client, user, redis_prefix)) == pytest.approx({"p1": p1, "p2": p2})
    for user in ("u3", "u4", "u5"):
        assert read_feed(client, user, redis_prefix) == []
    assert 0 < client.ttl(f"{redis_prefix}feed:u1") <= config.feed_ttl
    client.close()

    docs = list(mongo_db.deadletters.find({"pipeline": "feed"}))
    letters = {d["stage"]: d for d in docs}
    assert len(docs) == 2 and set(letters) == {"parse", "as_of"}
    assert '"userId":"u5"' in letters["as_of"]["payload"]
    assert "invalid JSON" in letters["parse"]["error"]
    assert "after the run's as-of time" in letters["as_of"]["error"]


def test_a_rerun_gives_the_same_feeds(archive, mongo_db, redis_prefix):
    run_feed(archive, mongo_db, redis_prefix)
    client = redis_io.connect()
    first = {u: read_feed(client, u, redis_prefix) for u in ("u1", "u2", "alice")}
    run_feed(archive, mongo_db, redis_prefix)
    assert {u: read_feed(client, u, redis_prefix) for u in first} == first
    docs = list(mongo_db.deadletters.find({"pipeline": "feed"}, {"payload": 0}))
    assert len(docs) == 2, docs
    client.close()


def test_weights_and_sizes_come_from_options(archive, mongo_db, redis_prefix):
    run_feed(archive, mongo_db, redis_prefix, "--feed-size", "1", "--like-weight", "0")
    config = ScoringConfig(like_weight=0)
    client = redis_io.connect()
    u1 = read_feed(client, "u1", redis_prefix)
    assert len(u1) == 1
    p2 = post_score((0, 2, 1), at(2).timestamp(), AS_OF.timestamp(), config)
    p1 = post_score((5, 1, 0), at(1).timestamp(), AS_OF.timestamp(), config)
    best = max(("p1", p1), ("p2", 2 * p2), key=lambda item: item[1])
    assert u1 == [(best[0], pytest.approx(best[1]))]
    client.close()


def test_bad_options_are_refused_clearly():
    with pytest.raises(SystemExit, match="window_size"):
        feed.run(["--source", "file:///nowhere", "--window-size", "5400"])
    with pytest.raises(SystemExit, match="ISO 8601"):
        feed.run(["--source", "file:///nowhere", "--as-of", "yesterday"])
    with pytest.raises(SystemExit, match="time zone"):
        feed.run(["--source", "file:///nowhere", "--as-of", "2026-11-21T12:00:00"])


def test_every_feed_flag_takes_both_spellings():
    import argparse

    from blogflow.pipelines.feed import FeedOptions

    parser = argparse.ArgumentParser()
    FeedOptions._add_argparse_args(parser)
    actions = [a for a in parser._actions if a.dest != "help"]
    assert len(actions) == 19
    for action in actions:
        value = {int: "7", float: "0.5"}.get(action.type, "2026-11-21T12:00:00Z")
        expected = action.type(value) if action.type else value
        for flag in (f"--{action.dest}", f"--{action.dest.replace('_', '-')}"):
            for argv in ([flag, value], [f"{flag}={value}"]):
                options = feed.JOB.parse(["--source", "file:///x", *argv])
                assert getattr(options.view_as(FeedOptions), action.dest) == expected, argv
    options = feed.JOB.parse(["--source=file:///x", "--as_of=2026-11-21T12:00:00Z"])
    assert options.view_as(FeedOptions).config() == ScoringConfig()


def test_feed_show_and_purge_commands(archive, mongo_db, redis_prefix):
    from click.testing import CliRunner

    from blogflow.cli import cli

    run_feed(archive, mongo_db, redis_prefix)
    client = redis_io.connect()
    stored = read_feed(client, "u1", redis_prefix)
    runner = CliRunner()
    shown = runner.invoke(cli, ["feed", "show", "u1", "--redis-prefix", redis_prefix, "--json"])
    assert shown.exit_code == 0, shown.output
    assert [(p["postId"], p["score"]) for p in json.loads(shown.output)] == stored
    text = runner.invoke(cli, ["feed", "show", "u1", "--redis-prefix", redis_prefix])
    assert f"feed of u1: {len(stored)} posts" in text.output
    window = window_text(feed.engagement_window(AS_OF.timestamp(), ScoringConfig()))
    assert f"(schedule) from the engagement window {window}" in text.output
    assert read_feedmeta(client, "u1", redis_prefix)["window"] == window
    missing = runner.invoke(cli, ["feed", "show", "nobody", "--redis-prefix", redis_prefix])
    assert missing.exit_code == 1 and "no feed stored" in missing.output

    purged = runner.invoke(cli, ["feed", "purge", "--redis-prefix", redis_prefix, "--yes"])
    assert purged.exit_code == 0 and "purged 5 feeds" in purged.output
    assert read_feed(client, "u1", redis_prefix) == []
    client.close()


def test_published_to_kinesis_gives_the_same_feeds_as_the_archive(
    archive, mongo_db, redis_prefix, unique_name
):
    from click.testing import CliRunner

    from blogflow.cli import cli

    run_feed(archive, mongo_db, redis_prefix)
    client = redis_io.connect()
    users = ("u1", "u2", "alice", "bob", "carol")
    from_archive = {u: read_feed(client, u, redis_prefix) for u in users}
    assert all(from_archive.values())
    purged = CliRunner().invoke(cli, ["feed", "purge", "--redis-prefix", redis_prefix, "--yes"])
    assert purged.exit_code == 0, purged.output

    stream = f"feed-{unique_name}"
    published = CliRunner().invoke(
        cli, ["publish", str(archive), "--to", f"kinesis://{stream}", "--create", "--shards", "2"]
    )
    assert published.exit_code == 0, published.output
    assert f"published {len(archive.read_bytes().splitlines())} events" in published.output
    try:
        feed.run(
            [
                "--source",
                f"kinesis://{stream}",
                "--drain",
                "--idle-timeout",
                "2",
                "--as-of",
                AS_OF.isoformat(),
                "--mongo-db",
                mongo_db.name,
                "--redis-prefix",
                redis_prefix,
            ]
        )
        assert {u: read_feed(client, u, redis_prefix) for u in users} == from_archive
    finally:
        import boto3

        boto3.client("kinesis").delete_stream(StreamName=stream, EnforceConsumerDeletion=True)
        client.close()


def test_a_pubsub_source_makes_a_streaming_job_on_prism(capsys):
    from apache_beam.options.pipeline_options import StandardOptions

    from blogflow.options import SourceOptions, StoreOptions, parse_pipeline_args

    options = parse_pipeline_args(
        ["--source", "pubsub://events"], [SourceOptions, StoreOptions], prog="t", description=""
    )
    standard = options.view_as(StandardOptions)
    assert standard.streaming and standard.runner == "PrismRunner"
    batch = parse_pipeline_args(
        ["--source", "file:///x"], [SourceOptions, StoreOptions], prog="t", description=""
    )
    assert not batch.view_as(StandardOptions).streaming
    with pytest.raises(SystemExit):
        feed.run(["--source", "pubsub://events", "--drain"])
    assert "streaming job: --drain does not apply" in capsys.readouterr().err
