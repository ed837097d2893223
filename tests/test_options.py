"""The pipelines' command line: a flag nobody knows is one line before anything runs."""

import base64
import bz2
import pickle
import subprocess
import sys
import zlib

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.transforms.display import DisplayData

from blogflow.io import mongo
from blogflow.io.aws import AwsConfig
from blogflow.options import (
    Connections,
    SourceOptions,
    StoreOptions,
    connections,
    parse_pipeline_args,
    workers_in_process,
)
from blogflow.pipelines import backup
from blogflow.pipelines.backup import BackupOptions
from blogflow.pipelines.feed import FeedOptions
from blogflow.tokens import KeySource, is_sealed, unseal


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


# ------------------------------------------------- connection settings, resolved at launch

KEY = "options-test-secret-key-" + "s" * 30
SECRETS = {
    "mongo": "mongo-pass-4b1d",
    "redis": "redis-pass-77e2",
    "aws": "aws-secret-9f3c",
}


def resolve(*argv, environ=None, needs_secret_key=False, classes=(SourceOptions, StoreOptions)):
    return parse_pipeline_args(
        ["--source=file:///tmp/none.jsonl", *argv],
        classes,
        prog="blogflow run x",
        description="",
        needs_secret_key=needs_secret_key,
        environ={} if environ is None else environ,
    )


def refused(*argv, **kwargs):
    with pytest.raises(SystemExit) as exited:
        resolve(*argv, **kwargs)
    message = str(exited.value.code)
    assert message.startswith("blogflow run x: ") and "\n" not in message
    return message


def test_a_flag_wins_over_the_environment_which_wins_over_the_default():
    environ = {
        "MONGODB_URI": "mongodb://env-mongo:1/",
        "REDIS_URL": "redis://env-redis:2/0",
        "AWS_ENDPOINT_URL": "http://env-aws:3",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": "AKIA-FROM-ENV",
        "AWS_SECRET_ACCESS_KEY": "never-copied",
        "PUBSUB_EMULATOR_HOST": "env-pubsub:4",
        "GOOGLE_CLOUD_PROJECT": "env-project",
        "GITHUB_API_URL": "http://env-github:5",
    }
    classes = (SourceOptions, StoreOptions, BackupOptions)
    from_env = connections(resolve(environ=environ, classes=classes))
    assert from_env.mongo_uri == "mongodb://env-mongo:1/"
    assert from_env.redis_url == "redis://env-redis:2/0"
    assert from_env.aws == AwsConfig("http://env-aws:3", "eu-west-3", None, None)
    assert (from_env.pubsub_emulator_host, from_env.pubsub_project) == (
        "env-pubsub:4",
        "env-project",
    )
    flags = resolve(
        "--mongo-uri=mongodb://flag-mongo:1/", "--redis_url=redis://flag-redis:2/1",
        "--aws-endpoint-url=http://flag-aws:3", "--aws-region=us-west-2",
        "--pubsub-emulator-host=flag-pubsub:4", "--pubsub-project=flag-project",
        "--github-api-url=http://flag-github:5", environ=environ, classes=classes,
    )  # fmt: skip
    from_flags = connections(flags)
    assert (from_flags.mongo_uri, from_flags.redis_url) == (
        "mongodb://flag-mongo:1/",
        "redis://flag-redis:2/1",
    )
    assert from_flags.aws == AwsConfig("http://flag-aws:3", "us-west-2", None, None)
    assert (from_flags.pubsub_emulator_host, from_flags.pubsub_project) == (
        "flag-pubsub:4",
        "flag-project",
    )
    assert flags.view_as(BackupOptions).github_api_url == "http://flag-github:5"
    defaults = resolve(classes=classes)
    assert connections(defaults) == Connections(
        mongo_uri="mongodb://127.0.0.1:27017/",
        redis_url="redis://127.0.0.1:6379/0",
        aws=AwsConfig(),
        pubsub_project="blogflow-local",
        pubsub_emulator_host=None,
        secret_key=None,
    )
    assert defaults.view_as(BackupOptions).github_api_url == "https://api.github.com"


def test_aws_credentials_come_as_a_pair_and_the_secret_one_only_sealed():
    assert "together" in refused("--aws-access-key-id=AKIA1")
    assert "together" in refused(f"--aws-secret-access-key={SECRETS['aws']}")
    settings = connections(
        resolve("--aws-access-key-id=AKIA1", f"--aws-secret-access-key={SECRETS['aws']}")
    )
    assert settings.aws.access_key_id == "AKIA1"
    assert is_sealed(settings.aws.secret_access_key)
    assert SECRETS["aws"] not in settings.aws.secret_access_key + repr(settings.aws)
    assert settings.aws.client_kwargs()["aws_secret_access_key"] == SECRETS["aws"]


def test_a_bad_secret_key_setting_is_one_line_at_launch(tmp_path):
    secret = "projects/p/secrets/s/versions/1"
    assert "not both" in refused(f"--secret-key-file={tmp_path}/k", f"--secret-key-secret={secret}")
    assert "must name a secret version" in refused("--secret-key-secret=projects/p/secrets/s")
    missing = refused(f"--secret-key-file={tmp_path}/missing.key")
    assert f"cannot read the secret key file {tmp_path}/missing.key" in missing
    (tmp_path / "short.key").write_text("short\n")
    assert "at least 32 characters" in refused(f"--secret-key-file={tmp_path}/short.key")
    assert "must be at least 32" in refused(environ={"BLOGFLOW_SECRET_KEY": "short"})
    no_key = refused(needs_secret_key=True)
    assert "no secret key" in no_key and "--secret-key-file PATH" in no_key


def test_a_job_whose_workers_run_elsewhere_never_relies_on_the_launchers_key(tmp_path):
    elsewhere = ("--runner=FnApiRunner", "--direct_running_mode=multi_processing")
    message = refused(*elsewhere, environ={"BLOGFLOW_SECRET_KEY": KEY}, needs_secret_key=True)
    assert "outside this process" in message and KEY not in message
    # a password sealed with a key only this process holds could not be opened there
    sealed = refused(*elsewhere, f"--mongo-uri=mongodb://u:{SECRETS['mongo']}@h:1/")
    assert sealed.startswith("blogflow run x: --mongo-uri holds a credential")
    assert SECRETS["mongo"] not in sealed
    # a key file that only the workers have: fine, as long as nothing needs sealing here
    options = resolve(*elsewhere, "--secret-key-file=/on/the/workers/key", needs_secret_key=True)
    assert connections(options).secret_key == KeySource.file("/on/the/workers/key")


def test_the_secret_key_reaches_workers_as_a_reference(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    from_file = connections(resolve(f"--secret-key-file={key_file}", needs_secret_key=True))
    assert from_file.secret_key == KeySource.file(key_file) and from_file.secret_key.load() == KEY
    from_env = connections(resolve(environ={"BLOGFLOW_SECRET_KEY": KEY}, needs_secret_key=True))
    assert from_env.secret_key.in_process and from_env.secret_key.load() == KEY
    assert KEY.encode() not in pickle.dumps(from_env.secret_key)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--runner=FnApiRunner"], True),
        (["--runner=BundleBasedDirectRunner"], True),
        (["--runner=FnApiRunner", "--direct_running_mode=multi_processing"], False),
        (["--runner=PrismRunner", "--environment_type=LOOPBACK"], True),
        (["--runner=PrismRunner", "--environment_type=PROCESS"], False),
        (["--runner=FlinkRunner", "--environment_type=EXTERNAL"], False),
        (["--runner=FlinkRunner"], False),
        (["--runner=DataflowRunner"], False),
    ],
)
def test_which_runners_run_their_workers_in_this_process(argv, expected):
    assert workers_in_process(PipelineOptions(argv)) is expected


def _pickled_dofns(proto):
    """The pickled DoFns of a pipeline proto, decompressed as Beam's pickler wrote them."""
    found = []
    for transform in proto.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            raw = base64.b64decode(payload.do_fn.payload)
            found.append(bz2.decompress(raw) if raw[:3] == b"BZh" else zlib.decompress(raw))
    return found


def test_credentials_are_absent_from_the_job_graph_and_the_options_beam_sends(monkeypatch):
    """What Beam takes from a job: the pipeline proto (with every DoFn pickled into it and
    each transform's display data), the options' display data (Dataflow's job page), the
    options a portable runner's job service is sent (``get_all_options`` as a Struct) and
    the command line Beam keeps in the options. None holds a credential in clear."""
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    mongo_uri = f"mongodb://bob:{SECRETS['mongo']}@127.0.0.1:27017/"
    redis_url = f"redis://:{SECRETS['redis']}@127.0.0.1:6379/0"
    pipeline = backup.JOB.pipeline(
        [
            "--source=file:///tmp/none.jsonl",
            "--mongo-uri", mongo_uri, f"--redis-url={redis_url}",
            "--aws-access-key-id=AKIA1", "--aws-secret-access-key", SECRETS["aws"],
            "--notify=apigateway", "--apigateway-endpoint=http://127.0.0.1:9",
            "--connections-table=connections",
        ]
    )  # fmt: skip
    proto = pipeline.to_runner_api()
    options = pipeline.options
    sent = JobServiceHandle.encode_pipeline_options(
        options.get_all_options(retain_unknown_options=True)
    )
    shown = DisplayData.create_from_options(options).to_proto()
    places = {
        "pipeline proto": proto.SerializeToString(),
        "pickled DoFns": b"\0".join(_pickled_dofns(proto)),
        "portable runner's options": sent.SerializeToString(),
        "options' display data": b"".join(item.SerializeToString() for item in shown),
        "logged options": repr(options.get_all_options(drop_default=True)).encode(),
        "command line kept": repr(options._flags).encode(),
    }
    for secret in (*SECRETS.values(), KEY):
        leaked = [place for place, data in places.items() if secret.encode() in data]
        assert not leaked, f"{secret} in {leaked}"
    # sealed, not dropped: the workers (here, in this process) open them
    stores = options.view_as(StoreOptions)
    assert (unseal(stores.mongo_uri), unseal(stores.redis_url)) == (mongo_uri, redis_url)
    assert options.display_data()["mongo_uri"].startswith("mongodb://bob:***@127.0.0.1:27017/ <")
    assert mongo.redact_uri(stores.mongo_uri) == "mongodb://bob:***@127.0.0.1:27017/"
    assert len(_pickled_dofns(proto)) >= 4
