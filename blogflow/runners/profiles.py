"""Runner profiles: short names for the runners blogflow is run on, offline-safe by default.

Beam's default DirectRunner first tries to download the Prism binary; blogflow never relies
on it. Batch jobs and drains default to ``FnApiRunner``, streaming jobs to ``prism``: the
Prism binary ``make runners`` built (:mod:`blogflow.runners.prism`), passed to Beam with
``--prism_location``; ``direct`` (``BundleBasedDirectRunner``) runs TestStream but no
Splittable DoFn, so none of blogflow's queue, stream and file sources; clusters take
Beam's own runner names or these profiles. An unknown name is an error before anything
runs (:func:`configure_runner`).
"""

from __future__ import annotations

import difflib
import importlib.util
import re

from apache_beam.options.pipeline_options import (
    DebugOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from blogflow.runners import RunnerError
from blogflow.runners.dataflow import check_dataflow
from blogflow.runners.prism import prism_binary, shared_job_server

__all__ = [
    "DEFAULT_RUNNER",
    "DEFAULT_STREAMING_RUNNER",
    "PROFILES",
    "UnknownRunner",
    "configure_runner",
    "resolve_runner",
    "runner_class_path",
    "start_runner_services",
    "runs_splittable_dofns",
]

#: The runner of batch jobs and drains when none is given: in-process, portable, runs
#: Splittable DoFns, and faster than Prism there (benchmarks/README.md).
DEFAULT_RUNNER = "FnApiRunner"
#: The runner of streaming jobs when none is given: Prism streams (FnApiRunner holds every
#: result after a GroupByKey until the source ends, i.e. forever).
DEFAULT_STREAMING_RUNNER = "PrismRunner"

PROFILES: dict[str, str] = {
    "fnapi": "FnApiRunner",
    "direct": "BundleBasedDirectRunner",
    "prism": "PrismRunner",
    "dask": "apache_beam.runners.dask.dask_runner.DaskRunner",
    "flink": "FlinkRunner",
    "dataflow": "DataflowRunner",
}

#: Beam's runner names (``PrismRunner``, ...) by lower-case short name, as Beam reads them.
_BEAM_RUNNERS = {
    path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS
}

_PRISM_RUNNER = "apache_beam.runners.portability.prism_runner.PrismRunner"
_DATAFLOW_RUNNER = "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"
#: Prism's experiment that stops it splitting a running splittable read (see
#: :func:`configure_runner`).
_NO_SDF_SPLIT = "prism_disable_sdf_split"
#: Runners that cannot run Splittable DoFns (blogflow's SQS, Kinesis and file sources).
_NO_SPLITTABLE_DOFNS = frozenset(
    {
        "apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner",
    }
)

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class UnknownRunner(RunnerError):
    """``--runner`` names no profile, no Beam runner and no importable runner class."""


def resolve_runner(name: str | None) -> str:
    """A Beam runner name for a profile name, a Beam runner name, or None (the default).

    Any other name is returned as given; :func:`runner_class_path` rejects it.
    """
    if not name:
        return DEFAULT_RUNNER
    return PROFILES.get(name.lower(), name)


def runner_class_path(name: str) -> str:
    """The full class path of a Beam runner name, as Beam's ``create_runner`` reads it.

    Beam's short names (any case, ``Runner`` optional: ``PrismRunner``, ``spark``) and full
    class paths (``apache_beam.runners.dask.dask_runner.DaskRunner``, whose module must be
    found; it is not imported, so a runner whose extras are missing still fails in Beam)
    are accepted.

    Raises:
        UnknownRunner: Anything else, naming the profiles (and the closest one).
    """
    lower = name.lower()
    known = _BEAM_RUNNERS.get(lower) or _BEAM_RUNNERS.get(lower + "runner")
    if known:
        return known
    if _DOTTED.fullmatch(name):
        module = name.rsplit(".", 1)[0]
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            return name
        raise UnknownRunner(f"unknown --runner {name!r}: there is no module {module!r}")
    close = difflib.get_close_matches(lower, PROFILES, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownRunner(
        f"unknown --runner {name!r}: {hint}use a profile ({', '.join(PROFILES)}), a Beam "
        "runner name (e.g. DataflowRunner) or a runner's full class name"
    )


def runs_splittable_dofns(runner: object) -> bool:
    """Whether ``runner`` (a name, or a runner object) runs Splittable DoFns, as blogflow's
    SQS, Kinesis and file sources are. An unknown name answers True: it fails elsewhere."""
    if not isinstance(runner, str):
        return True
    try:
        return runner_class_path(runner) not in _NO_SPLITTABLE_DOFNS
    except UnknownRunner:
        return True


def configure_runner(options: PipelineOptions) -> None:
    """Checks the options' runner and fills in what it needs to run offline.

    For Prism: ``--prism_location`` is the binary of :func:`~blogflow.runners.prism.
    prism_binary` (a ``--prism_location`` given wins) and the SDK harness runs in this
    process (``--environment_type=LOOPBACK``, unless one is given), so Beam never tries
    to download Prism or pull a container. Prism's dynamic splitting of a running
    splittable read is turned off (``--experiments=prism_disable_sdf_split``): blogflow's
    readers cut themselves into bundles (they checkpoint) and refuse other splits, and
    Beam's Python harness can fail a split request Prism sends to a read that waits on
    a long poll (``ValueError: cannot convert float NaN to integer`` in
    ``bundle_processor._compute_split``), which fails the whole job.

    Raises:
        UnknownRunner: The runner is not one Beam knows (see :func:`runner_class_path`).
        PrismNotFound: It is Prism and no Prism binary is there.
        DataflowNotReady: It is Dataflow and a flag, the credentials or the Google Cloud
            extras are missing (:func:`~blogflow.runners.dataflow.check_dataflow`).
    """
    standard = options.view_as(StandardOptions)
    if not isinstance(standard.runner, str):
        return  # a runner object, given by code: its caller set it up
    if runner_class_path(standard.runner) == _DATAFLOW_RUNNER:
        check_dataflow(options)  # flags, credentials, extras: one line before Beam hangs
        return
    if runner_class_path(standard.runner) != _PRISM_RUNNER:
        return
    prism = options.view_as(PrismRunnerOptions)
    if not prism.prism_location:
        prism.prism_location = str(prism_binary())
    portable = options.view_as(PortableOptions)
    if not portable.environment_type and not portable.output_executable_path:
        portable.environment_type = "LOOPBACK"
    debug = options.view_as(DebugOptions)
    if not debug.lookup_experiment(_NO_SDF_SPLIT):
        debug.add_experiment(_NO_SDF_SPLIT)


def start_runner_services(options: PipelineOptions) -> None:
    """Starts what the options' runner needs beside the job, before a run.

    For Prism without a ``--job_endpoint``: this process's Prism job server
    (:func:`~blogflow.runners.prism.shared_job_server`, stopped when the process exits),
    in a session of its own so a Ctrl-C stops the job cleanly rather than Prism under it;
    its endpoint becomes ``--job_endpoint``. Other runners need nothing here.
    """
    standard = options.view_as(StandardOptions)
    portable = options.view_as(PortableOptions)
    prism = options.view_as(PrismRunnerOptions)
    if (
        isinstance(standard.runner, str)
        and runner_class_path(standard.runner) == _PRISM_RUNNER
        and not portable.job_endpoint
        and prism.prism_location
    ):
        portable.job_endpoint = shared_job_server(prism.prism_location)
