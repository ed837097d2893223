"""PipelineOptions shared by blogflow's pipelines, and the argument parsing they share."""

from __future__ import annotations

import argparse
import difflib
import logging
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from blogflow.io.sources import ReadSource, is_unbounded, parse_source
from blogflow.runners import RunnerError
from blogflow.runners.profiles import (
    DEFAULT_RUNNER,
    DEFAULT_STREAMING_RUNNER,
    PROFILES,
    configure_runner,
    resolve_runner,
    runs_splittable_dofns,
)

__all__ = [
    "SourceOptions",
    "StoreOptions",
    "parse_pipeline_args",
    "read_source",
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


def read_source(options: PipelineOptions) -> ReadSource:
    """The :class:`~blogflow.io.sources.ReadSource` that ``--source`` and its bounds
    describe."""
    source = options.view_as(SourceOptions)
    return ReadSource(
        source.source,
        drain=source.drain,
        idle_timeout=source.idle_timeout,
        max_records=source.max_records,
        max_read_time=source.max_read_time,
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
            help="MongoDB URI (default: $MONGODB_URI, else mongodb://127.0.0.1:27017/)",
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
            help="Redis URL (default: $REDIS_URL, else redis://127.0.0.1:6379/0)",
        )
        group.add_argument(
            "--redis-prefix",
            "--redis_prefix",
            dest="redis_prefix",
            default="",
            help="prefix of every Redis key written (default: none)",
        )


def parse_pipeline_args(
    argv: Sequence[str],
    option_classes: Sequence[type[PipelineOptions]],
    *,
    prog: str,
    description: str,
) -> PipelineOptions:
    """Parses a pipeline's command line, with ``--help`` and clear errors.

    Flags of ``option_classes`` are checked here (a missing ``--source`` exits with a
    usage message); any other flag is handed to Beam, e.g. ``--direct_num_workers``.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog="Other Beam pipeline options (e.g. --direct_num_workers=2, --job_name) are "
        "passed to the runner.",
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
