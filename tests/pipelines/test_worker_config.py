"""Workers carry their own configuration: jobs launched from a clean environment with every
setting as a flag, and workers that read no environment variable once built.

The subprocess runs get an environment of ``PATH`` and ``HOME`` (an empty directory) only,
and a working directory without ``.blogflow/local.env``: nothing blogflow-, AWS- or
Pub/Sub-related, so whatever reaches MongoDB, Redis, moto or the GitHub stand-in came
through the flags and the options the launcher resolved.
"""

import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from blogflow.events import make_event
from blogflow.io import apigateway, aws
from blogflow.io.backups import load_backup, load_items
from blogflow.io.pubsub import PullFromPubSub, publish_events
from blogflow.io.users import link_user
from blogflow.pipelines import backup, summing
from blogflow.tokens import Secret
from blogflow.transforms.backups import BackupPost, post_path
from blogflow.transforms.summing import split_array
from tests.pipelines.conftest import TOKEN
from tests.pipelines.test_backup import add_posts, request, tree_paths

pytestmark = pytest.mark.integration

KEY = "worker-config-test-key-" + "w" * 30
#: Every variable a blogflow client or boto3 could take a setting from.
_VARIABLES = (
    "BLOGFLOW_SECRET_KEY",
    "MONGODB_URI",
    "REDIS_URL",
    "GITHUB_API_URL",
    "PUBSUB_EMULATOR_HOST",
    "PUBSUB_PROJECT_ID",
    "GOOGLE_CLOUD_PROJECT",
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def clean_run(tmp_path, *args):
    """``blogflow run ARGS`` in a subprocess with only PATH and HOME (empty) set."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "blogflow.cli", "run", *args],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def aws_flags(local_stack):
    return [
        f"--aws-endpoint-url={local_stack.env['AWS_ENDPOINT_URL']}",
        f"--aws-region={local_stack.env['AWS_DEFAULT_REGION']}",
        f"--aws-access-key-id={local_stack.env['AWS_ACCESS_KEY_ID']}",
        f"--aws-secret-access-key={local_stack.env['AWS_SECRET_ACCESS_KEY']}",
    ]


def packets_file(tmp_path, arrays):
    path = tmp_path / "packets.jsonl"
    lines = []
    for array_id, values in arrays.items():
        _, events = split_array(values, array_id=array_id)
        lines += [event.to_json() for event in events]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def test_summing_from_a_clean_environment_with_every_setting_as_a_flag(
    tmp_path, local_stack, mongo_db, redis_client, redis_prefix
):
    path = packets_file(tmp_path, {"a1": [3, 1, 4], "a2": [1, 5]})

    done = clean_run(
        tmp_path,
        "summing",
        f"--source=file://{path}",
        f"--mongo-uri={local_stack.env['MONGODB_URI']}",
        f"--mongo-db={mongo_db.name}",
        f"--redis-url={local_stack.env['REDIS_URL']}",
        f"--redis-prefix={redis_prefix}",
        *aws_flags(local_stack),
    )

    assert "sums_completed: 2" in done.stdout
    sums = {d["_id"]: (d["sum"], d["status"]) for d in mongo_db.sums.find()}
    assert sums == {"a1": (16, "complete"), "a2": (12, "complete")}
    assert redis_client.hgetall(f"{redis_prefix}sum:a1")[b"sum"] == b"16"


def test_a_backup_from_a_clean_environment_with_every_setting_as_a_flag(
    tmp_path, local_stack, github, repo, mongo_db, redis_prefix, unique_name
):
    key_file = tmp_path / "secret.key"
    key_file.write_text(KEY + "\n")
    key_file.chmod(0o600)
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN), secret_key=KEY)
    posts = add_posts(mongo_db, "pub-clean", 3)
    dynamodb = apigateway.dynamodb_client()
    table = f"conn-{unique_name}"
    apigateway.create_connections_table(dynamodb, table)
    apigateway.register_connection(dynamodb, table, "conn-alice", "alice")
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(request("b-clean", "pub-clean") + b"\n")

    try:
        done = clean_run(
            tmp_path,
            "backup",
            f"--source=file://{requests}",
            f"--secret-key-file={key_file}",
            f"--github-api-url={github.url}",
            f"--mongo-uri={local_stack.env['MONGODB_URI']}",
            f"--mongo-db={mongo_db.name}",
            "--write-interval=0",
            "--notify=apigateway",
            f"--apigateway-endpoint={local_stack.env['AWS_ENDPOINT_URL']}",
            f"--connections-table={table}",
            *aws_flags(local_stack),
        )
    finally:
        dynamodb.delete_table(TableName=table)
        aws.close_client(dynamodb)

    stored = load_backup(mongo_db, "b-clean")
    assert (stored["status"], stored["done"], stored["total"]) == ("done", 3, 3)
    assert {i["status"] for i in load_items(mongo_db, "b-clean")} == {"committed"}
    assert {post_path(BackupPost.from_document(p)) for p in posts} <= tree_paths(repo)
    # the planned message and one per post reached alice's connection through moto
    assert "progress_messages_sent: 4" in done.stdout
    assert KEY not in done.stdout + done.stderr


def test_a_backup_to_a_remote_runner_without_a_key_file_fails_at_launch_in_one_line(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    with pytest.raises(SystemExit) as exited:
        backup.JOB.parse(
            [
                f"--source=file://{tmp_path}/r.jsonl",
                "--runner=FnApiRunner",
                "--direct_running_mode=multi_processing",
            ]
        )
    message = str(exited.value.code)
    assert message.startswith("blogflow run backup: FnApiRunner runs its workers outside")
    assert "--secret-key-file PATH" in message and "\n" not in message and KEY not in message


def _scrub(monkeypatch, **values):
    """No variable a client could read, but ``values``."""
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def test_summing_workers_read_no_environment_once_the_job_is_built(
    tmp_path, local_stack, mongo_db, redis_client, redis_prefix, monkeypatch
):
    path = packets_file(tmp_path, {"e1": [2, 2, 2]})
    pipeline = summing.JOB.pipeline(
        [
            f"--source=file://{path}",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
        ]
    )
    # a worker that read these would fail: nothing listens there
    _scrub(
        monkeypatch,
        MONGODB_URI="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300",
        REDIS_URL="redis://127.0.0.1:9/0",
    )

    pipeline.run().wait_until_finish()

    assert mongo_db.sums.find_one({"_id": "e1"})["sum"] == 12
    assert redis_client.hgetall(f"{redis_prefix}sum:e1")[b"status"] == b"complete"


def test_backup_workers_decrypt_with_the_key_resolved_at_launch_not_the_environment(
    tmp_path, local_stack, github, repo, mongo_db, redis_prefix, monkeypatch
):
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    monkeypatch.setenv("GITHUB_API_URL", github.url)
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    add_posts(mongo_db, "pub-env", 2)
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(request("b-env", "pub-env") + b"\n")
    pipeline = backup.JOB.pipeline(
        [
            f"--source=file://{requests}",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
            "--write-interval=0",
        ]
    )
    # another key, another GitHub, no stores: a worker reading them would fail every post
    _scrub(
        monkeypatch,
        BLOGFLOW_SECRET_KEY="another-key-" + "z" * 40,
        GITHUB_API_URL="http://127.0.0.1:9",
        MONGODB_URI="mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=300",
        REDIS_URL="redis://127.0.0.1:9/0",
    )

    pipeline.run().wait_until_finish()

    stored = load_backup(mongo_db, "b-env")
    assert (stored["status"], stored["done"], stored["failed"]) == ("done", 2, 0)


def test_the_pubsub_reader_reaches_the_emulator_it_was_given_not_the_environments(
    pubsub_stack, topic, subscription, monkeypatch
):
    host = pubsub_stack.env["PUBSUB_EMULATOR_HOST"]
    publish_events(topic, [make_event("user_signed_up", {}, user_id="u1").to_json()])
    p = beam.Pipeline(runner=FnApiRunner())
    records = p | "Pull" >> PullFromPubSub(subscription, max_records=1, emulator_host=host)
    ids = records | "Ids" >> beam.Map(lambda record: record.payload[:1])
    assert_that(ids, equal_to([b"{"]))
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST")  # the worker has only the DoFn's setting

    p.run().wait_until_finish()
