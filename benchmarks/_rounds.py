"""Side-by-side timing for the benchmarks: alternate rounds, keep each side's best."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["best_of_rounds", "timing_arguments"]


def timing_arguments(parser: argparse.ArgumentParser, events: int) -> None:
    """Adds the options every side-by-side benchmark takes: --events, --rounds, --data-dir."""
    parser.add_argument("--events", type=int, default=events)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of both sides; the best of each counts"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path(__file__).parent / "data", help="event file cache"
    )


def best_of_rounds(
    rounds: int, events: int, sides: list[tuple[str, Callable[[], Any]]]
) -> tuple[list[float], list[Any]]:
    """Runs every side once a round, in turn, for ``rounds`` rounds.

    On a shared 2-core VM a single round of either side varies by +-10 %, so each side
    keeps its best time, as ``timeit`` does. Prints each round's events/s and the best.

    Returns:
        Each side's best time in seconds and what its last run returned.
    """
    times: list[list[float]] = [[] for _ in sides]
    results: list[Any] = [None] * len(sides)
    width = max(len(label) for label, _ in sides)
    for round_no in range(1, rounds + 1):
        shown = []
        for n, (label, run) in enumerate(sides):
            start = time.perf_counter()
            results[n] = run()
            times[n].append(time.perf_counter() - start)
            shown.append(f"{label} {events / times[n][-1]:>9,.0f} events/s")
        print(f"round {round_no}: " + "  ".join(shown), flush=True)
    best = [min(side_times) for side_times in times]
    for (label, _), seconds in zip(sides, best, strict=True):
        print(f"{label:<{width}} {events / seconds:>10,.0f} events/s (best {seconds:.2f} s)")
    return best, results
