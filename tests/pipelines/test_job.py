"""One job declaration: every pipeline's run() and __main__ come from its ``JOB``, which
decides once whether the job streams and passes that to its build."""

from __future__ import annotations

import signal
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import StandardOptions

from blogflow.cli import PIPELINES
from blogflow.options import SourceOptions
from blogflow.pipelines import backup, feed, summing
from blogflow.pipelines.job import Job, JobStopped


@pytest.mark.parametrize("module", [summing, feed, backup])
def test_every_pipeline_is_declared_once(module):
    assert isinstance(module.JOB, Job)
    assert module.run == module.JOB.run
    assert PIPELINES[module.JOB.name] == module.__name__
    assert module.JOB.prog == f"blogflow run {module.JOB.name}"


@pytest.mark.parametrize(
    ("argv", "streaming"),
    [
        (["--source=file:///tmp/x.jsonl"], False),
        (["--source=sqs://q", "--drain"], False),
        (["--source=sqs://q", "--runner=fnapi"], True),
        (["--source=kinesis://s", "--runner=fnapi"], True),
        (["--source=file:///tmp/x.jsonl", "--streaming"], True),
    ],
)
def test_the_job_decides_streaming_once_and_passes_it_to_build(argv, streaming):
    seen = []

    def build(pipeline, options, *, streaming):
        seen.append(streaming)
        assert options.view_as(StandardOptions).streaming == streaming
        _ = pipeline | "Nothing" >> beam.Create([1])

    Job("probe", "A probe.", (SourceOptions,), build).pipeline(argv)
    assert seen == [streaming]


def test_a_bad_value_found_while_building_is_one_line():
    def build(pipeline, options, *, streaming):
        raise ValueError("--feed-size must be positive")

    with pytest.raises(SystemExit) as exited:
        Job("probe", "", (SourceOptions,), build).pipeline(["--source=file:///x"])
    assert exited.value.code == "blogflow run probe: --feed-size must be positive"


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_says_so_in_one_line_with_the_shells_exit_code(signum, code):
    stopped = JobStopped("blogflow run summing", signum, 12.34)
    assert stopped.exit_code == code
    assert str(stopped) == (
        f"blogflow run summing: stopped by {signal.Signals(signum).name} after 12.3 s; what "
        "was read but not yet committed is delivered again to the next run"
    )


@pytest.mark.parametrize("module", ["summing", "feed", "backup"])
def test_help_works_as_a_module(module):
    done = subprocess.run(
        [sys.executable, "-m", f"blogflow.pipelines.{module}", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert done.stdout.startswith(f"usage: blogflow run {module}")
    assert "--streaming" in done.stdout and "--source" in done.stdout
