"""The pipelines' command line: a flag nobody knows is one line before anything runs."""

import subprocess
import sys

import pytest

from blogflow.options import SourceOptions, parse_pipeline_args
from blogflow.pipelines.backup import BackupOptions
from blogflow.pipelines.feed import FeedOptions


def parse(*argv, classes=(SourceOptions,)):
    return parse_pipeline_args(
        ["--source=file:///tmp/none.jsonl", *argv], classes, prog="blogflow run x", description=""
    )


@pytest.mark.parametrize(
    ("argv", "classes", "expected"),
    [
        (["--drian"], (SourceOptions,), "unknown flag --drian: did you mean --drain?"),
        (["--window-sizee=3"], (SourceOptions, FeedOptions), "did you mean --window-size?"),
        (["--posts_per_comit", "3"], (SourceOptions, BackupOptions), "--posts_per_comit"),
        (["--frobnicate"], (SourceOptions,), "unknown flag --frobnicate: `blogflow run x"),
    ],
)
def test_a_flag_nobody_knows_is_refused_by_name(argv, classes, expected):
    with pytest.raises(SystemExit) as exited:
        parse(*argv, classes=classes)
    assert expected in str(exited.value.code)
    assert "\n" not in str(exited.value.code)


def test_blogflow_and_beam_flags_in_either_spelling_pass():
    options = parse(
        "--drain", "--direct_num_workers=2", "--job_name=x", "--window_size=7200",
        "--feed-size", "10", classes=(SourceOptions, FeedOptions),
    )  # fmt: skip
    assert options.get_all_options()["direct_num_workers"] == 2
    assert options.view_as(FeedOptions).feed_size == 10


def test_the_command_line_refuses_a_typo_before_it_runs(tmp_path):
    # An SQS source that does not exist: had the job started, it would fail otherwise.
    done = subprocess.run(
        [sys.executable, "-m", "blogflow.cli", "run", "summing", "--source=sqs://nowhere"]
        + ["--drian"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines()[-1] == (
        "blogflow run summing: unknown flag --drian: did you mean --drain? "
        "`blogflow run summing --help` lists them"
    )
