"""Benchmark: the summing job from files on a standalone Flink cluster, parallelism 1 vs 2.

A local stack (MongoDB, Redis) and a standalone Flink cluster of ``blogflow.local`` (a
JobManager, one TaskManager with 2 slots) run the summing job (``blogflow run summing
--source file://DIR/*.jsonl --runner flink --flink-master ...``) over ``--events``
``sum_packet`` events (``--arrays`` arrays, interleaved) in ``--files`` files, at
``--parallelism 1`` and ``2``, alternating for ``--rounds`` rounds, best of each.

The SDK harnesses are real processes: ``--environment_type=EXTERNAL`` on a Beam worker
pool (``apache_beam.runners.worker.worker_pool_main``) that starts one Python process per
harness, and ``--sdk_worker_parallelism`` equal to the parallelism, so parallelism 2
means two Python processes (with ``LOOPBACK`` every harness would be a thread of this
process, behind one GIL). The time is the Flink job's own duration (its REST API:
submission to end, without the job server's start), events/s = events / that time. Every
run's sums are checked against a plain-Python sum of the same lines.

Prints each run, the machine's load averages before and after, and on the last line one
JSON object: ``{"name": "flink_parallelism", "ratio": p2 / p1, ...}``. Goal: ratio >= 1.6.

    python benchmarks/flink_parallelism.py [--events 200000] [--arrays 200] [--files 4]
        [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pymongo

from blogflow.local import LocalStack
from blogflow.local.stack import FLINK_SERVICES
from blogflow.pipelines import summing as summing_job
from blogflow.runners import flink

sys.path.insert(0, str(Path(__file__).parent))
from summing import check_sums, make_events, sum_lines  # noqa: E402


def rest(master: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{master}{path}", timeout=5) as answer:  # noqa: S310
        return json.load(answer)


def run_once(
    source: str, master: str, endpoint: str, pool: str, parallelism: int, db: Any
) -> float:
    """Runs the job at ``parallelism``; returns the Flink job's duration in seconds."""
    db.client.drop_database(db.name)
    before = {j["jid"] for j in rest(master, "/jobs/overview")["jobs"]}
    summing_job.run(
        [
            f"--source={source}",
            f"--mongo-db={db.name}",
            "--runner=flink",
            f"--flink-master={master}",
            f"--job_endpoint={endpoint}",
            f"--parallelism={parallelism}",
            f"--sdk_worker_parallelism={parallelism}",
            "--environment_type=EXTERNAL",
            f"--environment_config={pool}",
        ]
    )
    (job,) = [j for j in rest(master, "/jobs/overview")["jobs"] if j["jid"] not in before]
    assert job["state"] == "FINISHED", job
    return float(job["duration"]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--arrays", type=int, default=200)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="blogflow-bench-flink-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        whole = Path(tmp) / "all.jsonl"
        make_events(whole, args.events, args.arrays)
        lines = whole.read_bytes().splitlines(keepends=True)
        expected = sum_lines(lines)
        for i in range(args.files):
            (data / f"part-{i}.jsonl").write_bytes(b"".join(lines[i :: args.files]))
        whole.unlink()
        services = ["redis", "mongo", *FLINK_SERVICES]
        with (
            LocalStack(state_dir=Path(tmp) / "stack", services=services) as stack,
            flink.worker_pool() as pool,
        ):
            os.environ.update(stack.env)
            master = stack.env["FLINK_MASTER"]
            deadline = time.monotonic() + 60
            while rest(master, "/overview")["slots-total"] < 2:
                if time.monotonic() > deadline:
                    raise SystemExit("the TaskManager did not register")
                time.sleep(0.5)
            db = pymongo.MongoClient(stack.env["MONGODB_URI"])["bench_flink"]
            load_before = os.getloadavg()
            best: dict[int, float] = {}
            with flink.job_server(master) as endpoint:
                for round_ in range(1, args.rounds + 1):
                    for parallelism in (1, 2):
                        seconds = run_once(
                            f"file://{data}/*.jsonl", master, endpoint, pool, parallelism, db
                        )
                        wrong = check_sums(db, expected)
                        if wrong:
                            raise SystemExit(f"parallelism {parallelism}: {wrong}")
                        best[parallelism] = min(seconds, best.get(parallelism, seconds))
                        print(  # noqa: T201
                            f"round {round_}: parallelism {parallelism}: {seconds:.1f} s, "
                            f"{args.events / seconds:,.0f} events/s"
                        )
            load_after = os.getloadavg()
    rates = {p: args.events / s for p, s in best.items()}
    print(f"load averages before {load_before}, after {load_after} (2 cores)")  # noqa: T201
    print(  # noqa: T201
        json.dumps(
            {
                "name": "flink_parallelism",
                "ratio": round(rates[2] / rates[1], 3),
                "events_per_s_p1": round(rates[1]),
                "events_per_s_p2": round(rates[2]),
                "events": args.events,
                "load_before": load_before,
                "load_after": load_after,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
