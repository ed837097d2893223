"""Every pipeline on Flink, offline: on Flink's embedded cluster (``[local]``) and on a
standalone cluster of ``blogflow.local`` (a JobManager and a 2-slot TaskManager), at
parallelism 2, each giving what FnApiRunner stores for the same input.

Summing from ``file://`` (batch) and streaming from ``sqs://`` by two readers (each sum is
stored while the job runs); the feed back-filled from ``file://`` and drained from
``kinesis://``; backup streaming from ``sqs://`` (checkpointed: the queue empties while the
job runs, which only finalized bundles do). On the cluster also: its TaskManager killed with
SIGKILL mid-stream and restarted, and a backup by SDK harnesses in a clean environment (a
Beam worker pool, ``EXTERNAL``) that get every setting as an option.

Each test starts a Flink job server (and a cluster) of its own for its jobs
(``--job_endpoint``); its results are its own database, prefix, queue or stream.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from blogflow.io import kinesis, sqs
from blogflow.io.backups import load_backup, load_items
from blogflow.io.users import link_user
from blogflow.local.stack import FLINK_SERVICES, FLINK_SLOTS, LocalStack
from blogflow.pipelines import backup, feed, summing
from blogflow.runners import flink
from blogflow.runners.profiles import cancel_job
from blogflow.tokens import Secret
from blogflow.transforms.backups import BackupPost, post_path
from tests.faults.test_feed_faults import (
    AS_OF,
    assert_same_feeds,
    feeds_under,
    site_events,
    with_far_copies,
)
from tests.pipelines.conftest import TOKEN, client
from tests.pipelines.test_backup import KEY, add_posts, request, tree_paths
from tests.pipelines.test_summing import packets, queue_is_empty, stored
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

#: Longest a test waits for a result of a running job (a Flink job takes ~10 s to start).
DEADLINE = 90.0


def rest(master: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{master}{path}", timeout=5) as answer:  # noqa: S310
        return json.load(answer)


@pytest.fixture
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """A standalone Flink cluster of this test's own, its TaskManager registered.

    One per test, as a streaming deployment runs one job per cluster: on a cluster that
    ran a few jobs before, Beam 2.62's job server leaves its vendored netty threads behind
    in each finished job's class loader, which Flink has closed, and a new streaming job
    there stalls (README, Flink)."""
    state = tmp_path_factory.mktemp("flink-cluster")
    with LocalStack(state_dir=state, services=FLINK_SERVICES) as stack:
        master = stack.env["FLINK_MASTER"]
        wait_for(
            lambda: rest(master, "/overview")["slots-total"] == FLINK_SLOTS,
            60,
            "the TaskManager to register",
        )
        yield stack


@pytest.fixture
def job_servers() -> Iterator[dict[str, str]]:
    """``{master: job endpoint}``: a Flink job server per master, started on first use and
    stopped after the test. Of the test's own: a job cancelled on Flink's embedded cluster
    goes on inside its job server (Beam's job server stops only its client), so only
    stopping that server ends it."""
    with contextlib.ExitStack() as stack:

        class Servers(dict):
            def __missing__(self, master: str) -> str:
                self[master] = stack.enter_context(flink.job_server(master))
                return self[master]

        yield Servers()


@pytest.fixture(params=["embedded", "cluster"])
def master(request: pytest.FixtureRequest) -> str:
    """Where the job runs: Flink's embedded cluster, or the standalone one."""
    if request.param == "embedded":
        return "[local]"
    return request.getfixturevalue("cluster").env["FLINK_MASTER"]


def flink_flags(master: str, job_servers: dict[str, str]) -> list[str]:
    """The flags that run a job on ``master`` at parallelism 2."""
    return [
        "--runner=flink",
        f"--flink-master={master}",
        f"--job_endpoint={job_servers[master]}",
        "--parallelism=2",
    ]


@pytest.fixture
def on_flink(master: str, job_servers: dict[str, str]) -> list[str]:
    """The flags that run a job on ``master`` (each of the two) at parallelism 2."""
    return flink_flags(master, job_servers)


def counters(result: PipelineResult) -> dict[str, int]:
    found = result.metrics().query()["counters"]
    return {
        f"{c.key.metric.namespace}:{c.key.metric.name}": c.committed or c.attempted
        for c in found
        if c.key.metric.namespace.startswith("blogflow")
    }


@pytest.fixture
def running() -> Iterator[Any]:
    """``running(job, argv)`` starts a streaming job and returns its result; every job
    started is cancelled after the test, on the cluster too."""
    started: list[tuple[PipelineResult, Any]] = []

    def start(job: Any, argv: list[str]) -> PipelineResult:
        result = job.start(argv)
        started.append((result, job.parse(argv)))
        assert result.state in (PipelineState.STARTING, PipelineState.RUNNING)
        return result

    yield start
    for result, options in started:
        cancel_job(result, options)
        wait_for(lambda r=result: PipelineState.is_terminal(r.state), 60, "the job to stop")
        master = options.view_as(FlinkRunnerOptions).flink_master
        if master != "[local]":  # on the cluster, the job itself is cancelled too
            wait_for(
                lambda m=master: all(
                    j["state"] != "RUNNING" for j in rest(m, "/jobs/overview")["jobs"]
                ),
                60,
                "no job to run on the cluster",
            )


def summing_archive(tmp_path: Path) -> tuple[str, dict[str, tuple[int, int]]]:
    """Two arrays' packets, some twice, and a line that is no event, in two files; and
    each array's ``(sum, packets)``."""
    first, a = packets(list(range(1, 151)))
    second, b = packets([2**31 - 1, 2**31 - 2, -5])
    (tmp_path / "one.jsonl").write_bytes(b"\n".join(a[:100] + b) + b"\n")
    (tmp_path / "two.jsonl").write_bytes(b"\n".join(a[100:] + a[:20] + [b"{not json"]) + b"\n")
    expected = {first: (2 * sum(range(1, 151)), 150), second: (2 * (2**32 - 8), 3)}
    return f"file://{tmp_path}/*.jsonl", expected


def test_summing_from_files_stores_what_fnapi_stores(
    tmp_path, on_flink, mongo_db, mongo_client, redis_prefix
):
    source, sums = summing_archive(tmp_path)
    expected_db = mongo_client[f"{mongo_db.name}-fnapi"]
    common = [f"--source={source}", f"--redis-prefix={redis_prefix}"]
    on_fnapi = summing.run([*common, f"--mongo-db={expected_db.name}"])
    on_flink_result = summing.run([*common, f"--mongo-db={mongo_db.name}", *on_flink])
    assert on_flink_result.state == PipelineState.DONE
    fields = ("sum", "status", "packetsSeen", "arrayLength")
    for array_id, (total, count) in sums.items():
        got, want = stored(mongo_db, array_id), stored(expected_db, array_id)
        assert (got["sum"], got["status"], got["packetsSeen"]) == (total, "complete", count)
        assert {k: got[k] for k in fields} == {k: want[k] for k in fields}
    assert (
        mongo_db.deadletters.count_documents({}) == expected_db.deadletters.count_documents({}) == 1
    )
    # two workers may merge into one array's sum at once: the guard retries, and counts it
    races = "blogflow:sum_write_races"
    assert {k: v for k, v in counters(on_flink_result).items() if k != races} == counters(on_fnapi)
    mongo_client.drop_database(expected_db.name)


@pytest.fixture(scope="module")
def distinct() -> list[bytes]:
    return [e.to_json() for e in site_events(posts=10, users=20, engagement=100)]


@pytest.fixture
def backfilled(distinct, tmp_path, mongo_db, redis_prefix) -> Any:
    """The feeds FnApiRunner back-fills from the distinct events."""
    archive = tmp_path / "distinct.jsonl"
    archive.write_bytes(b"\n".join(distinct) + b"\n")
    prefix = f"{redis_prefix}fnapi:"
    feed.run(feed_args(f"file://{archive}", mongo_db, prefix))
    return feeds_under(prefix)


def feed_args(source: str, mongo_db: Any, prefix: str) -> list[str]:
    return [
        f"--source={source}",
        f"--as-of={AS_OF.isoformat()}",
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={prefix}",
    ]


@pytest.mark.parametrize("route", ["file", "kinesis"])
def test_the_feed_back_filled_and_drained_gives_fnapis_feeds(
    route,
    distinct,
    backfilled,
    on_flink,
    tmp_path,
    mongo_db,
    redis_prefix,
    kinesis_client,
    unique_name,
):
    deliveries = with_far_copies(distinct)  # shuffled, most events twice
    if route == "file":
        archive = tmp_path / "deliveries.jsonl"
        archive.write_bytes(b"\n".join(deliveries) + b"\n")
        source, bound = f"file://{archive}", []
    else:
        kinesis.create_stream(unique_name, shard_count=2)
        assert kinesis.put_records(unique_name, deliveries) == len(deliveries)
        source, bound = f"kinesis://{unique_name}", ["--drain", "--idle-timeout=3"]
    prefix = f"{redis_prefix}flink:"
    try:
        result = feed.run([*feed_args(source, mongo_db, prefix), *bound, *on_flink])
    finally:
        if route == "kinesis":
            kinesis_client.delete_stream(StreamName=unique_name, EnforceConsumerDeletion=True)
    assert result.state == PipelineState.DONE
    assert len(backfilled) >= 20
    assert_same_feeds(feeds_under(prefix), backfilled)


@pytest.fixture
def queue(local_stack, sqs_client, unique_name) -> Iterator[str]:
    url = sqs.create_queue(unique_name, visibility_timeout=10)
    yield url
    sqs_client.delete_queue(QueueUrl=url)


def summing_flags(queue: str, mongo_db: Any, redis_prefix: str, on_flink: list[str]) -> list[str]:
    return [
        f"--source=sqs://{queue}",
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={redis_prefix}",
        *on_flink,
    ]


def test_a_batch_drain_of_sqs_deletes_its_messages_once_their_sums_are_stored(
    sqs_client, unique_name, on_flink, mongo_db, mongo_client, redis_prefix
):
    """Flink finalizes no bundle of a batch job: the messages are deleted after the writes
    (blogflow.io.sqs.DeleteWhenStored), and the sums are FnApiRunner's."""
    url = sqs.create_queue(unique_name, visibility_timeout=120)  # outlasts the job
    try:
        first, a = packets(list(range(1, 51)))
        second, b = packets([2**31 - 1, -7])
        sqs.send_messages(url, [*a, *b, *a[:5], b"{not json"])
        drain = ["--drain", "--idle-timeout=2"]
        result = summing.run([*summing_flags(url, mongo_db, redis_prefix, on_flink), *drain])
        assert result.state == PipelineState.DONE
        assert queue_is_empty(sqs_client, url)
        sqs.send_messages(url, [*a, *b, *a[:5], b"{not json"])
        expected_db = mongo_client[f"{mongo_db.name}-fnapi"]
        summing.run([*summing_flags(url, expected_db, redis_prefix, []), *drain])
        for array_id, (total, count) in {
            first: (2 * 1275, 50),
            second: (2 * 2**31 - 16, 2),
        }.items():
            got, want = stored(mongo_db, array_id), stored(expected_db, array_id)
            assert (got["sum"], got["status"], got["packetsSeen"]) == (total, "complete", count)
            assert got["sum"] == want["sum"]
        assert mongo_db.deadletters.count_documents({}) == 1
        assert counters(result)["blogflow.io.sqs:messages_deleted"] == len(a) + len(b) + 6
        mongo_client.drop_database(expected_db.name)
    finally:
        sqs_client.delete_queue(QueueUrl=url)


def test_summing_streams_from_sqs_and_each_sum_appears_while_the_job_runs(
    queue, sqs_client, on_flink, mongo_db, redis_prefix, running
):
    first, a = packets(list(range(1, 101)))
    second, b = packets([2**31 - 1, 2**31 - 2, -5])
    flags = [*summing_flags(queue, mongo_db, redis_prefix, on_flink), "--sqs-readers=2"]
    job = running(summing.JOB, flags)
    sqs.send_messages(queue, a[:60] + b)
    wait_for(lambda: stored(mongo_db, second).get("status") == "complete", DEADLINE, "a sum")
    assert stored(mongo_db, second)["sum"] == 2 * (2**32 - 8)
    assert stored(mongo_db, first).get("status") != "complete"  # 40 of its packets unsent
    sqs.send_messages(queue, a[60:] + a[:10])  # the rest, and ten packets again
    wait_for(lambda: stored(mongo_db, first).get("status") == "complete", DEADLINE, "the sum")
    got = stored(mongo_db, first)
    assert (got["sum"], got["packetsSeen"]) == (2 * sum(range(1, 101)), 100)
    # every message's bundle was finalized after a checkpoint, while the job runs: deleted
    wait_for(lambda: queue_is_empty(sqs_client, queue), 60, "the queue to empty")
    assert job.state == PipelineState.RUNNING


def test_a_taskmanager_killed_mid_stream_neither_loses_nor_doubles_a_packet(
    cluster, job_servers, queue, sqs_client, mongo_db, redis_prefix, running
):
    """kill -9 of the TaskManager while the job sums, then its restart: Flink restores the
    job from its last checkpoint, the queue redelivers what no finalized bundle deleted,
    and MongoDB's guard counts each packet once."""
    master = cluster.env["FLINK_MASTER"]
    on_cluster = flink_flags(master, job_servers)
    values = [[(k * 37 + i) % 1000 - 300 for i in range(40)] for k in range(12)]
    arrays = {array_id: (batch, v) for v in values for array_id, batch in [packets(v)]}
    messages = [m for batch, _ in arrays.values() for m in batch]
    half = len(messages) // 2
    running(summing.JOB, summing_flags(queue, mongo_db, redis_prefix, on_cluster))
    sqs.send_messages(queue, messages[:half])
    wait_for(lambda: mongo_db.sums.count_documents({}) > 0, DEADLINE, "the first merges")
    cluster.kill("flink-taskmanager")
    sqs.send_messages(queue, messages[half:])
    cluster.restart("flink-taskmanager")
    wait_for(
        lambda: mongo_db.sums.count_documents({"status": "complete"}) == len(arrays),
        3 * DEADLINE,
        "every array to complete after the restart",
    )
    for array_id, (_, array) in arrays.items():
        got = stored(mongo_db, array_id)
        assert (got["sum"], got["packetsSeen"]) == (2 * sum(array), len(array))
    wait_for(lambda: queue_is_empty(sqs_client, queue), 60, "the queue to empty")
    (job,) = [j for j in rest(master, "/jobs/overview")["jobs"] if j["state"] == "RUNNING"]
    # the same job: the TaskManager's loss failed its tasks, which Flink restored
    failures = rest(master, f"/jobs/{job['jid']}/exceptions")["exceptionHistory"]["entries"]
    assert failures, "the job ran on as if no TaskManager had died"


def test_backup_streams_from_sqs_and_stores_what_fnapi_stores(
    queue,
    sqs_client,
    on_flink,
    tmp_path,
    github,
    repo,
    mongo_db,
    mongo_client,
    redis_prefix,
    running,
    unique_name,
):
    key_file = tmp_path / "secret-key"
    key_file.write_text(KEY)
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN), secret_key=KEY)
    add_posts(mongo_db, "pub-f", 12)
    common = [
        f"--redis-prefix={redis_prefix}",
        f"--github-api-url={github.url}",
        "--write-interval=0",
        "--posts-per-commit=5",
        f"--secret-key-file={key_file}",
    ]
    job = running(
        backup.JOB, [f"--source=sqs://{queue}", f"--mongo-db={mongo_db.name}", *common, *on_flink]
    )
    sqs.send_messages(queue, [request("b-flink", "pub-f")])
    wait_for(
        lambda: (load_backup(mongo_db, "b-flink") or {}).get("status") == "done",
        DEADLINE,
        "the backup on Flink",
    )
    # the request's bundle was finalized after a checkpoint, while the job runs: deleted
    wait_for(lambda: queue_is_empty(sqs_client, queue), 60, "the queue to empty")
    assert job.state == PipelineState.RUNNING
    # the same request on FnApiRunner, into a repository and database of its own
    theirs = client(github).get_user().create_repo(f"{unique_name}-fnapi", auto_init=True)
    expected_db = mongo_client[f"{mongo_db.name}-fnapi"]
    link_user(expected_db, "alice", theirs.full_name, Secret(TOKEN), secret_key=KEY)
    add_posts(expected_db, "pub-f", 12)
    archive = tmp_path / "request.jsonl"
    archive.write_bytes(request("b-flink", "pub-f") + b"\n")
    backup.run([f"--source=file://{archive}", f"--mongo-db={expected_db.name}", *common])

    def outcome(db: Any) -> tuple[Any, ...]:
        done = load_backup(db, "b-flink")
        items = [(i["postId"], i["status"], i["path"]) for i in load_items(db, "b-flink")]
        return done["status"], done["done"], done["total"], done["failed"], items

    assert outcome(mongo_db) == outcome(expected_db)
    assert outcome(mongo_db)[:4] == ("done", 12, 12, 0)
    assert tree_paths(repo) == tree_paths(theirs)
    mongo_client.drop_database(expected_db.name)


def test_workers_in_a_clean_environment_back_up_with_the_options_alone(
    cluster, job_servers, queue, tmp_path, github, repo, mongo_db, redis_prefix, running
):
    """The SDK harnesses are processes of a Beam worker pool whose environment holds only
    PATH and HOME: no BLOGFLOW_SECRET_KEY, no AWS_*, no MONGODB_URI or REDIS_URL. Every
    setting reaches them as an option, the AWS keys and the secret key's path included."""
    master = cluster.env["FLINK_MASTER"]
    key_file = tmp_path / "secret-key"
    key_file.write_text(KEY)
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN), secret_key=KEY)
    posts = add_posts(mongo_db, "pub-clean", 7)
    home = tmp_path / "home"
    home.mkdir()
    with flink.worker_pool(env={"PATH": "/usr/bin:/bin", "HOME": str(home)}) as pool:
        job = running(
            backup.JOB,
            [
                f"--source=sqs://{queue}",
                f"--mongo-db={mongo_db.name}",
                f"--redis-prefix={redis_prefix}",
                f"--github-api-url={github.url}",
                "--write-interval=0",
                f"--secret-key-file={key_file}",
                "--aws-access-key-id=testing",
                "--aws-secret-access-key=testing",
                "--runner=flink",
                f"--flink-master={master}",
                f"--job_endpoint={job_servers[master]}",
                "--environment_type=EXTERNAL",
                f"--environment_config={pool}",
            ],
        )
        sqs.send_messages(queue, [request("b-clean", "pub-clean")])
        wait_for(
            lambda: (load_backup(mongo_db, "b-clean") or {}).get("status") == "done",
            DEADLINE,
            "the backup by workers in a clean environment",
        )
        assert job.state == PipelineState.RUNNING
        done = load_backup(mongo_db, "b-clean")
        assert (done["done"], done["total"], done["failed"]) == (7, 7, 0)
        assert {post_path(BackupPost.from_document(p)) for p in posts} <= tree_paths(repo)
