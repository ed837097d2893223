"""Runner profiles: short names for the runners blogflow is run on, offline-safe by default.

Beam's default DirectRunner first tries to download the Prism binary; blogflow never relies
on it. Batch jobs and drains default to ``FnApiRunner``, streaming jobs to ``prism``: the
Prism binary ``make runners`` built (:mod:`blogflow.runners.prism`), passed to Beam with
``--prism_location``; ``direct`` (``BundleBasedDirectRunner``) runs TestStream but no
Splittable DoFn, so none of blogflow's queue, stream and file sources; ``flink`` runs on
the job server ``make runners`` fetched (:mod:`blogflow.runners.flink`), on Flink's
embedded cluster (``--flink_master=[local]``, the default) or a cluster's REST address.
Clusters take Beam's own runner names or these profiles. An unknown name is an error
before anything runs (:func:`configure_runner`); so is Dask (:data:`REMOVED`).
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import logging
import re
from urllib.parse import urlparse

from apache_beam.options.pipeline_options import (
    DebugOptions,
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineResult

from blogflow.runners import RunnerError
from blogflow.runners.dataflow import check_dataflow
from blogflow.runners.flink import FLINK_VERSION, cancel_cluster_job, job_server_jar
from blogflow.runners.prism import prism_binary, shared_job_server

__all__ = [
    "DEFAULT_RUNNER",
    "DEFAULT_STREAMING_RUNNER",
    "FLINK_CHECKPOINT_MS",
    "PROFILES",
    "REMOVED",
    "FlinkOptions",
    "UnknownRunner",
    "cancel_job",
    "configure_runner",
    "finalizes_bundles",
    "keeps_late_batch_data",
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
    "flink": "FlinkRunner",
    "dataflow": "DataflowRunner",
}

#: Beam's runner names (``PrismRunner``, ...) by lower-case short name, as Beam reads them.
_BEAM_RUNNERS = {
    path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS
}

#: Runners blogflow refused, by class path, with the one line that says why.
REMOVED: dict[str, str] = {
    "apache_beam.runners.dask.dask_runner.DaskRunner": (
        "Beam's DaskRunner cannot run blogflow: it computes only the last sink of a "
        "pipeline, sends every element to every tagged output (so good events reach the "
        "dead letters), drops what a DoFn emits in finish_bundle and skips transforms it "
        "does not know; use --runner flink (a cluster) or fnapi (one machine)"
    ),
}

#: Milliseconds between Flink checkpoints in a streaming job when none is given: Flink
#: finalizes a bundle (SQS deletes, Pub/Sub acks) only once a checkpoint holding it
#: completes, so a streaming job without checkpoints would never delete a message.
FLINK_CHECKPOINT_MS = 2000

_PRISM_RUNNER = "apache_beam.runners.portability.prism_runner.PrismRunner"
_DATAFLOW_RUNNER = "apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"
_FLINK_RUNNER = "apache_beam.runners.portability.flink_runner.FlinkRunner"
#: Flink masters that the job server starts or finds itself.
_FLINK_MAGIC_MASTERS = ("[local]", "[auto]")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: Prism's experiment that stops it splitting a running splittable read (see
#: :func:`configure_runner`).
_NO_SDF_SPLIT = "prism_disable_sdf_split"
#: Runners that cannot run Splittable DoFns (blogflow's SQS, Kinesis and file sources).
_NO_SPLITTABLE_DOFNS = frozenset(
    {
        "apache_beam.runners.direct.direct_runner.BundleBasedDirectRunner",
    }
)

_LOGGER = logging.getLogger(__name__)

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")


class UnknownRunner(RunnerError):
    """``--runner`` names no profile, no Beam runner and no importable runner class, or a
    runner blogflow refuses (:data:`REMOVED`)."""


def _yes_or_no(text: str) -> bool:
    """``true``/``false`` (or yes/no, 1/0) of a flag's value."""
    answer = text.strip().lower()
    if answer in ("true", "yes", "1"):
        return True
    if answer in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class FlinkOptions(PipelineOptions):
    """Options of Beam's Flink runner that its job server reads (Java's
    ``FlinkPipelineOptions``), declared so that blogflow's parser knows them: Beam's Python
    SDK asks the job server for them only once the job is submitted."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("flink")
        group.add_argument(
            "--flink-master",
            dest="flink_master_address",
            default=None,
            help="the Flink cluster's REST address, HOST:PORT ($FLINK_MASTER of `blogflow "
            "local up --flink`), or [local] for Flink's embedded cluster (the default)",
        )
        group.add_argument(
            "--checkpointing_interval",
            "--checkpointing-interval",
            dest="checkpointing_interval",
            type=int,
            default=None,
            help="milliseconds between Flink checkpoints; a streaming job on Flink gets "
            f"{FLINK_CHECKPOINT_MS} when none is given (bundles, and so SQS deletes and "
            "Pub/Sub acks, are finalized only when a checkpoint completes)",
        )
        group.add_argument(
            "--finish_bundle_before_checkpointing",
            "--finish-bundle-before-checkpointing",
            dest="finish_bundle_before_checkpointing",
            type=_yes_or_no,
            default=None,
            metavar="true|false",
            help="finish a bundle and send on its output before a checkpoint's barrier; a "
            "streaming job on Flink gets true when none is given (with false, output of a "
            "bundle cut by a checkpoint waits in the operator for its next bundle, behind the "
            "watermark: the read's one starting element can be held there for good)",
        )
        group.add_argument(
            "--state_backend",
            "--state-backend",
            dest="state_backend",
            default=None,
            help="Flink state backend of a streaming job: rocksdb, filesystem or hashmap",
        )
        group.add_argument(
            "--state_backend_storage_path",
            "--state-backend-storage-path",
            dest="state_backend_storage_path",
            default=None,
            help="where the Flink state backend keeps checkpoints, e.g. file:///var/ckpt",
        )


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
    class paths (``apache_beam.runners.spark_runner.SparkRunner``, whose module must be
    found; it is not imported, so a runner whose extras are missing still fails in Beam)
    are accepted.

    Raises:
        UnknownRunner: Anything else, naming the profiles (and the closest one).
    """
    lower = name.lower()
    known = _BEAM_RUNNERS.get(lower) or _BEAM_RUNNERS.get(lower + "runner")
    if known is None and lower in ("dask", "daskrunner"):
        known = next(iter(REMOVED))
    if known in REMOVED or name in REMOVED:
        raise UnknownRunner(f"--runner {name}: {REMOVED[known or name]}")
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
    path = runner_class_path(standard.runner)
    if path == _FLINK_RUNNER:
        _configure_flink(options)
        return
    if path != _PRISM_RUNNER:
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


def _is_local_flink(master: str) -> bool:
    if master in _FLINK_MAGIC_MASTERS:
        return True
    url = urlparse(master if "://" in master else f"http://{master}")
    return url.hostname in _LOOPBACK_HOSTS


def _configure_flink(options: PipelineOptions) -> None:
    """Flink: the job server :mod:`blogflow.runners.flink` fetched (a
    ``--flink_job_server_jar`` given wins) for its Flink minor; an SDK harness in this
    process (``LOOPBACK``) when the cluster is on this machine and no environment is given;
    a checkpoint every :data:`FLINK_CHECKPOINT_MS` in a streaming job, each bundle
    finished before its barrier (``--finish_bundle_before_checkpointing``): otherwise a
    bundle cut by a checkpoint keeps its output for the operator's next bundle while the
    watermark goes on, and the Impulse stage that seeds a read never runs a next bundle, so
    the read's element is never read (seen with Beam 2.62's Flink runner: a streaming SQS
    job whose first checkpoint came during its first bundle read nothing, ever)."""
    flink = options.view_as(FlinkRunnerOptions)
    checkpoints = options.view_as(FlinkOptions)
    if checkpoints.flink_master_address:  # --flink-master, as blogflow spells flags
        flink.flink_master = checkpoints.flink_master_address
    if not flink.flink_job_server_jar and not flink.flink_submit_uber_jar:
        flink.flink_job_server_jar = str(job_server_jar())
        flink.flink_version = FLINK_VERSION
    portable = options.view_as(PortableOptions)
    if (
        not portable.environment_type
        and not portable.output_executable_path
        and _is_local_flink(flink.flink_master)
    ):
        portable.environment_type = "LOOPBACK"
    if options.view_as(StandardOptions).streaming:
        if checkpoints.checkpointing_interval is None:
            checkpoints.checkpointing_interval = FLINK_CHECKPOINT_MS
        if checkpoints.finish_bundle_before_checkpointing is None:
            checkpoints.finish_bundle_before_checkpointing = True


def cancel_job(result: PipelineResult, options: PipelineOptions) -> None:
    """Cancels a running job: ``result.cancel()``, and on a Flink cluster the cluster's own
    job too (:func:`~blogflow.runners.flink.cancel_cluster_job`), which Beam's Flink job
    server leaves running."""
    try:
        result.cancel()
    except Exception as error:  # noqa: BLE001 - the runner may be gone already
        _LOGGER.debug("Cancelling the job failed: %s", error)
    if _runner_path(options) != _FLINK_RUNNER:
        return
    master = options.view_as(FlinkRunnerOptions).flink_master
    job_id = getattr(result, "_job_id", None)  # PortableRunner's result keeps it there
    if master not in _FLINK_MAGIC_MASTERS and isinstance(job_id, str):
        cancel_cluster_job(master, job_id)


def keeps_late_batch_data(options: PipelineOptions) -> bool:
    """Whether the options' runner, in a batch job, groups by window and never drops data
    behind the watermark: Flink (its batch translation has no watermark). Prism and
    FnApiRunner drop late data in batch too, and the feed job holds its event time there."""
    return _runner_path(options) == _FLINK_RUNNER


def finalizes_bundles(options: PipelineOptions) -> bool:
    """Whether the options' runner finalizes bundles (calls what a DoFn registered with
    ``BundleFinalizerParam`` once the bundle's output is committed).

    Portable Flink does so only in a streaming job, after a checkpoint
    (apache/beam#12952), and fails a batch job whose DoFn asks for it
    (apache/beam#19526); FnApiRunner, Prism and Dataflow finalize every bundle.
    """
    streaming = options.view_as(StandardOptions).streaming
    return not (_runner_path(options) == _FLINK_RUNNER and not streaming)


def _runner_path(options: PipelineOptions) -> str | None:
    """The class path of the options' runner; None for a runner object given by code or
    a name no runner has (:func:`configure_runner` refuses that one)."""
    runner = options.view_as(StandardOptions).runner
    if not isinstance(runner, str):
        return None
    try:
        return runner_class_path(runner)
    except UnknownRunner:
        return None


def start_runner_services(options: PipelineOptions) -> None:
    """Starts what the options' runner needs beside the job, before a run.

    For Prism without a ``--job_endpoint``: this process's Prism job server
    (:func:`~blogflow.runners.prism.shared_job_server`, stopped when the process exits),
    in a session of its own so a Ctrl-C stops the job cleanly rather than Prism under it;
    its endpoint becomes ``--job_endpoint``. Other runners need nothing here.
    """
    portable = options.view_as(PortableOptions)
    prism = options.view_as(PrismRunnerOptions)
    if (
        _runner_path(options) == _PRISM_RUNNER
        and not portable.job_endpoint
        and prism.prism_location
    ):
        portable.job_endpoint = shared_job_server(prism.prism_location)
