"""Benchmark: windowed engagement scoring vs a plain loop, and on FnApiRunner vs Prism.

1,000,000 engagement events (``post_viewed`` 80 %, ``post_liked`` 15 %, ``comment_added``
5 %) on 1,000 posts of skewed popularity, spread over 24 hours, in one JSON-lines file.
Both sides parse and validate every line with ``blogflow.events.parse_event`` and count
each post's views, likes and comments in every 24 h sliding window (period 1 h) it falls
in, then score each (post, window) with ``engagement_score``:

(a) a plain loop in this process that assigns each event to its 24 windows;
(b) ``ReadFromJSONL | ParseEvents | ScorePosts`` on FnApiRunner, the scores written to a
    JSON-lines file;
(c) the same pipeline on Prism (``--runner prism``: the Go job server of
    ``blogflow.runners.prism``, the SDK harness in this process, ``LOOPBACK``).

The sides alternate for ``--rounds`` rounds and each keeps its best time. Every result
is checked equal to (a)'s. The last line is one JSON object: ``{"name": "feed_windows",
"ratio": b/a, "prism_vs_fnapi": c/b, ...}``. Goal: ratio >= 0.4.

    python benchmarks/feed_windows.py [--events 1000000] [--posts 1000] [--rounds 3]
        [--runners fnapi,prism]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import apache_beam as beam
from _rounds import best_of_rounds, timing_arguments
from _runners import run_pipeline, runner_arguments, start_prism

from blogflow.events import parse_event
from blogflow.io.files import ReadFromJSONL
from blogflow.transforms.parsing import ParseEvents
from blogflow.transforms.scoring import (
    ENGAGEMENT_TYPES,
    HOUR,
    ScorePosts,
    ScoringConfig,
    engagement_score,
    sliding_windows,
)

_LABELS = {"fnapi": "(b) ScorePosts on FnApiRunner", "prism": "(c) ScorePosts on Prism"}
START = 1_795_219_200  # 2026-11-21T00:00:00Z
_TEMPLATE = (
    '{{"id":"e{n}","type":"{t}","v":1,"occurredAt":"{at}","userId":"u{u}",'
    '"data":{{"postId":"p{p}"}}}}\n'
)


def make_events(path: Path, events: int, posts: int) -> None:
    """Writes ``events`` engagement events, seeded, in roughly increasing event time."""
    import datetime as dt

    rng = random.Random(20261121)
    weights = [1 / (rank + 1) for rank in range(posts)]  # Zipf-like popularity
    post_ids = rng.choices(range(posts), weights=weights, k=events)
    types = rng.choices(ENGAGEMENT_TYPES, weights=(80, 15, 5), k=events)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        for n in range(events):
            at = START + n * 24 * HOUR // events + rng.randint(-300, 300)
            stamp = dt.datetime.fromtimestamp(at, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.write(_TEMPLATE.format(n=n, t=types[n], at=stamp, u=n % 5000, p=post_ids[n]))
    tmp.rename(path)


def plain_loop(path: Path, config: ScoringConfig) -> dict[tuple[str, int], float]:
    """(a): parse, assign the sliding windows, count per post and window, score."""
    kind_of = {event_type: kind for kind, event_type in enumerate(ENGAGEMENT_TYPES)}
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    size, period = config.window_size, config.window_period
    with path.open("rb") as lines:
        for line in lines:
            event = parse_event(line)
            kind = kind_of[event.type]
            post_id = event.data.postId
            for start, _ in sliding_windows(event.event_time, size, period):
                counts[post_id, start][kind] += 1
    return {key: engagement_score((v, lk, c), config) for key, (v, lk, c) in counts.items()}


def pipeline(path: Path, out: Path, config: ScoringConfig, runner: str = "fnapi") -> None:
    """(b), (c): the windowed scoring, every (post, window) score written to ``out``."""
    with run_pipeline(runner) as p:
        events = p | "ReadFromJSONL" >> ReadFromJSONL(str(path))
        scored = events | "ParseEvents" >> ParseEvents(accept=ENGAGEMENT_TYPES)
        _ = (
            (scored.events | "ScorePosts" >> ScorePosts(config, streaming=False))["engagement"]
            | "Score"
            >> beam.Map(
                lambda e: json.dumps(
                    [e.post_id, e.window_start, engagement_score(e.counts, config)]
                )
            )
            | "Write" >> beam.io.WriteToText(str(out), num_shards=1, shard_name_template="")
        )


def read_scores(out: Path) -> dict[tuple[str, int], float]:
    with out.open() as lines:
        return {(post, start): score for post, start, score in map(json.loads, lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    timing_arguments(parser, events=1_000_000)
    parser.add_argument("--posts", type=int, default=1_000)
    runner_arguments(parser)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    unknown = set(args.runners) - set(_LABELS)
    if unknown or "fnapi" not in args.runners:
        parser.error(f"--runners must include fnapi and name only {', '.join(_LABELS)}")
    config = ScoringConfig()

    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = args.data_dir / f"engagement_{args.events}_{args.posts}.jsonl"
    if not path.exists():
        print(f"writing {args.events:,} events to {path} ...", flush=True)
        make_events(path, args.events, args.posts)

    if "prism" in args.runners:
        start_prism()  # once, before the clock runs, as a job's first run starts it
    with tempfile.TemporaryDirectory() as tmp:
        outs = {runner: Path(tmp) / f"scores_{runner}.jsonl" for runner in args.runners}
        sides = [("(a) plain loop", lambda: plain_loop(path, config))]
        sides += [
            (_LABELS[runner], lambda runner=runner: pipeline(path, outs[runner], config, runner))
            for runner in args.runners
        ]
        best, (expected, *_) = best_of_rounds(args.rounds, args.events, sides)
        seconds = dict(zip(["plain", *args.runners], best, strict=True))
        got = {runner: read_scores(out) for runner, out in outs.items()}
    for runner, scores in got.items():
        wrong = [k for k, v in expected.items() if abs(scores.get(k, -1.0) - v) > 1e-9]
        if wrong or len(scores) != len(expected):
            print(
                f"RESULTS DIFFER on {runner}: {len(wrong)} of {len(expected)} scores, "
                f"e.g. {wrong[:3]}"
            )
            sys.exit(1)
    print(f"results equal: {len(expected):,} (post, window) scores on each runner")
    report = {
        "name": "feed_windows",
        "ratio": round(seconds["plain"] / seconds["fnapi"], 3),
        "plain_events_per_s": round(args.events / seconds["plain"]),
        "beam_events_per_s": round(args.events / seconds["fnapi"]),
        "windows_scored": len(expected),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "events": args.events,
        "rounds": args.rounds,
    }
    if "prism" in seconds:
        report["prism_events_per_s"] = round(args.events / seconds["prism"])
        report["prism_vs_fnapi"] = round(seconds["fnapi"] / seconds["prism"], 3)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
