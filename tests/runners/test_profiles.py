"""Runner profiles: names resolved, unknown ones refused in one line, Prism set up offline."""

from __future__ import annotations

import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import (
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from blogflow.options import SourceOptions, parse_pipeline_args
from blogflow.runners import profiles
from blogflow.runners.prism import PrismNotFound
from blogflow.runners.profiles import PROFILES, UnknownRunner, configure_runner, resolve_runner

FAKE_PRISM = "/opt/fake/prism"


@pytest.fixture
def prism_here(monkeypatch):
    """prism_binary() answers FAKE_PRISM, whatever is built."""
    monkeypatch.setattr(profiles, "prism_binary", lambda: FAKE_PRISM)


def parse(*argv):
    return parse_pipeline_args(
        ["--source=file:///tmp/none.jsonl", *argv],
        [SourceOptions],
        prog="blogflow run x",
        description="",
    )


@pytest.mark.parametrize(
    "name",
    [
        *PROFILES,
        "PRISM",
        "PrismRunner",
        "DataflowRunner",
        "dataflowrunner",
        "spark",
        "apache_beam.runners.dask.dask_runner.DaskRunner",
        "apache_beam.runners.portability.fn_api_runner.FnApiRunner",
    ],
)
def test_profiles_and_beam_runner_names_are_accepted(name, prism_here):
    options = parse(f"--runner={name}")
    assert options.view_as(StandardOptions).runner == resolve_runner(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "prsim",
            "unknown --runner 'prsim': did you mean 'prism'? use a profile (fnapi, direct, "
            "prism, dask, flink, dataflow), a Beam runner name (e.g. DataflowRunner) or a "
            "runner's full class name",
        ),
        ("Flinc", "unknown --runner 'Flinc': did you mean 'flink'? use a profile"),
        ("zzz", "unknown --runner 'zzz': use a profile (fnapi, direct, prism, dask"),
        (
            "apache_beam.runners.daskk.dask_runner.DaskRunner",
            "unknown --runner 'apache_beam.runners.daskk.dask_runner.DaskRunner': there is no "
            "module 'apache_beam.runners.daskk.dask_runner'",
        ),
    ],
)
def test_an_unknown_runner_is_one_line_before_anything_runs(name, expected):
    with pytest.raises(UnknownRunner) as raised:
        configure_runner(PipelineOptions([f"--runner={resolve_runner(name)}"]))
    assert str(raised.value).startswith(expected) and "\n" not in str(raised.value)
    with pytest.raises(SystemExit) as exited:
        parse(f"--runner={name}")
    assert exited.value.code == f"blogflow run x: {raised.value}"


def test_prism_gets_the_projects_binary_and_loopback(prism_here):
    options = parse("--runner=prism")
    assert options.view_as(StandardOptions).runner == "PrismRunner"
    assert options.view_as(PrismRunnerOptions).prism_location == FAKE_PRISM
    assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    # also when named as Beam names it
    full = "apache_beam.runners.portability.prism_runner.PrismRunner"
    assert parse(f"--runner={full}").view_as(PrismRunnerOptions).prism_location == FAKE_PRISM


def test_what_the_user_gives_prism_wins(prism_here):
    options = parse("--runner=prism", "--prism_location=/my/prism", "--environment_type=PROCESS")
    assert options.view_as(PrismRunnerOptions).prism_location == "/my/prism"
    assert options.view_as(PortableOptions).environment_type == "PROCESS"


def test_other_runners_are_left_alone(prism_here):
    for name in (None, "direct", "dataflow"):
        options = parse(*([f"--runner={name}"] if name else []))
        assert options.view_as(PrismRunnerOptions).prism_location is None
        assert options.view_as(PortableOptions).environment_type is None


def test_prism_without_a_binary_is_one_line(monkeypatch):
    def missing():
        raise PrismNotFound("Prism is not built: run `make runners`")

    monkeypatch.setattr(profiles, "prism_binary", missing)
    with pytest.raises(SystemExit) as exited:
        parse("--runner=prism")
    assert exited.value.code == "blogflow run x: Prism is not built: run `make runners`"


def test_the_command_line_says_it_in_one_line(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "blogflow.cli",
            "run",
            "summing",
            "--source",
            f"file://{tmp_path}/none.jsonl",
            "--runner",
            "prsim",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "blogflow run summing: unknown --runner 'prsim': did you mean 'prism'? use a profile "
        "(fnapi, direct, prism, dask, flink, dataflow), a Beam runner name (e.g. "
        "DataflowRunner) or a runner's full class name"
    ]
