"""Benchmark: the summing pipeline vs a plain-Python loop over the same 1,000,000 packets.

Both sides read the same JSON-lines file of ``sum_packet`` events (1,000 arrays of 1,000
packets, interleaved) and do the same work per event: parse and validate it with
``blogflow.events.parse_event``, double the value, count each packetId once per array.

(a) a plain loop in this process;
(b) the summing pipeline (``SumToStores``: ParseEvents -> SumPackets -> WriteSums to the
    local MongoDB and Redis, dead letters to MongoDB) on FnApiRunner from the file.

The sides alternate for ``--rounds`` rounds (3) and each keeps its best time, as
``timeit`` does. Both results are checked equal. Prints the events/s of each and, on the
last line, one JSON object: ``{"name": "summing", "ratio": b/a, "peak_rss_mb": ...}``.
Goal: ratio >= 0.6 with peak RSS <= 1 GiB.

    python benchmarks/summing.py [--events 1000000] [--arrays 1000] [--rounds 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import sys
import tempfile
from pathlib import Path

import apache_beam as beam
from _rounds import best_of_rounds, timing_arguments
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from blogflow.events import parse_event
from blogflow.io.files import ReadFromJSONL
from blogflow.local import LocalStack
from blogflow.pipelines.summing import SumToStores

_TEMPLATE = (
    '{{"id":"{a}:{p}","type":"sum_packet","v":1,"occurredAt":"2026-11-21T10:{m:02d}:00Z",'
    '"userId":"bench","data":{{"arrayId":"{a}","packetId":{p},"packetValue":{v},'
    '"arrayLength":{n}}}}}\n'
)


def make_events(path: Path, events: int, arrays: int) -> None:
    """Writes ``events`` packets of ``arrays`` arrays, interleaved, values seeded."""
    per_array = events // arrays
    rng = random.Random(20261121)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        for packet in range(per_array):
            out.writelines(
                _TEMPLATE.format(
                    a=f"bench-{array:04d}",
                    p=packet,
                    v=rng.randint(-1000, 1000),
                    n=per_array,
                    m=packet % 60,
                )
                for array in range(arrays)
            )
    tmp.rename(path)


def plain_loop(path: Path) -> dict[str, int]:
    """(a): parse, double and sum per arrayId, counting each packetId once."""
    packets: dict[str, dict[int, int]] = {}
    with path.open("rb") as lines:
        for line in lines:
            data = parse_event(line).data
            packets.setdefault(data.arrayId, {}).setdefault(data.packetId, data.packetValue * 2)
    return {array_id: sum(values.values()) for array_id, values in packets.items()}


def pipeline(path: Path, database: str) -> None:
    """(b): the summing pipeline from the file, into the local MongoDB and Redis."""
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | "ReadFromJSONL" >> ReadFromJSONL(str(path))
            | "SumToStores"
            >> SumToStores(mongo_uri=None, database=database, redis_url=None, redis_prefix="bench:")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    timing_arguments(parser, events=1_000_000)
    parser.add_argument("--arrays", type=int, default=1_000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = args.data_dir / f"sum_packets_{args.events}_{args.arrays}.jsonl"
    if not path.exists():
        print(f"writing {args.events:,} events to {path} ...", flush=True)
        make_events(path, args.events, args.arrays)

    with (
        tempfile.TemporaryDirectory() as state,
        LocalStack(state_dir=state, services=("redis", "mongo")) as stack,
    ):
        stack.up()
        import os

        os.environ.update(stack.env)
        from blogflow.io import mongo

        client, db = mongo.connect(None, "bench_summing")
        client.drop_database("bench_summing")

        def plain() -> dict[str, int]:
            client.drop_database("bench_summing")
            return plain_loop(path)

        (plain_s, beam_s), (expected, _) = best_of_rounds(
            args.rounds,
            args.events,
            [
                ("(a) plain loop", plain),
                ("(b) summing pipeline", lambda: pipeline(path, "bench_summing")),
            ],
        )

        stored = {doc["_id"]: doc for doc in db.sums.find({}, {"digests": False})}
        wrong = [a for a, total in expected.items() if stored.get(a, {}).get("sum") != total]
        incomplete = [a for a, doc in stored.items() if doc["status"] != "complete"]
        dead = db.deadletters.count_documents({})
        client.drop_database("bench_summing")
        client.close()
        if wrong or incomplete or dead or len(stored) != len(expected):
            print(f"RESULTS DIFFER: wrong={wrong[:5]} incomplete={incomplete[:5]} dead={dead}")
            sys.exit(1)
        print(f"results equal: {len(stored)} complete sums, 0 dead letters")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "name": "summing",
                "ratio": round(plain_s / beam_s, 3),
                "peak_rss_mb": round(peak_mb, 1),
                "plain_events_per_s": round(args.events / plain_s),
                "beam_events_per_s": round(args.events / beam_s),
                "events": args.events,
                "rounds": args.rounds,
            }
        )
    )


if __name__ == "__main__":
    main()
