"""PipelineOptions shared by blogflow's pipelines, and the argument parsing they share.

Workers carry their own configuration. Every connection setting is resolved once, at
launch, by :func:`parse_pipeline_args`: the flag, else the launcher's environment
variable, else the default (``--mongo-uri`` / ``MONGODB_URI`` / ``mongodb://127.0.0.1:27017/``,
``--redis-url`` / ``REDIS_URL`` / ``redis://127.0.0.1:6379/0``, ``--github-api-url`` /
``GITHUB_API_URL`` / GitHub's, ``--aws-endpoint-url`` / ``AWS_ENDPOINT_URL``,
``--aws-region`` / ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``--pubsub-emulator-host`` /
``PUBSUB_EMULATOR_HOST``, ``--pubsub-project`` / ``PUBSUB_PROJECT_ID`` /
``GOOGLE_CLOUD_PROJECT`` / ``blogflow-local``), written back into the options and passed to
the composites, whose DoFns pickle the values: a worker reads no environment variable for
them. AWS credentials are ``--aws-access-key-id`` with ``--aws-secret-access-key``, or
else the worker's own boto3 chain; the launcher's ``AWS_ACCESS_KEY_ID`` is never copied.

Secrets never travel in clear. The secret key reaches workers as a reference
(:class:`~blogflow.tokens.KeySource`): ``--secret-key-file PATH`` (a file every worker
has) or ``--secret-key-secret projects/P/secrets/S/versions/V`` (Google Secret Manager);
without either, ``BLOGFLOW_SECRET_KEY`` of the launcher is kept in its memory, which only
workers inside the launching process (FnApiRunner, ``LOOPBACK``) can read, so a job whose
workers run elsewhere and need the key fails at launch with one line. Credentials given
as values -- ``--aws-secret-access-key``, a ``--mongo-uri`` or ``--redis-url`` with a
password -- are sealed with a key derived from that secret key (an ephemeral one, for
in-process workers, when there is none) before Beam sees them: the options, their display
data, the options a portable runner sends and the pickled DoFns of the job graph hold the
sealed form only (its shown part is the URL with ``***`` for the password), and the
command line's cleartext is dropped from the options' flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from apache_beam.options.pipeline_options import (
    DirectOptions,
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from blogflow.io import mongo, pubsub, redis
from blogflow.io._urls import redact_url
from blogflow.io.aws import AwsConfig
from blogflow.io.sources import ReadSource, is_unbounded, parse_source
from blogflow.runners import RunnerError
from blogflow.runners.profiles import (
    DEFAULT_RUNNER,
    DEFAULT_STREAMING_RUNNER,
    PROFILES,
    UnknownRunner,
    configure_runner,
    finalizes_bundles,
    resolve_runner,
    runner_class_path,
    runs_splittable_dofns,
)
from blogflow.tokens import SECRET_KEY_VARIABLE, KeySource, TokenError, seal

__all__ = [
    "ConnectionOptions",
    "Connections",
    "LaunchError",
    "SourceOptions",
    "StoreOptions",
    "connections",
    "parse_pipeline_args",
    "read_source",
    "resolve_key_source",
    "sqs_readers",
    "workers_in_process",
]

_LOGGER = logging.getLogger(__name__)

#: How long a drain waits for more messages before it stops, by default.
DEFAULT_IDLE_TIMEOUT = 5.0


class SourceOptions(PipelineOptions):
    """Where events come from and when a bounded run stops."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("source")
        group.add_argument(
            "--source",
            default=None,
            help="required: where events come from: sqs://QUEUE (name or URL), "
            "kinesis://STREAM, pubsub://SUBSCRIPTION or file://GLOB of JSON-lines archives; "
            "a queue or stream read without --drain, --max-records or --max-read-time, "
            "and Pub/Sub, make a streaming job (on Prism unless --runner says otherwise)",
        )
        group.add_argument(
            "--drain",
            action="store_true",
            help="bounded run: stop once the queue (each stream shard) has been empty for "
            "--idle-timeout seconds (files are always bounded)",
        )
        group.add_argument(
            "--idle-timeout",
            "--idle_timeout",
            dest="idle_timeout",
            type=float,
            default=DEFAULT_IDLE_TIMEOUT,
            help="seconds without a message after which a --drain stops (default: %(default)s)",
        )
        group.add_argument(
            "--max-records",
            "--max_records",
            dest="max_records",
            type=int,
            default=None,
            help="stop after reading this many messages",
        )
        group.add_argument(
            "--max-read-time",
            "--max_read_time",
            dest="max_read_time",
            type=float,
            default=None,
            help="stop reading after this many seconds",
        )
        group.add_argument(
            "--sqs-readers",
            "--sqs_readers",
            dest="sqs_readers",
            type=int,
            default=None,
            help="readers polling an sqs:// queue in parallel, each its own element a "
            "runner can put on any worker; --max-records is split over them (default: "
            "--parallelism when it is set, else 1)",
        )


def sqs_readers(options: PipelineOptions) -> int:
    """How many readers an ``sqs://`` source has: ``--sqs-readers``, else the job's
    ``--parallelism`` (Beam's Flink option, -1 when unset) when it is positive, else 1.

    Raises:
        ValueError: ``--sqs-readers`` is below 1.
    """
    readers = options.view_as(SourceOptions).sqs_readers
    if readers is None:
        parallelism = options.view_as(FlinkRunnerOptions).parallelism
        return int(parallelism) if parallelism is not None and parallelism > 0 else 1
    if readers < 1:
        raise ValueError(f"--sqs-readers must be at least 1, got {readers}")
    return int(readers)


def read_source(options: PipelineOptions) -> ReadSource:
    """The :class:`~blogflow.io.sources.ReadSource` that ``--source`` and its bounds
    describe, with the AWS and Pub/Sub settings resolved at launch."""
    source = options.view_as(SourceOptions)
    settings = connections(options)
    return ReadSource(
        source.source,
        drain=source.drain,
        idle_timeout=source.idle_timeout,
        max_records=source.max_records,
        max_read_time=source.max_read_time,
        sqs_readers=sqs_readers(options),
        sqs_delete_when_stored=not finalizes_bundles(options),
        aws=settings.aws,
        pubsub_project=settings.pubsub_project,
        pubsub_emulator_host=settings.pubsub_emulator_host,
    )


class StoreOptions(PipelineOptions):
    """Where results and dead letters are written."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("stores")
        group.add_argument(
            "--mongo-uri",
            "--mongo_uri",
            dest="mongo_uri",
            default=None,
            help="MongoDB URI, resolved at launch (default: $MONGODB_URI, else "
            "mongodb://127.0.0.1:27017/); a password in it is sealed with the secret key "
            "and never shown",
        )
        group.add_argument(
            "--mongo-db",
            "--mongo_db",
            dest="mongo_db",
            default="blogflow",
            help="MongoDB database (default: %(default)s)",
        )
        group.add_argument(
            "--redis-url",
            "--redis_url",
            dest="redis_url",
            default=None,
            help="Redis URL, resolved at launch (default: $REDIS_URL, else "
            "redis://127.0.0.1:6379/0); a password in it is sealed with the secret key and "
            "never shown",
        )
        group.add_argument(
            "--redis-prefix",
            "--redis_prefix",
            dest="redis_prefix",
            default="",
            help="prefix of every Redis key written (default: none)",
        )


class ConnectionOptions(PipelineOptions):
    """How workers reach AWS and Pub/Sub, and where they read blogflow's secret key.

    Every pipeline has these (:func:`parse_pipeline_args` adds them); values are resolved
    at launch (see the module docstring).
    """

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        aws = parser.add_argument_group(
            "AWS (every AWS client: the sqs:// and kinesis:// readers, --notify apigateway)"
        )
        aws.add_argument(
            "--aws-endpoint-url",
            "--aws_endpoint_url",
            dest="aws_endpoint_url",
            default=None,
            help="endpoint of every AWS client, e.g. a moto_server (default: "
            "$AWS_ENDPOINT_URL at launch, else AWS's own)",
        )
        aws.add_argument(
            "--aws-region",
            "--aws_region",
            dest="aws_region",
            default=None,
            help="AWS region (default: $AWS_REGION or $AWS_DEFAULT_REGION at launch, else "
            "the workers' boto3 default)",
        )
        aws.add_argument(
            "--aws-access-key-id",
            "--aws_access_key_id",
            dest="aws_access_key_id",
            default=None,
            help="with --aws-secret-access-key: the credentials of every AWS client (default: "
            "the workers' own boto3 chain -- their environment, profile or role; the "
            "launcher's AWS_ACCESS_KEY_ID is not copied)",
        )
        aws.add_argument(
            "--aws-secret-access-key",
            "--aws_secret_access_key",
            dest="aws_secret_access_key",
            default=None,
            help="with --aws-access-key-id; sealed with the secret key at launch, never "
            "shown (prefer the workers' own chain)",
        )
        gcp = parser.add_argument_group("Pub/Sub")
        gcp.add_argument(
            "--pubsub-project",
            "--pubsub_project",
            dest="pubsub_project",
            default=None,
            help="project of bare topic and subscription names (default: $PUBSUB_PROJECT_ID, "
            f"else $GOOGLE_CLOUD_PROJECT at launch, else {pubsub.DEFAULT_PROJECT})",
        )
        gcp.add_argument(
            "--pubsub-emulator-host",
            "--pubsub_emulator_host",
            dest="pubsub_emulator_host",
            default=None,
            help="HOST:PORT of a Pub/Sub emulator the readers use (default: "
            "$PUBSUB_EMULATOR_HOST at launch, else Google's service)",
        )
        keys = parser.add_argument_group("secret key (GitHub tokens, sealed credentials)")
        keys.add_argument(
            "--secret-key-file",
            "--secret_key_file",
            dest="secret_key_file",
            default=None,
            help="a file holding blogflow's secret key, at this path on every worker (the "
            "key itself never goes into options)",
        )
        keys.add_argument(
            "--secret-key-secret",
            "--secret_key_secret",
            dest="secret_key_secret",
            default=None,
            help="the key in Google Secret Manager, projects/P/secrets/S/versions/V, read on "
            "the workers (needs the gcp-secrets extra). Without either flag "
            f"${SECRET_KEY_VARIABLE} of the launcher is used, by workers in this process only",
        )
        keys.add_argument(
            "--secret-key-handle",
            "--secret_key_handle",
            dest="secret_key_handle",
            default=None,
            help=argparse.SUPPRESS,  # set by the launcher: the in-memory key's handle
        )


class LaunchError(ValueError):
    """A setting the launcher cannot give to the workers; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Connections:
    """The connection settings of a job, as resolved at launch (see the module docstring).

    ``mongo_uri`` and ``redis_url`` may be sealed; None where the options were never
    resolved (a pipeline built from hand-made options: the old environment defaults then).
    """

    mongo_uri: str | None
    redis_url: str | None
    aws: AwsConfig
    pubsub_project: str | None
    pubsub_emulator_host: str | None
    secret_key: KeySource | None


def connections(options: PipelineOptions) -> Connections:
    """The settings :func:`parse_pipeline_args` resolved, for a job's ``build``."""
    stores = options.view_as(StoreOptions)
    conn = options.view_as(ConnectionOptions)
    return Connections(
        mongo_uri=stores.mongo_uri,
        redis_url=stores.redis_url,
        aws=AwsConfig(
            endpoint_url=conn.aws_endpoint_url,
            region_name=conn.aws_region,
            access_key_id=conn.aws_access_key_id,
            secret_access_key=conn.aws_secret_access_key,
        ),
        pubsub_project=conn.pubsub_project,
        pubsub_emulator_host=conn.pubsub_emulator_host,
        secret_key=_key_source(conn),
    )


def _key_source(conn: ConnectionOptions) -> KeySource | None:
    if conn.secret_key_file:
        return KeySource.file(conn.secret_key_file)
    if conn.secret_key_secret:
        return KeySource.secret_manager(conn.secret_key_secret)
    if conn.secret_key_handle:
        return KeySource(KeySource.PROCESS, conn.secret_key_handle)
    return None


def resolve_key_source(
    key_file: str | None, secret: str | None, environ: Mapping[str, str]
) -> KeySource | None:
    """Where workers read the secret key: ``--secret-key-file``, ``--secret-key-secret``,
    else ``BLOGFLOW_SECRET_KEY`` of ``environ`` kept in this process, else None.

    Raises:
        LaunchError: both flags, a malformed secret name, or a short key in the variable.
    """
    if key_file and secret:
        raise LaunchError("give --secret-key-file or --secret-key-secret, not both")
    try:
        if key_file:
            return KeySource.file(key_file)
        if secret:
            return KeySource.secret_manager(secret)
        key = environ.get(SECRET_KEY_VARIABLE)
        return KeySource.in_memory(key) if key else None
    except (ValueError, TokenError) as error:
        raise LaunchError(str(error)) from None


_IN_PROCESS_RUNNERS = ("FnApiRunner", "BundleBasedDirectRunner", "DirectRunner")
#: Portable environments whose SDK harness runs inside the launching process.
_IN_PROCESS_ENVIRONMENTS = ("LOOPBACK", "EMBEDDED")


def workers_in_process(options: PipelineOptions) -> bool:
    """Whether the options' runner runs every worker inside this process: FnApiRunner and
    the DirectRunners (unless ``--direct_running_mode=multi_processing``), or a portable
    runner with the ``LOOPBACK`` environment (Prism, as blogflow configures it)."""
    runner = options.view_as(StandardOptions).runner
    if not isinstance(runner, str):
        return False
    try:
        name = runner_class_path(runner).rsplit(".", 1)[-1]
    except UnknownRunner:
        return False
    if name in _IN_PROCESS_RUNNERS or name == "SwitchingDirectRunner":
        return options.view_as(DirectOptions).direct_running_mode != "multi_processing"
    environment = options.view_as(PortableOptions).environment_type
    return (environment or "").upper() in _IN_PROCESS_ENVIRONMENTS


def _has_password(url: str) -> bool:
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return "@" in url  # unparsable: treat what may be credentials as such


#: The connection settings resolved at launch: the options view and attribute of each, the
#: launcher's variables it falls back to (the first one set wins), and its default.
_FALLBACKS: tuple[tuple[type[PipelineOptions], str, Sequence[str], str | None], ...] = (
    (StoreOptions, "mongo_uri", ("MONGODB_URI",), mongo.DEFAULT_URI),
    (StoreOptions, "redis_url", ("REDIS_URL",), redis.DEFAULT_URL),
    (ConnectionOptions, "aws_endpoint_url", ("AWS_ENDPOINT_URL",), None),
    (ConnectionOptions, "aws_region", ("AWS_REGION", "AWS_DEFAULT_REGION"), None),
    (ConnectionOptions, "pubsub_emulator_host", ("PUBSUB_EMULATOR_HOST",), None),
    (ConnectionOptions, "pubsub_project", tuple(pubsub.PROJECT_ENV_VARS), pubsub.DEFAULT_PROJECT),
)


def _resolve_connections(
    options: PipelineOptions,
    environ: Mapping[str, str],
    *,
    in_process: bool,
    needs_secret_key: bool,
    runner: str,
) -> list[str]:
    """Resolves every connection setting into ``options`` (see the module docstring);
    returns the cleartext credentials that were sealed, to drop from the flags.

    Raises:
        LaunchError: one line, when a setting cannot reach the workers safely.
    """
    stores = options.view_as(StoreOptions)
    conn = options.view_as(ConnectionOptions)
    where = "this process" if in_process else f"{runner}'s workers"
    key_source = resolve_key_source(conn.secret_key_file, conn.secret_key_secret, environ)
    if needs_secret_key and key_source is None:
        raise LaunchError(
            "no secret key to decrypt the stored GitHub tokens: pass --secret-key-file PATH "
            f"or --secret-key-secret projects/P/secrets/S/versions/V (or set {SECRET_KEY_VARIABLE} "
            "for workers in this process)"
        )
    remote_needs_launcher = (
        needs_secret_key and key_source is not None and key_source.in_process and not in_process
    )
    if remote_needs_launcher:
        raise LaunchError(
            f"{runner} runs its workers outside this process, where {SECRET_KEY_VARIABLE} of "
            "the launcher cannot be read: pass --secret-key-file PATH (a file on every "
            "worker) or --secret-key-secret projects/P/secrets/S/versions/V"
        )
    if key_source is not None and not key_source.in_process and in_process:
        _load(key_source)  # the workers are here: a missing file fails now, in one line
    for options_class, name, variables, default in _FALLBACKS:
        settings = options.view_as(options_class)
        launcher = (environ.get(v, "").strip() for v in variables)
        value = getattr(settings, name) or next((v for v in launcher if v), None) or default
        setattr(settings, name, value.strip() if isinstance(value, str) else value)
    if bool(conn.aws_access_key_id) != bool(conn.aws_secret_access_key):
        raise LaunchError("give --aws-access-key-id and --aws-secret-access-key together")
    to_seal = {
        name: value
        for name, value in (("mongo_uri", stores.mongo_uri), ("redis_url", stores.redis_url))
        if _has_password(value)
    }
    if conn.aws_secret_access_key:
        to_seal["aws_secret_access_key"] = conn.aws_secret_access_key
    if to_seal:
        sealer = key_source or KeySource.in_memory(secrets.token_urlsafe(48))
        if sealer.in_process and not in_process:
            flag = "--" + next(iter(to_seal)).replace("_", "-")
            raise LaunchError(
                f"{flag} holds a credential, sealed for {where} with the secret key, and "
                "there is none they can read: pass --secret-key-file PATH or "
                "--secret-key-secret NAME (or give the workers their own credentials)"
            )
        _load(sealer)
        for name, value in to_seal.items():
            view = conn if name.startswith("aws_") else stores
            display = "***" if name.startswith("aws_") else redact_url(value)
            setattr(view, name, seal(value, sealer, shown=display))
    if key_source is not None and key_source.in_process:
        conn.secret_key_handle = key_source.ref
    return list(to_seal.values())


def _load(source: KeySource) -> None:
    try:
        source.load()
    except TokenError as error:
        raise LaunchError(str(error)) from None


def _without(argv: Sequence[str], cleartexts: Sequence[str]) -> list[str]:
    """``argv`` without the flags whose value is one of ``cleartexts`` (``--f=v`` or
    ``--f v``)."""
    kept: list[str] = []
    for arg in argv:
        if arg in cleartexts and kept and kept[-1].startswith("--") and "=" not in kept[-1]:
            kept.pop()
            continue
        if arg.startswith("--") and arg.partition("=")[2] in cleartexts:
            continue
        kept.append(arg)
    return kept


def parse_pipeline_args(
    argv: Sequence[str],
    option_classes: Sequence[type[PipelineOptions]],
    *,
    prog: str,
    description: str,
    needs_secret_key: bool = False,
    environ: Mapping[str, str] | None = None,
) -> PipelineOptions:
    """Parses a pipeline's command line, with ``--help`` and clear errors.

    Flags of ``option_classes`` (and of :class:`ConnectionOptions`, which every job has)
    are checked here (a missing ``--source`` exits with a usage message); any other flag is
    handed to Beam, e.g. ``--direct_num_workers``. Connection settings are resolved from
    the flags, ``environ`` (default: ``os.environ``) and the defaults, as the module
    docstring says; ``needs_secret_key``: the job's workers decrypt GitHub tokens, so the
    launch fails in one line when they could not read the key. An option class with a
    ``resolve(environ)`` method resolves its own settings then (``--github-api-url``).
    """
    environ = os.environ if environ is None else environ
    if ConnectionOptions not in option_classes:
        option_classes = (*option_classes, ConnectionOptions)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Other Beam pipeline options (e.g. --direct_num_workers=2, --job_name) are "
        "passed to the runner. Connection settings are resolved at launch: the flag, else "
        "the environment variable named, else the default.",
    )
    for option_class in option_classes:
        option_class._add_argparse_args(parser)  # type: ignore[arg-type]
    parser.add_argument(
        "--runner",
        default=None,
        help="runner profile (" + ", ".join(PROFILES) + ") or a Beam runner name; "
        "default: FnApiRunner (in-process) for a batch job, prism for a streaming one",
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="run as a streaming job even when the source is bounded (an unbounded source "
        "always makes one)",
    )
    known, _ = parser.parse_known_args(list(argv))
    if hasattr(known, "source") and not known.source:
        parser.error("--source is required, e.g. --source sqs://QUEUE or --source file://GLOB")
    for name in ("max_records",):
        value = getattr(known, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("idle_timeout", "max_read_time"):
        value = getattr(known, name, None)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    options = PipelineOptions(list(argv))
    _refuse_unknown_flags(options, parser, prog, argv)
    standard = options.view_as(StandardOptions)
    source: str | None = getattr(known, "source", None)
    try:
        unbounded = source is not None and is_unbounded(
            source,
            drain=getattr(known, "drain", False),
            max_records=getattr(known, "max_records", None),
            max_read_time=getattr(known, "max_read_time", None),
        )
    except ValueError as error:
        parser.error(str(error))
    bounded_by = [
        flag
        for flag, name in (("--drain", "drain"), ("--max-records", "max_records"))
        + (("--max-read-time", "max_read_time"),)
        if getattr(known, name, None)
    ]
    if source and source.startswith("pubsub://") and bounded_by:
        parser.error(
            f"a pubsub:// source is read by a streaming job: {bounded_by[0]} does not apply"
        )
    # Decided once, here, from the source: the pipeline module passes it to its composites.
    standard.streaming = bool(standard.streaming) or unbounded
    default = DEFAULT_STREAMING_RUNNER if standard.streaming else None
    standard.runner = resolve_runner(known.runner or default)
    try:
        configure_runner(options)  # an unknown runner, or no Prism binary: one line
    except RunnerError as error:
        raise SystemExit(f"{prog}: {error}") from None
    if source and not runs_splittable_dofns(standard.runner):
        scheme, _ = parse_source(source)
        if scheme != "pubsub":
            raise SystemExit(
                f"{prog}: {standard.runner} cannot read {scheme}:// sources (they are "
                "Splittable DoFns): use --runner prism, or fnapi for a bounded run"
            )
    if standard.streaming and standard.runner == DEFAULT_RUNNER:
        _LOGGER.warning(
            "%s: FnApiRunner does not stream: what comes after a grouping (feeds, backups) "
            "is held until the source ends, which an unbounded source never does; use "
            "--runner prism, or bound the read (--drain)",
            prog,
        )
    try:
        cleartexts = _resolve_connections(
            options,
            environ,
            in_process=workers_in_process(options),
            needs_secret_key=needs_secret_key,
            runner=str(standard.runner),
        )
        for option_class in option_classes:
            resolve = getattr(option_class, "resolve", None)
            if resolve is not None:
                resolve(options.view_as(option_class), environ)
    except LaunchError as error:
        raise SystemExit(f"{prog}: {error}") from None
    if cleartexts:
        # Beam keeps the command line (``_flags``) and parses it again whenever it lists
        # the options: rebuilt without the credentials, from the resolved values.
        resolved = options.get_all_options(drop_default=True)
        options = PipelineOptions(_without(argv, cleartexts), **resolved)
    return options


def _refuse_unknown_flags(
    options: PipelineOptions, parser: argparse.ArgumentParser, prog: str, argv: Sequence[str]
) -> None:
    """Exits with one line for a flag neither blogflow nor Beam knows (``--drian``):
    Beam would only log it and run the job without it, possibly forever."""
    known = options.get_all_options(drop_default=False)
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
    if not unknown:
        return
    flags = {s for action in parser._actions for s in action.option_strings}  # noqa: SLF001
    flags |= {f"--{name}" for name in known}
    # As the user spelled it (Beam reports --window-sizee as window_sizee).
    name = next(
        (
            arg.split("=", 1)[0]
            for arg in argv
            if arg.startswith("--") and arg[2:].split("=", 1)[0].replace("-", "_") == unknown[0]
        ),
        f"--{unknown[0]}",
    )
    close = difflib.get_close_matches(name, sorted(flags), n=1, cutoff=0.75)
    hint = f"did you mean {close[0]}? " if close else ""
    raise SystemExit(f"{prog}: unknown flag {name}: {hint}`{prog} --help` lists them")
