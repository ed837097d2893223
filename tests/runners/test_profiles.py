"""Runner profiles: names resolved, unknown ones refused in one line, Prism set up offline."""

from __future__ import annotations

import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from blogflow.options import SourceOptions, parse_pipeline_args, read_source
from blogflow.runners import profiles
from blogflow.runners.flink import FLINK_VERSION, FlinkNotFound
from blogflow.runners.prism import PrismNotFound
from blogflow.runners.profiles import (
    FLINK_CHECKPOINT_MS,
    PROFILES,
    FlinkOptions,
    UnknownRunner,
    configure_runner,
    resolve_runner,
)

FAKE_PRISM = "/opt/fake/prism"
FAKE_JOB_SERVER = "/opt/fake/flink-job-server.jar"


@pytest.fixture
def prism_here(monkeypatch):
    """prism_binary() answers FAKE_PRISM, whatever is built."""
    monkeypatch.setattr(profiles, "prism_binary", lambda: FAKE_PRISM)


@pytest.fixture
def flink_here(monkeypatch):
    """job_server_jar() answers FAKE_JOB_SERVER, whatever is fetched."""
    monkeypatch.setattr(profiles, "job_server_jar", lambda: FAKE_JOB_SERVER)


def parse(*argv, source="file:///tmp/none.jsonl"):
    return parse_pipeline_args(
        [f"--source={source}", *argv],
        [SourceOptions],
        prog="blogflow run x",
        description="",
    )


@pytest.mark.parametrize(
    "name",
    [
        *(name for name in PROFILES if name != "dataflow"),  # tests/runners/test_dataflow.py
        "PRISM",
        "PrismRunner",
        "FlinkRunner",
        "spark",
        "apache_beam.runners.portability.fn_api_runner.FnApiRunner",
    ],
)
def test_profiles_and_beam_runner_names_are_accepted(name, prism_here, flink_here):
    source = "pubsub://events" if resolve_runner(name) == "BundleBasedDirectRunner" else None
    options = parse(f"--runner={name}", **({"source": source} if source else {}))
    assert options.view_as(StandardOptions).runner == resolve_runner(name)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "prsim",
            "unknown --runner 'prsim': did you mean 'prism'? use a profile (fnapi, direct, "
            "prism, flink, dataflow), a Beam runner name (e.g. DataflowRunner) or a "
            "runner's full class name",
        ),
        ("Flinc", "unknown --runner 'Flinc': did you mean 'flink'? use a profile"),
        ("zzz", "unknown --runner 'zzz': use a profile (fnapi, direct, prism, flink"),
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
    # blogflow's readers checkpoint themselves: Prism never splits a running read
    assert options.view_as(DebugOptions).experiments == ["prism_disable_sdf_split"]
    kept = parse("--runner=prism", "--experiments=mine").view_as(DebugOptions).experiments
    assert sorted(kept) == ["mine", "prism_disable_sdf_split"]
    # also when named as Beam names it
    full = "apache_beam.runners.portability.prism_runner.PrismRunner"
    assert parse(f"--runner={full}").view_as(PrismRunnerOptions).prism_location == FAKE_PRISM


def test_what_the_user_gives_prism_wins(prism_here):
    options = parse("--runner=prism", "--prism_location=/my/prism", "--environment_type=PROCESS")
    assert options.view_as(PrismRunnerOptions).prism_location == "/my/prism"
    assert options.view_as(PortableOptions).environment_type == "PROCESS"


@pytest.mark.parametrize(
    "name", ["dask", "DaskRunner", "apache_beam.runners.dask.dask_runner.DaskRunner"]
)
def test_dask_is_refused_in_one_line_saying_why(name):
    with pytest.raises(SystemExit) as exited:
        parse(f"--runner={name}")
    message = str(exited.value.code)
    assert message.startswith(f"blogflow run x: --runner {name}: Beam's DaskRunner cannot run")
    assert "only the last sink" in message and "--runner flink" in message and "\n" not in message


def test_flink_gets_the_projects_job_server_and_loopback_on_this_machine(flink_here):
    for master in ([], ["--flink_master=[local]"], ["--flink-master=127.0.0.1:8081"]):
        options = parse("--runner=flink", *master)
        flink = options.view_as(FlinkRunnerOptions)
        assert (flink.flink_job_server_jar, flink.flink_version) == (FAKE_JOB_SERVER, FLINK_VERSION)
        assert options.view_as(PortableOptions).environment_type == "LOOPBACK"
    assert parse("--runner=flink", "--flink-master=h:1").view_as(
        FlinkRunnerOptions
    ).flink_master == ("h:1")
    # a remote cluster cannot reach a harness in this process: Beam's default (a container)
    remote = parse("--runner=flink", "--flink_master=flink.internal:8081")
    assert remote.view_as(PortableOptions).environment_type is None
    mine = parse("--runner=flink", "--flink_job_server_jar=/my.jar", "--environment_type=PROCESS")
    assert mine.view_as(FlinkRunnerOptions).flink_job_server_jar == "/my.jar"
    assert mine.view_as(PortableOptions).environment_type == "PROCESS"


def test_a_streaming_job_on_flink_checkpoints_so_that_bundles_are_finalized(flink_here):
    streaming = parse("--runner=flink", source="sqs://q")
    assert streaming.view_as(StandardOptions).streaming
    assert streaming.view_as(FlinkOptions).checkpointing_interval == FLINK_CHECKPOINT_MS
    given = parse("--runner=flink", "--checkpointing_interval=500", source="kinesis://s")
    assert given.view_as(FlinkOptions).checkpointing_interval == 500
    batch = parse("--runner=flink", "--drain", source="kinesis://s")
    assert batch.view_as(FlinkOptions).checkpointing_interval is None


def test_a_streaming_job_on_flink_finishes_each_bundle_before_a_checkpoint(flink_here):
    streaming = parse("--runner=flink", source="sqs://q")
    assert streaming.view_as(FlinkOptions).finish_bundle_before_checkpointing is True
    # what the job server reads (Java's finishBundleBeforeCheckpointing)
    assert streaming.get_all_options()["finish_bundle_before_checkpointing"] is True
    off = parse("--runner=flink", "--finish-bundle-before-checkpointing=false", source="sqs://q")
    assert off.view_as(FlinkOptions).finish_bundle_before_checkpointing is False
    batch = parse("--runner=flink", "--drain", source="kinesis://s")
    assert batch.view_as(FlinkOptions).finish_bundle_before_checkpointing is None
    with pytest.raises(SystemExit):
        parse("--runner=flink", "--finish-bundle-before-checkpointing=maybe", source="sqs://q")


@pytest.mark.parametrize("source", ["sqs://q --drain", "sqs://q --max-records=9"])
def test_a_bounded_queue_read_on_flink_batch_deletes_when_stored(source, flink_here):
    """Flink finalizes no bundle of a batch job, so its read deletes after the writes."""
    uri, *flags = source.split()
    on_flink = read_source(parse("--runner=flink", *flags, source=uri))
    assert on_flink._sqs_delete_when_stored
    assert not read_source(parse(*flags, source=uri))._sqs_delete_when_stored  # FnApiRunner
    streaming = read_source(parse("--runner=flink", source=uri))
    assert streaming.unbounded and not streaming._sqs_delete_when_stored  # it finalizes


def test_flink_without_a_job_server_is_one_line(monkeypatch):
    def missing():
        raise FlinkNotFound("no Flink job server at /x.jar: run `make runners`")

    monkeypatch.setattr(profiles, "job_server_jar", missing)
    with pytest.raises(SystemExit) as exited:
        parse("--runner=flink")
    assert exited.value.code == "blogflow run x: no Flink job server at /x.jar: run `make runners`"


def test_other_runners_are_left_alone(prism_here):
    for name, source in ((None, "file:///x"), ("direct", "pubsub://e"), ("spark", "sqs://q")):
        options = parse(*([f"--runner={name}"] if name else []), source=source)
        assert options.view_as(PrismRunnerOptions).prism_location is None
        assert options.view_as(PortableOptions).environment_type is None


@pytest.mark.parametrize(
    ("source", "flags", "streaming", "runner"),
    [
        ("file:///tmp/a*.jsonl", [], False, "FnApiRunner"),
        ("sqs://q", [], True, "PrismRunner"),
        ("sqs://q", ["--drain"], False, "FnApiRunner"),
        ("kinesis://s", [], True, "PrismRunner"),
        ("kinesis://s", ["--max-records=5"], False, "FnApiRunner"),
        ("kinesis://s", ["--max_read_time=3"], False, "FnApiRunner"),
        ("pubsub://s", [], True, "PrismRunner"),
        # given by hand: honoured
        ("file:///tmp/a*.jsonl", ["--streaming"], True, "PrismRunner"),
        ("sqs://q", ["--runner=fnapi"], True, "FnApiRunner"),
        ("sqs://q", ["--drain", "--runner=prism"], False, "PrismRunner"),
        ("pubsub://s", ["--runner=direct"], True, "BundleBasedDirectRunner"),
    ],
)
def test_the_source_decides_whether_a_job_streams_and_so_its_runner(
    source, flags, streaming, runner, prism_here
):
    options = parse(*flags, source=source)
    standard = options.view_as(StandardOptions)
    assert (standard.streaming, standard.runner) == (streaming, runner)
    prism = options.view_as(PrismRunnerOptions).prism_location
    assert prism == (FAKE_PRISM if runner == "PrismRunner" else None)


@pytest.mark.parametrize("source", ["sqs://q", "kinesis://s --drain", "file:///tmp/x.jsonl"])
def test_the_direct_runner_cannot_read_splittable_sources(source):
    uri, *flags = source.split()
    with pytest.raises(SystemExit) as exited:
        parse("--runner=direct", *flags, source=uri)
    scheme = uri.partition(":")[0]
    assert exited.value.code == (
        f"blogflow run x: BundleBasedDirectRunner cannot read {scheme}:// sources (they are "
        "Splittable DoFns): use --runner prism, or fnapi for a bounded run"
    )


@pytest.mark.parametrize("flag", ["--drain", "--max-records=3", "--max-read-time=2"])
def test_a_pubsub_read_takes_no_bound(flag, capsys):
    with pytest.raises(SystemExit):
        parse(flag, source="pubsub://s")
    err = capsys.readouterr().err
    assert (
        f"a pubsub:// source is read by a streaming job: {flag.split('=')[0]} does not apply" in err
    )


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
        "(fnapi, direct, prism, flink, dataflow), a Beam runner name (e.g. "
        "DataflowRunner) or a runner's full class name"
    ]


def test_a_streaming_job_on_fnapi_is_warned_that_it_will_not_stream(caplog):
    with caplog.at_level("WARNING", logger="blogflow.options"):
        parse("--runner=fnapi", source="kinesis://s")
    assert "FnApiRunner does not stream" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="blogflow.options"):
        parse("--runner=fnapi", "--drain", source="kinesis://s")
    assert caplog.text == ""
