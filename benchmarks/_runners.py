"""The runners a benchmark compares: FnApiRunner (blogflow's batch default) and Prism."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
)

from blogflow.runners.prism import PrismNotFound, prism_binary, shared_job_server
from blogflow.runners.profiles import configure_runner, resolve_runner

__all__ = ["RUNNERS", "options_for", "run_pipeline", "runner_arguments", "start_prism", "use_prism"]

#: The runner profiles compared, in the order they run each round.
RUNNERS = ("fnapi", "prism")


def runner_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--runners``: which of :data:`RUNNERS` the benchmark runs the pipeline on."""
    parser.add_argument(
        "--runners",
        default=",".join(RUNNERS),
        type=lambda value: tuple(name.strip() for name in value.split(",") if name.strip()),
        help="comma-separated runner profiles to run the pipeline on (default: %(default)s)",
    )


def start_prism() -> None:
    """Starts this process's Prism job server now, so no timed run pays for its start.

    Without a Prism binary the benchmark exits with one line saying how to get one.
    """
    try:
        shared_job_server(prism_binary())
    except PrismNotFound as error:
        raise SystemExit(f"{error}; or leave Prism out: --runners fnapi") from None


def use_prism(options: PipelineOptions) -> None:
    """Points options that ``configure_runner`` set up for Prism at this process's Prism
    job server, as blogflow's jobs run on it; other runners' options are left alone."""
    location = options.view_as(PrismRunnerOptions).prism_location
    portable = options.view_as(PortableOptions)
    if location and not portable.job_endpoint:
        portable.job_endpoint = shared_job_server(location)


def options_for(runner: str, *flags: str) -> PipelineOptions:
    """Pipeline options for a runner profile, set up as blogflow's jobs set them up."""
    options = PipelineOptions([f"--runner={resolve_runner(runner)}", *flags])
    configure_runner(options)  # Prism: --prism_location and LOOPBACK
    use_prism(options)
    return options


@contextlib.contextmanager
def run_pipeline(runner: str, *flags: str) -> Iterator[beam.Pipeline]:
    """A pipeline on ``runner``, run to its end when the block ends, as
    ``with beam.Pipeline(...)`` runs one."""
    with beam.Pipeline(options=options_for(runner, *flags)) as pipeline:
        yield pipeline
