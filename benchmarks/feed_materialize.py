"""Benchmark: build and write the feeds of 100,000 active users to Redis.

100,000 users, each following 0-20 of 1,000 authors and 0-5 of 50 tags; 5,000 candidate
posts with scores. ``BuildFeeds`` (the candidates broadcast once as a side input) ranks
the top 50 for every user and ``WriteFeeds`` replaces each ``feed:{userId}`` in the local
Redis, on FnApiRunner. The reference design needed ~26 s per run with a fleet of
serverless functions for "thousands of users"; the goal here is all 100,000 feeds in
<= 26 s wall on this 2-core machine.

Checks: every user has a feed of 50 posts, and 200 sampled feeds equal a brute-force
ranking of all 5,000 candidates. The last line is one JSON object: ``{"name":
"feed_materialize", "wall_s", "us_per_user", "redis_commands_per_user", ...}``.

    python benchmarks/feed_materialize.py [--users 100000] [--posts 5000]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from blogflow.io.feeds import WriteFeeds, read_feed
from blogflow.local import LocalStack
from blogflow.transforms.feeds import (
    BuildFeeds,
    Candidate,
    CandidateIndex,
    UserProfile,
    rank_every_candidate,
)
from blogflow.transforms.scoring import ScoringConfig

AUTHORS = 1_000
TAGS = [f"tag{i}" for i in range(50)]
CHUNK = 5_000
PREFIX = "bench:"


def make_candidates(posts: int) -> list[Candidate]:
    rng = random.Random(1)
    return [
        Candidate(
            f"p{i}",
            round(rng.lognormvariate(0, 1.5), 6),
            f"a{rng.randrange(AUTHORS)}",
            tuple(rng.sample(TAGS, rng.randint(0, 3))),
        )
        for i in range(posts)
    ]


def make_users(chunk: int, users: int) -> Iterator[UserProfile]:
    """The users of one chunk, generated on the worker (``beam.Create`` of 100k is slow)."""
    rng = random.Random(chunk)
    for n in range(chunk * CHUNK, min((chunk + 1) * CHUNK, users)):
        yield UserProfile(
            f"u{n}",
            authors=frozenset(f"a{rng.randrange(AUTHORS)}" for _ in range(rng.randint(0, 20))),
            tags=frozenset(rng.sample(TAGS, rng.randint(0, 5))),
            last_seen=0.0,
        )


def pipeline(users: int, candidates: list[Candidate], config: ScoringConfig) -> None:
    with beam.Pipeline(runner=FnApiRunner()) as p:
        index = p | "Candidates" >> beam.Create([CandidateIndex(candidates)])
        _ = (
            p
            | "Chunks" >> beam.Create(range((users + CHUNK - 1) // CHUNK))
            | "Reshuffle" >> beam.Reshuffle()
            | "Users" >> beam.FlatMap(make_users, users)
            | "BuildFeeds" >> BuildFeeds(index, config)
            | "WriteFeeds" >> WriteFeeds(prefix=PREFIX, ttl=config.feed_ttl)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--posts", type=int, default=5_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    config = ScoringConfig(feed_size=50, candidates=args.posts)
    candidates = make_candidates(args.posts)

    with (
        tempfile.TemporaryDirectory() as state,
        LocalStack(state_dir=state, services=("redis",)) as stack,
    ):
        stack.up()
        os.environ.update(stack.env)
        from blogflow.io.redis import connect

        client = connect()
        commands_before = int(client.info("stats")["total_commands_processed"])
        start = time.perf_counter()
        pipeline(args.users, candidates, config)
        wall = time.perf_counter() - start
        commands = int(client.info("stats")["total_commands_processed"]) - commands_before

        feeds = sum(1 for _ in client.scan_iter(match=f"{PREFIX}feed:*", count=5000))
        short = feeds != args.users
        rng = random.Random(7)
        sample = rng.sample(range(args.users), min(200, args.users))
        by_id = {
            p.user_id: p
            for chunk in {n // CHUNK for n in sample}
            for p in make_users(chunk, args.users)
        }
        wrong = []
        for n in sample:
            profile = by_id[f"u{n}"]
            expected = rank_every_candidate(profile, candidates, config)
            got = read_feed(client, profile.user_id, PREFIX)
            if [p for p, _ in got] != [p for p, _ in expected] or any(
                abs(a - b) > 1e-9 for (_, a), (_, b) in zip(got, expected, strict=True)
            ):
                wrong.append(profile.user_id)
        client.close()

    print(
        f"{args.users:,} feeds of {config.feed_size} from {args.posts:,} candidates: {wall:.2f} s"
    )
    if short or wrong:
        print(f"FEEDS WRONG: {feeds} written of {args.users}; wrong sampled feeds: {wrong[:5]}")
        sys.exit(1)
    print(f"all {feeds:,} feeds written; {len(sample)} sampled feeds equal a brute-force ranking")
    print(
        json.dumps(
            {
                "name": "feed_materialize",
                "wall_s": round(wall, 2),
                "us_per_user": round(wall / args.users * 1e6, 1),
                "redis_commands_per_user": round(commands / args.users, 3),
                "users": args.users,
                "candidates": args.posts,
                "feed_size": config.feed_size,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            }
        )
    )


if __name__ == "__main__":
    main()
