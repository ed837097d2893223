"""Dataflow Flex Templates of blogflow's pipelines: their metadata, generated from the
pipelines' own parsers, and the launcher's entry point.

A Flex Template has one metadata file per template, so each pipeline is a template of its
own: ``deploy/flex-template/{summing,feed,backup}.json``, made by::

    python -m blogflow.runners.flex_template --pipeline summing > deploy/flex-template/summing.json
    python -m blogflow.runners.flex_template --all deploy/flex-template   # every pipeline

A parameter is a flag of the parser the job reads its command line with (the one
:func:`blogflow.options.parse_pipeline_args` builds, caught as it parses, so a flag added
there or to a job's options class is in the next generation), named by its underscore
spelling (``idle_timeout``): Dataflow's launcher passes each parameter to the Python main as
``--name=value``, which that spelling always is. ``--runner`` and ``--streaming`` are
Beam's own options, set by Dataflow and by the source (a queue or stream read without a
bound streams), so they are no parameters; nor are Beam's and Dataflow's options
(``--project``, ``--region``, ...), which every template takes. A flag without a value
(``--drain``) is a ``true``/``false`` parameter; :func:`launch` turns ``--drain=true``
into ``--drain`` (and drops ``--drain=false``) before the job reads it.

``tests/test_deploy.py`` fails when a committed file differs from what this generates.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from blogflow.cli import PIPELINES

__all__ = [
    "flex_argv",
    "job_parser",
    "launch",
    "main",
    "metadata",
    "render",
]

_LOGGER = logging.getLogger(__name__)

#: Flags that are Beam's own options, set by Dataflow or decided from the source.
_NOT_PARAMETERS = frozenset({"help", "runner", "streaming"})
#: Flags that ``parse_pipeline_args`` requires although argparse has them optional.
_REQUIRED = frozenset({"source"})
_TRUE, _FALSE = "true", "false"
_INT = r"^-?[0-9]+$"
_FLOAT = r"^-?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$"


class _Caught(Exception):  # noqa: N818 - not an error: the parser, caught
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser caught")
        self.parser = parser


def _job(name: str) -> Any:
    if name not in PIPELINES:
        raise ValueError(f"unknown pipeline {name!r}: one of {', '.join(PIPELINES)}")
    return importlib.import_module(PIPELINES[name]).JOB


def job_parser(name: str) -> argparse.ArgumentParser:
    """The parser pipeline ``name`` reads its command line with, caught when it first
    parses: every flag the job accepts besides Beam's, wherever it is declared."""
    job = _job(name)
    original = argparse.ArgumentParser.parse_known_args

    def catch(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
        raise _Caught(self)

    argparse.ArgumentParser.parse_known_args = catch  # type: ignore[assignment,method-assign]
    try:
        job.parse(["--source=file:///nothing.jsonl"])
    except _Caught as caught:
        return caught.parser
    finally:
        argparse.ArgumentParser.parse_known_args = original  # type: ignore[method-assign]
    raise RuntimeError(f"{job.prog} parsed its command line without an argparse parser")


def _flag_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [
        action
        for action in parser._actions  # noqa: SLF001 - argparse keeps them nowhere else
        if action.option_strings
        and action.dest not in _NOT_PARAMETERS
        and action.help != argparse.SUPPRESS  # set by the launcher, not by a user
    ]


def _name(action: argparse.Action) -> str:
    """The flag's underscore spelling, which the parser accepts (``--idle_timeout``)."""
    spelled = f"--{action.dest}"
    if spelled in action.option_strings:
        return action.dest
    long = [flag for flag in action.option_strings if flag.startswith("--")]
    return (long or action.option_strings)[0].lstrip("-")


def _is_switch(action: argparse.Action) -> bool:
    return action.nargs == 0


def _parameter(parser: argparse.ArgumentParser, action: argparse.Action) -> dict[str, Any]:
    formatter = parser._get_formatter()  # noqa: SLF001 - expands %(default)s as --help does
    help_text = " ".join(formatter._expand_help(action).split()) if action.help else ""  # noqa: SLF001
    parameter: dict[str, Any] = {
        "name": _name(action),
        "label": action.dest.replace("_", " ").capitalize(),
        "helpText": help_text,
        "isOptional": not (action.required or action.dest in _REQUIRED),
    }
    if _is_switch(action):
        parameter["helpText"] = f"{_TRUE} or {_FALSE}: {help_text}"
        parameter["regexes"] = [f"^({_TRUE}|{_FALSE})$"]
    elif action.choices:
        parameter["regexes"] = ["^(" + "|".join(str(c) for c in action.choices) + ")$"]
    elif action.type is int:
        parameter["regexes"] = [_INT]
    elif action.type is float:
        parameter["regexes"] = [_FLOAT]
    elif action.dest == "source":
        from blogflow.io.sources import SCHEMES

        parameter["regexes"] = ["^(" + "|".join(SCHEMES) + ")://.+$"]
    return parameter


def metadata(name: str) -> dict[str, Any]:
    """The Flex Template metadata of pipeline ``name``: every flag of its parser."""
    job = _job(name)
    parser = job_parser(name)
    return {
        "name": f"blogflow-{name}",
        "description": job.description,
        "streaming": True,
        "supportsAtLeastOnce": True,
        "supportsExactlyOnce": True,
        "parameters": [_parameter(parser, action) for action in _flag_actions(parser)],
    }


def render(name: str) -> str:
    """:func:`metadata` as the committed file holds it."""
    return json.dumps(metadata(name), indent=2, ensure_ascii=False) + "\n"


def flex_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The launcher's arguments as the job reads them: a switch passed as
    ``--drain=true`` becomes ``--drain``, ``--drain=false`` is dropped."""
    switches: set[str] = set()
    for action in _flag_actions(job_parser(name)):
        if _is_switch(action):
            switches.update(action.option_strings)
    out = []
    for arg in argv:
        flag, sep, value = arg.partition("=")
        if sep and flag in switches:
            if value.lower() == _TRUE:
                out.append(flag)
            elif value.lower() != _FALSE:
                raise SystemExit(f"{flag} takes true or false, not {value!r}")
            continue
        out.append(arg)
    return out


def launch(name: str, argv: Sequence[str]) -> None:
    """The Flex Template launcher's main: starts pipeline ``name`` on Dataflow and returns
    once the job is submitted (a launcher that waited would hold a streaming job's launch
    until it timed out)."""
    job = _job(name)
    result = job.start(flex_argv(name, argv))
    _LOGGER.info("%s: submitted, state %s", job.prog, getattr(result, "state", "?"))


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m blogflow.runners.flex_template``: prints or writes the metadata."""
    parser = argparse.ArgumentParser(
        prog="python -m blogflow.runners.flex_template",
        description="Dataflow Flex Template metadata of blogflow's pipelines.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--pipeline", choices=sorted(PIPELINES), help="print this one's")
    which.add_argument("--all", metavar="FOLDER", help="write FOLDER/NAME.json of every one")
    args = parser.parse_args(argv)
    if args.pipeline:
        sys.stdout.write(render(args.pipeline))
        return
    folder = Path(args.all)
    folder.mkdir(parents=True, exist_ok=True)
    for name in PIPELINES:
        (folder / f"{name}.json").write_text(render(name), encoding="utf-8")
        print(folder / f"{name}.json")


if __name__ == "__main__":
    main()
