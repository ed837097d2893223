"""Benchmark: the summing pipeline vs a plain-Python loop, and on FnApiRunner vs Prism.

Both sides read the same JSON-lines file of ``sum_packet`` events (1,000 arrays of 1,000
packets, interleaved) and do the same work per event: parse and validate it with
``blogflow.events.parse_event``, double the value, count each packetId once per array.

(a) a plain loop in this process;
(b) the summing pipeline (``SumToStores``: ParseEvents -> SumPackets -> WriteSums to the
    local MongoDB and Redis, dead letters to MongoDB) on FnApiRunner from the file;
(c) the same pipeline on Prism (``--runner prism``: the Go job server of
    ``blogflow.runners.prism``, the SDK harness in this process, ``LOOPBACK``).

The sides alternate for ``--rounds`` rounds (3) and each keeps its best time, as
``timeit`` does. Each pipeline side writes into its own database, dropped before each of
its runs, and every result is checked equal to (a)'s.

Then the drain, ``blogflow run summing --source sqs://Q --drain --idle-timeout 1``
(``summing.run``), of ``--sqs-messages`` (500: 5 arrays of 100 packets) sent to a
fresh moto SQS queue before each run, on FnApiRunner and on Prism, alternating, best of
``--rounds``: events/s count from the start of ``run`` (start-up included) until every
sum is complete in MongoDB (polled); the wall time of the whole run is printed beside.
A bundle's sums are written when it ends (after 1,000 messages or 5 s of reading), and
the last one ends with the drain, after the 1 s idle timeout: that second is in both.
moto slows down badly with queue depth (a receive costs ~0.1 s at 200 queued, ~1 s at
1,000), hence the small queue: these figures are bounded by moto, and compare what each
runner adds to it.

Then, with ``--streaming`` (the default), the same messages to the job running unbounded
on Prism (a streaming job, as ``--source sqs://Q`` without ``--drain`` makes one): a
warm-up array is sent and awaited, then the clock runs from the first message sent until
every sum is complete; the job is cancelled after.

Prints the events/s of each and, on the last line, one JSON object: ``{"name":
"summing", "ratio": b/a, "peak_rss_mb": ..., "prism_vs_fnapi": c/b, ...}``.
Goal: ratio >= 0.6 with peak RSS <= 1 GiB.

    python benchmarks/summing.py [--events 1000000] [--arrays 1000] [--rounds 3]
        [--runners fnapi,prism] [--sqs-messages 500] [--no-streaming] [--data-dir DIR]
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
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from _rounds import best_of_rounds, timing_arguments
from _runners import run_pipeline, runner_arguments, start_prism, use_prism

from blogflow.events import parse_event
from blogflow.io.files import ReadFromJSONL
from blogflow.local import LocalStack
from blogflow.pipelines.summing import SumToStores

_TEMPLATE = (
    '{{"id":"{a}:{p}","type":"sum_packet","v":1,"occurredAt":"2026-11-21T10:{m:02d}:00Z",'
    '"userId":"bench","data":{{"arrayId":"{a}","packetId":{p},"packetValue":{v},'
    '"arrayLength":{n}}}}}\n'
)
_LABELS = {"fnapi": "(b) FnApiRunner", "prism": "(c) Prism"}
#: Seconds without a message after which a timed drain stops.
_IDLE_TIMEOUT = 1.0
#: Seconds a drain or the streaming job has to complete every sum before it counts as failed.
_COMPLETE_SECONDS = 300.0


def event_lines(events: int, arrays: int, prefix: str = "bench") -> Iterator[str]:
    """``events`` packets of ``arrays`` arrays, interleaved, values seeded."""
    per_array = events // arrays
    rng = random.Random(20261121)
    for packet in range(per_array):
        for array in range(arrays):
            yield _TEMPLATE.format(
                a=f"{prefix}-{array:04d}",
                p=packet,
                v=rng.randint(-1000, 1000),
                n=per_array,
                m=packet % 60,
            )


def make_events(path: Path, events: int, arrays: int) -> None:
    """Writes :func:`event_lines` to ``path``."""
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as out:
        out.writelines(event_lines(events, arrays))
    tmp.rename(path)


def sum_lines(lines: Iterable[bytes | str]) -> dict[str, int]:
    """Parse, double and sum per arrayId, counting each packetId once."""
    packets: dict[str, dict[int, int]] = {}
    for line in lines:
        data = parse_event(line).data
        packets.setdefault(data.arrayId, {}).setdefault(data.packetId, data.packetValue * 2)
    return {array_id: sum(values.values()) for array_id, values in packets.items()}


def plain_loop(path: Path) -> dict[str, int]:
    """(a): :func:`sum_lines` over the file."""
    with path.open("rb") as lines:
        return sum_lines(lines)


def pipeline(path: Path, database: str, runner: str = "fnapi") -> None:
    """(b), (c): the summing pipeline from the file, into the local MongoDB and Redis."""
    with run_pipeline(runner) as p:
        _ = (
            p
            | "ReadFromJSONL" >> ReadFromJSONL(str(path))
            | "SumToStores"
            >> SumToStores(
                mongo_uri=None, database=database, redis_url=None, redis_prefix=f"{database}:"
            )
        )


def check_sums(db: Any, expected: dict[str, int]) -> str | None:
    """None if ``db`` holds exactly ``expected``, all complete, no dead letter; else why."""
    stored = {doc["_id"]: doc for doc in db.sums.find({}, {"digests": False})}
    wrong = [a for a, total in expected.items() if stored.get(a, {}).get("sum") != total]
    incomplete = [a for a, doc in stored.items() if doc["status"] != "complete"]
    dead = db.deadletters.count_documents({})
    if wrong or incomplete or dead or len(stored) != len(expected):
        return f"wrong={wrong[:5]} incomplete={incomplete[:5]} dead={dead} stored={len(stored)}"
    return None


def wait_complete(
    db: Any, array_ids: list[str], deadline: float, ended: Callable[[], bool] = lambda: False
) -> float | None:
    """Polls until every array is complete: the ``perf_counter`` then; None once past
    ``deadline`` or once ``ended()`` (the job stopped by itself)."""
    query = {"_id": {"$in": array_ids}, "status": "complete"}
    while time.perf_counter() < deadline and not ended():
        if db.sums.count_documents(query) == len(array_ids):
            return time.perf_counter()
        time.sleep(0.02)
    return None


def queue_left(client: Any, url: str) -> int:
    """Messages still in the queue, visible or in flight."""
    attributes = client.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


class _Queues:
    """Fresh moto SQS queues, each deleted after use."""

    def __init__(self) -> None:
        from blogflow.io import aws, sqs

        self._sqs = sqs
        self.client = aws.make_client("sqs")

    def create(self, label: str) -> str:
        name = f"bench-summing-{label}-{uuid.uuid4().hex[:8]}"
        return self._sqs.create_queue(name, visibility_timeout=30)

    def send(self, url: str, bodies: list[str]) -> None:
        self._sqs.send_messages(url, bodies)

    def delete(self, url: str) -> None:
        self.client.delete_queue(QueueUrl=url)


def drain_runners(
    runners: tuple[str, ...], rounds: int, bodies: list[str], expected: dict[str, int], connect
) -> dict[str, dict[str, float]]:
    """The drain on each runner, alternating, best of ``rounds``: seconds to complete, wall."""
    from blogflow.pipelines import summing

    queues = _Queues()
    best: dict[str, dict[str, float]] = {}
    array_ids = sorted(expected)
    try:
        for round_no in range(1, rounds + 1):
            shown = []
            for runner in runners:
                database = f"bench_drain_{runner}"
                client, db = connect(database)
                client.drop_database(database)
                url = queues.create(runner)
                queues.send(url, bodies)
                done: dict[str, float | None] = {}
                start = time.perf_counter()
                watcher = threading.Thread(
                    target=lambda db=db, done=done, start=start: done.update(
                        at=wait_complete(db, array_ids, start + _COMPLETE_SECONDS)
                    ),
                    daemon=True,
                )
                watcher.start()
                summing.run(
                    [
                        f"--source=sqs://{url}",
                        "--drain",
                        f"--idle-timeout={_IDLE_TIMEOUT}",
                        f"--runner={runner}",
                        f"--mongo-db={database}",
                        f"--redis-prefix={database}:",
                    ]
                )
                wall = time.perf_counter() - start
                watcher.join(_COMPLETE_SECONDS)
                left = queue_left(queues.client, url)
                queues.delete(url)
                problem = check_sums(db, expected) or (f"{left} messages left" if left else None)
                client.drop_database(database)
                client.close()
                if problem or done.get("at") is None:
                    print(f"SQS DRAIN ON {runner} DIFFERS: {problem or 'never complete'}")
                    sys.exit(1)
                seconds = done["at"] - start
                kept = best.setdefault(runner, {"complete_s": seconds, "wall_s": wall})
                if seconds < kept["complete_s"]:
                    kept.update(complete_s=seconds, wall_s=wall)
                shown.append(
                    f"{runner} {len(bodies) / seconds:>7,.0f} events/s "
                    f"(complete {seconds:.2f} s, wall {wall:.2f} s)"
                )
            print(f"drain round {round_no}: " + "  ".join(shown), flush=True)
    finally:
        queues.client.close()
    for runner, kept in best.items():
        print(
            f"sqs drain on {runner:<5} {len(bodies) / kept['complete_s']:>8,.0f} events/s "
            f"(best: complete {kept['complete_s']:.2f} s, wall {kept['wall_s']:.2f} s)"
        )
    return best


def streaming_on_prism(
    bodies: list[str], expected: dict[str, int], connect
) -> tuple[float | None, str | None]:
    """Seconds from the first message sent to every sum complete, the job running on Prism
    unbounded (after a warm-up array went through); the job is cancelled after.

    Returns:
        The seconds, or None and what went wrong (the job failed, or some sum never
        completed or is wrong).
    """
    from apache_beam.runners.runner import PipelineState

    from blogflow.pipelines import summing

    database = "bench_streaming"
    client, db = connect(database)
    client.drop_database(database)
    queues = _Queues()
    url = queues.create("streaming")
    job = summing.JOB.pipeline(
        [f"--source=sqs://{url}", f"--mongo-db={database}", f"--redis-prefix={database}:"]
    )
    use_prism(job.options)
    at = start = sent = None
    try:
        result = job.run()

        def ended() -> bool:
            return PipelineState.is_terminal(result.state)

        try:
            queues.send(url, list(event_lines(10, 1, prefix="warm-up")))
            if wait_complete(db, ["warm-up-0000"], time.perf_counter() + 120, ended):
                start = time.perf_counter()
                queues.send(url, bodies)
                sent = time.perf_counter() - start
                at = wait_complete(db, sorted(expected), start + _COMPLETE_SECONDS, ended)
            state = result.state
        finally:
            _quiet_cancel(result, PipelineState)
        db.sums.delete_one({"_id": "warm-up-0000"})
        if start is None:
            problem = f"the warm-up array never completed (job {state})"
        elif at is None:
            done = db.sums.count_documents({"status": "complete"})
            problem = f"{done} of {len(expected)} sums complete (job {state})"
        else:
            problem = check_sums(db, expected)
    finally:
        queues.delete(url)
        queues.client.close()
        client.drop_database(database)
        client.close()
    if problem or at is None or start is None:
        print(f"SQS STREAMING ON PRISM FAILED: {problem}")
        return None, problem
    seconds = at - start
    print(
        f"sqs streaming on prism {len(bodies) / seconds:>8,.0f} events/s "
        f"(first message sent to every sum complete {seconds:.2f} s; sending took {sent:.2f} s)"
    )
    return seconds, None


def _quiet_cancel(result: Any, states: Any) -> None:
    """Cancels a running job; the LOOPBACK harness threads it leaves fail quietly."""
    threading.excepthook = lambda args: None
    for name in ("apache_beam.runners.worker", "apache_beam.runners.portability", "PrismRunner"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    result.cancel()
    deadline = time.monotonic() + 30
    while result.state not in (states.CANCELLED, states.DONE, states.FAILED):
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    timing_arguments(parser, events=1_000_000)
    parser.add_argument("--arrays", type=int, default=1_000)
    runner_arguments(parser)
    parser.add_argument(
        "--sqs-messages",
        type=int,
        default=500,
        help="messages of the SQS drain and streaming cases, 100 per array; 0 skips them "
        "(moto slows down badly with depth: a receive costs ~1 s at 1,000 queued)",
    )
    parser.add_argument(
        "--streaming",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the SQS case as a streaming job on Prism",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    unknown = set(args.runners) - set(_LABELS)
    if unknown or "fnapi" not in args.runners:
        parser.error(f"--runners must include fnapi and name only {', '.join(_LABELS)}")

    args.data_dir.mkdir(parents=True, exist_ok=True)
    path = args.data_dir / f"sum_packets_{args.events}_{args.arrays}.jsonl"
    if not path.exists():
        print(f"writing {args.events:,} events to {path} ...", flush=True)
        make_events(path, args.events, args.arrays)

    services = ("redis", "mongo", "moto") if args.sqs_messages else ("redis", "mongo")
    with (
        tempfile.TemporaryDirectory() as state,
        LocalStack(state_dir=state, services=services) as stack,
    ):
        stack.up()
        os.environ.update(stack.env)
        from blogflow.io import mongo

        if "prism" in args.runners:
            start_prism()

        client, _ = mongo.connect(None, "bench_summing")

        def connect(database: str):
            return mongo.connect(None, database)

        def plain() -> dict[str, int]:
            client.drop_database("bench_summing")
            return plain_loop(path)

        def on(runner: str) -> Callable[[], None]:
            def run() -> None:
                client.drop_database(f"bench_summing_{runner}")
                pipeline(path, f"bench_summing_{runner}", runner)

            return run

        sides = [("(a) plain loop", plain)]
        sides += [(_LABELS[runner], on(runner)) for runner in args.runners]
        best, results = best_of_rounds(args.rounds, args.events, sides)
        seconds = dict(zip(["plain", *args.runners], best, strict=True))
        expected = results[0]
        for runner in args.runners:
            problem = check_sums(client[f"bench_summing_{runner}"], expected)
            client.drop_database(f"bench_summing_{runner}")
            if problem:
                print(f"RESULTS DIFFER on {runner}: {problem}")
                sys.exit(1)
        print(f"results equal: {len(expected)} complete sums, 0 dead letters, on each runner")

        drains: dict[str, dict[str, float]] = {}
        streaming_s = streaming_problem = None
        if args.sqs_messages:
            bodies = list(event_lines(args.sqs_messages, max(1, args.sqs_messages // 100), "sqs"))
            queued = sum_lines(bodies)
            drains = drain_runners(args.runners, args.rounds, bodies, queued, connect)
            if args.streaming and "prism" in args.runners:
                streaming_s, streaming_problem = streaming_on_prism(bodies, queued, connect)
        client.close()

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report: dict[str, Any] = {
        "name": "summing",
        "ratio": round(seconds["plain"] / seconds["fnapi"], 3),
        "peak_rss_mb": round(peak_mb, 1),
        "plain_events_per_s": round(args.events / seconds["plain"]),
        "beam_events_per_s": round(args.events / seconds["fnapi"]),
        "events": args.events,
        "rounds": args.rounds,
    }
    if "prism" in seconds:
        report["prism_events_per_s"] = round(args.events / seconds["prism"])
        report["prism_vs_fnapi"] = round(seconds["fnapi"] / seconds["prism"], 3)
    if drains:
        report["sqs_messages"] = args.sqs_messages
        for runner, kept in drains.items():
            report[f"sqs_drain_{runner}_events_per_s"] = round(
                args.sqs_messages / kept["complete_s"]
            )
            report[f"sqs_drain_{runner}_wall_s"] = round(kept["wall_s"], 2)
        if "prism" in drains:
            report["sqs_drain_prism_vs_fnapi"] = round(
                drains["fnapi"]["complete_s"] / drains["prism"]["complete_s"], 3
            )
    if streaming_s is not None:
        report["sqs_streaming_prism_events_per_s"] = round(args.sqs_messages / streaming_s)
        report["sqs_streaming_prism_complete_s"] = round(streaming_s, 2)
    if streaming_problem:
        report["sqs_streaming_prism_failed"] = streaming_problem
    print(json.dumps(report))
    if streaming_problem:
        sys.exit(1)


if __name__ == "__main__":
    main()
