"""Bundle finalization, measured on every runner blogflow runs jobs on.

The SQS and Pub/Sub readers delete or acknowledge messages in a bundle-finalization
callback, so whether and when a runner calls those callbacks decides whether messages are
ever deleted, and whether before their effect is stored. A probe DoFn registers one
callback per bundle and notes, in a file, when its bundle finished and when the callback
ran; the same probe runs in batch and in streaming on each runner.

What they show (README "Runners"):

* FnApiRunner (batch): every callback runs, after its bundle finished (committed).
* Prism, batch and streaming: every callback runs, after its bundle finished; Prism asks
  for finalization after every bundle of a stage that may need it.
* BundleBasedDirectRunner, batch and streaming: callbacks never run. It runs no Splittable
  DoFn, so none of blogflow's SQS, Kinesis or file readers; its Pub/Sub read is Beam's,
  which acknowledges at once.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_stream import TestStream

from blogflow.runners.profiles import configure_runner

ELEMENTS = 40


class _ProbeFn(beam.DoFn):
    """Registers one finalization callback per bundle; notes ``finish ID`` when the
    bundle finishes and ``final ID`` when its callback runs."""

    def __init__(self, log: str) -> None:
        self._log = log
        self._bundle: str | None = None

    def _note(self, what: str) -> None:
        with open(self._log, "a", encoding="utf-8") as log:
            log.write(f"{what} {self._bundle}\n")

    def start_bundle(self) -> None:
        self._bundle = None

    def process(self, element, finalizer=beam.DoFn.BundleFinalizerParam):
        if self._bundle is None:
            self._bundle = uuid.uuid4().hex
            bundle = self._bundle
            log = self._log

            def finalized() -> None:
                with open(log, "a", encoding="utf-8") as out:
                    out.write(f"final {bundle}\n")

            finalizer.register(finalized)
        yield element

    def finish_bundle(self) -> None:
        if self._bundle is not None:
            self._note("finish")


def _pipeline(runner: str, streaming: bool) -> beam.Pipeline:
    flags = ["--streaming"] if streaming else []
    if runner == "prism":
        options = PipelineOptions(["--runner=PrismRunner", *flags])
        configure_runner(options)
        return beam.Pipeline(options=options)
    engine = FnApiRunner() if runner == "fnapi" else BundleBasedDirectRunner()
    return beam.Pipeline(runner=engine, options=PipelineOptions(flags))


def measure(runner: str, streaming: bool, log: Path) -> tuple[list[str], list[str]]:
    """Runs the probe; returns the bundles that finished and those finalized, in order."""
    log.touch()
    with _pipeline(runner, streaming) as p:
        if streaming:
            source = p | "Events" >> TestStream().add_elements(list(range(ELEMENTS)))
            source = source | "More" >> beam.Map(lambda x: x)
        else:
            source = p | "Events" >> beam.Create(list(range(ELEMENTS)))
        _ = source | "Shuffle" >> beam.Reshuffle() | "Probe" >> beam.ParDo(_ProbeFn(str(log)))
    lines = [line.split() for line in log.read_text().splitlines()]
    finished = [bundle for what, bundle in lines if what == "finish"]
    finalized = [bundle for what, bundle in lines if what == "final"]
    for bundle in finalized:  # a callback never runs before its bundle finished
        assert lines.index(["finish", bundle]) < lines.index(["final", bundle])
    return finished, finalized


@pytest.mark.parametrize(
    ("runner", "streaming"),
    [("fnapi", False), ("prism", False), ("prism", True)],
)
def test_portable_runners_finalize_every_bundle_after_it_finished(runner, streaming, tmp_path):
    finished, finalized = measure(runner, streaming, tmp_path / "probe.log")
    assert finished, "the probe ran"
    assert sorted(finalized) == sorted(finished)


@pytest.mark.parametrize("streaming", [False, True])
def test_the_direct_runner_never_finalizes(streaming, tmp_path):
    finished, finalized = measure("direct", streaming, tmp_path / "probe.log")
    assert finished, "the probe ran"
    assert finalized == []
