"""One way to declare a blogflow job: its name, options and build, from which its ``run()``
and ``python -m`` entry point are made.

A pipeline module declares ``JOB = Job(name, description, options, build)``; ``build(pipeline,
options, streaming=...)`` adds the job's steps and passes ``streaming`` on to its
composites. Whether the job streams is decided once, from the source
(:func:`blogflow.options.parse_pipeline_args`), never by a composite.

Stopping. SIGINT (Ctrl-C) or SIGTERM ends a running job cleanly: a job on a runner that
runs it apart from this process (Prism, Flink, Dataflow) is cancelled; one that runs in
this process (FnApiRunner) is interrupted. Either way :class:`JobStopped` is raised, which
the command line prints as one line. Nothing is lost: the sources delete or acknowledge a
message only once the bundle that read it was committed, so what was read but not committed
is delivered again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from blogflow.io import sqs
from blogflow.options import parse_pipeline_args
from blogflow.runners.profiles import cancel_job, start_runner_services

__all__ = ["Build", "Job", "JobStopped"]

_LOGGER = logging.getLogger(__name__)

#: ``build(pipeline, options, streaming=...)``: adds a job's steps to ``pipeline``.
Build = Callable[..., None]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class JobStopped(Exception):  # noqa: N818 - a stop, not an error
    """A signal stopped the job before it finished (the job was cancelled)."""

    def __init__(self, prog: str, signum: int, seconds: float) -> None:
        self.signum = signum
        name = signal.Signals(signum).name
        super().__init__(
            f"{prog}: stopped by {name} after {seconds:.1f} s; what was read but not yet "
            "committed is delivered again to the next run"
        )

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal: 128 + its number."""
        return 128 + self.signum


@dataclasses.dataclass(frozen=True)
class Job:
    """A blogflow job: what ``blogflow run NAME`` and ``python -m`` run.

    Attributes:
        name: the job's name, ``blogflow run NAME``; also the dead letters' ``pipeline``.
        description: one paragraph for ``--help``.
        options: the job's :class:`PipelineOptions` classes, in ``--help`` order.
        build: ``build(pipeline, options, streaming=bool)``: adds the job's steps.
        needs_secret_key: its workers decrypt GitHub tokens: a launch whose workers could
            not read the secret key fails at once, in one line.
    """

    name: str
    description: str
    options: tuple[type[PipelineOptions], ...]
    build: Build
    needs_secret_key: bool = False

    @property
    def prog(self) -> str:
        """How the job is started on the command line."""
        return f"blogflow run {self.name}"

    def parse(self, argv: Sequence[str]) -> PipelineOptions:
        """The job's options from a command line (``--help`` and bad flags exit)."""
        return parse_pipeline_args(
            argv,
            self.options,
            prog=self.prog,
            description=self.description,
            needs_secret_key=self.needs_secret_key,
        )

    def pipeline(self, argv: Sequence[str]) -> beam.Pipeline:
        """The job, built and not run. A bad option value exits with ``prog: reason``."""
        options = self.parse(argv)
        streaming = bool(options.view_as(StandardOptions).streaming)
        try:
            pipeline = beam.Pipeline(options=options)
            self.build(pipeline, options, streaming=streaming)
            sqs.delete_when_stored(pipeline)  # a drain where bundles are not finalized
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise SystemExit(f"{self.prog}: {error}") from None
        return pipeline

    def start(self, argv: Sequence[str]) -> PipelineResult:
        """Builds the job and starts it: on a runner that runs jobs apart from this process
        (Prism, Flink, Dataflow) it returns at once, with the job running; in-process
        (FnApiRunner) it returns once the job is done. ``result.cancel()`` stops it."""
        pipeline = self.pipeline(argv)
        start_runner_services(pipeline.options)
        return pipeline.run()

    def run(self, argv: Sequence[str] | None = None) -> PipelineResult:
        """Runs the job until its source is exhausted (files, ``--drain``, a bound) or,
        streaming, until it is stopped.

        Raises:
            JobStopped: SIGINT or SIGTERM stopped it (only where this is the main thread).
        """
        pipeline = self.pipeline(sys.argv[1:] if argv is None else argv)
        start_runner_services(pipeline.options)
        with _stopped_by_signals(self.prog, pipeline.options) as stop:
            result = pipeline.run()
            stop.running(result)
            result.wait_until_finish()
        return result

    def main(self) -> None:
        """``python -m blogflow.pipelines.NAME``: runs the job, a stop is one line."""
        logging.basicConfig(level=logging.INFO, force=True)  # Beam set up logging on import
        try:
            self.run()
        except JobStopped as stopped:
            print(stopped, file=sys.stderr)
            raise SystemExit(stopped.exit_code) from None


class _Stop:
    """What a stop signal does while a job runs: cancel it, or interrupt this process."""

    def __init__(self, prog: str, options: PipelineOptions) -> None:
        self._prog = prog
        self._options = options
        self._started = time.monotonic()
        self._result: PipelineResult | None = None
        self.signum: int | None = None

    def running(self, result: PipelineResult) -> None:
        self._result = result
        if self.signum is not None:
            self._cancel()

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        first = self.signum is None
        self.signum = signum
        if not first or self._result is None:
            # Not started yet, in-process (FnApiRunner runs inside run()), or a second signal.
            raise KeyboardInterrupt
        _LOGGER.info("%s: %s received, cancelling the job", self._prog, signal.Signals(signum).name)
        self._cancel()

    def _cancel(self) -> None:
        assert self._result is not None
        _quiet_shutdown()
        cancel_job(self._result, self._options)

    def raise_if_stopped(self) -> None:
        """Raises :class:`JobStopped` if a signal came and the job did not finish anyway."""
        if self.signum is None:
            return
        if self._result is not None and _state(self._result) == PipelineState.DONE:
            return  # it finished by itself before the signal took effect
        raise JobStopped(self._prog, self.signum, time.monotonic() - self._started)


def _quiet_shutdown() -> None:
    """Once a job is cancelled, the threads that served it (the job's message stream, the
    in-process SDK harness of ``LOOPBACK``) fail as its runner goes away: log that at debug
    level instead of printing their tracebacks."""

    def debug_only(args: threading.ExceptHookArgs) -> None:
        _LOGGER.debug(
            "Thread %s ended with the cancelled job: %s",
            args.thread.name if args.thread else "?",
            args.exc_value,
        )

    threading.excepthook = debug_only
    for name in ("apache_beam.runners.worker", "apache_beam.runners.portability", "PrismRunner"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _state(result: PipelineResult) -> str | None:
    try:
        return result.state
    except Exception:  # noqa: BLE001 - a runner that cannot tell (its server is gone)
        return None


@contextlib.contextmanager
def _stopped_by_signals(prog: str, options: PipelineOptions) -> Iterator[_Stop]:
    """Routes SIGINT and SIGTERM to a :class:`_Stop` while the job runs (main thread only),
    turning the interrupt or the cancelled run into :class:`JobStopped`."""
    stop = _Stop(prog, options)
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.signal(signum, stop.handle) for signum in _STOP_SIGNALS}
    try:
        yield stop
    except Exception:
        if stop.signum is None:
            raise
        # the runner failed because it was cancelled or its job server was interrupted too
        _LOGGER.debug("The job ended with an error after a stop signal", exc_info=True)
    except KeyboardInterrupt:
        if stop.signum is None:
            stop.signum = signal.SIGINT
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    stop.raise_if_stopped()
