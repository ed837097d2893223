"""The backup pipeline end to end: requests → Beam → the GitHub stand-in, MongoDB, Redis.

Every test runs the real pipeline against the stand-in over HTTP, with its own MongoDB
database and Redis prefix; what it checks is read back from the repository, from
``backups``/``backup_items`` and from the notifier's Redis keys.
"""

import datetime as dt
import json
import os
import subprocess
import sys
import threading

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.test_stream import TestStream
from click.testing import CliRunner

from blogflow.cli import cli
from blogflow.events import SourceRecord, make_event
from blogflow.io import redis as redis_io
from blogflow.io.backups import BackupWriter, load_backup, load_items, store_publication
from blogflow.io.users import link_user
from blogflow.pipelines import backup
from blogflow.tokens import Secret
from blogflow.transforms.backups import BackupPost, post_path, render_post
from blogflow.transforms.parsing import ParseEvents
from tests.pipelines.conftest import TOKEN, client

pytestmark = pytest.mark.integration

KEY = "backup-pipeline-test-key-" + "k" * 30
OTHER_TOKEN = "ghp_backup_pipeline_other_0123456789"
UPDATED = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.timezone.utc)


@pytest.fixture(autouse=True)
def secret_key(monkeypatch):
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)


def add_posts(db, publication_id, n, *, author="alice", start=0, members=()):
    """``n`` posts of ``publication_id``, and its ``publications`` document: owned by
    ``author``, with ``members``."""
    store_publication(db, publication_id, author, members)
    docs = [
        {
            "_id": f"{publication_id}-p{i:03d}",
            "publicationId": publication_id,
            "authorId": author,
            "title": f"Post {i} of {publication_id}",
            "slug": f"post-{i}",
            "tags": ["beam", "backup"],
            "contentMarkdown": f"# Post {i}\n\nBody of post {i}.\n",
            "updatedAt": UPDATED,
        }
        for i in range(start, start + n)
    ]
    db.posts.insert_many(docs)
    return docs


def request(backup_id, publication_id, user_id="alice"):
    return make_event(
        "backup_requested",
        {"backupId": backup_id, "publicationId": publication_id},
        user_id=user_id,
    ).to_json()


def run_backup(tmp_path, github, mongo_db, redis_prefix, payloads, *extra, name="requests"):
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"".join(p + b"\n" for p in payloads))
    return backup.run(
        [
            f"--source=file://{path}",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
            f"--github-api-url={github.url}",
            "--write-interval=0",
            *extra,
        ]
    )


def writes(github, since=0):
    return [r for r in github.requests()[since:] if r["method"] in ("POST", "PATCH", "PUT")]


def tree_paths(repo):
    head = repo.get_git_commit(repo.get_git_ref(f"heads/{repo.default_branch}").object.sha)
    head = head.tree.sha
    return {e.path for e in repo.get_git_tree(head, recursive=True).tree if e.type == "blob"}


def latest_progress(redis_prefix, user_id):
    stored = redis_io.connect().hgetall(f"{redis_prefix}notifier:latest:{user_id}")
    return {k: json.loads(v) for k, v in stored.items()}


def test_a_publication_is_backed_up_in_few_commits_and_a_replay_changes_nothing(
    tmp_path, github, repo, mongo_db, redis_prefix
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    posts = add_posts(mongo_db, "pub-a", 30)
    add_posts(mongo_db, "pub-other", 3)  # not part of the backup
    before = len(github.requests())

    run_backup(tmp_path, github, mongo_db, redis_prefix, [request("b1", "pub-a")])

    made = writes(github, before)
    assert len(made) == 6  # 30 posts = 25 + 5: two commits of a tree, a commit, a ref update
    stored = load_backup(mongo_db, "b1")
    assert stored["status"] == "done" and stored["userId"] == "alice"
    assert (stored["total"], stored["done"], stored["failed"]) == (30, 30, 0)
    assert stored["finishedAt"] >= stored["startedAt"]
    items = load_items(mongo_db, "b1")
    assert [i["postId"] for i in items] == sorted(p["_id"] for p in posts)
    assert {i["status"] for i in items} == {"committed"}
    assert len({i["commitSha"] for i in items}) == 2
    first = BackupPost.from_document(posts[0])
    assert items[0]["path"] == post_path(first) == "posts/post-0-pub-a-p000.md"
    expected = {post_path(BackupPost.from_document(p)) for p in posts}
    assert expected <= tree_paths(repo) and not any("pub-other" in p for p in tree_paths(repo))
    assert repo.get_contents(post_path(first)).decoded_content == render_post(first)
    latest = latest_progress(redis_prefix, "alice")["b1"]
    assert (latest["done"], latest["total"], latest["type"]) == (30, 30, "backup_progress")

    # the same request again: nothing written, nothing stored differently
    items_before = load_items(mongo_db, "b1")
    replayed_from = len(github.requests())
    run_backup(tmp_path, github, mongo_db, redis_prefix, [request("b1", "pub-a")] * 2)
    assert writes(github, replayed_from) == []
    assert load_backup(mongo_db, "b1") == stored
    assert load_items(mongo_db, "b1") == items_before

    # a new backup of the same posts: every post unchanged, no commit
    again_from = len(github.requests())
    run_backup(tmp_path, github, mongo_db, redis_prefix, [request("b2", "pub-a")])
    assert writes(github, again_from) == []
    assert {i["status"] for i in load_items(mongo_db, "b2")} == {"unchanged"}
    assert load_backup(mongo_db, "b2")["status"] == "done"

    shown = CliRunner().invoke(cli, ["backups", "show", "b1", "--mongo-db", mongo_db.name])
    assert shown.exit_code == 0, shown.output
    assert "done, 30/30 posts backed up, 0 failed" in shown.output
    assert shown.output.count("committed") == 30
    missing = CliRunner().invoke(cli, ["backups", "show", "nope", "--mongo-db", mongo_db.name])
    assert missing.exit_code == 1 and "no backup 'nope'" in missing.output


def test_a_bad_notifier_setting_is_a_clear_error(tmp_path, github, mongo_db, redis_prefix):
    with pytest.raises(SystemExit, match="apigateway backend needs endpoint_url"):
        run_backup(tmp_path, github, mongo_db, redis_prefix, [], "--notify=apigateway")
    with pytest.raises(SystemExit, match="posts-per-commit must be positive"):
        run_backup(tmp_path, github, mongo_db, redis_prefix, [], "--posts-per-commit=0")


def test_bad_requests_and_faults_end_as_failed_backups_or_items_never_stuck(
    tmp_path, github, repo, mongo_db, redis_prefix, caplog
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    add_posts(mongo_db, "pub-a", 4, members=["erin"])
    mongo_db.posts.insert_many(
        [
            {"_id": "../../.github/evil", "publicationId": "pub-a", "title": "x", "slug": "x"},
            {
                "_id": "huge",
                "publicationId": "pub-a",
                "slug": "huge",
                "contentMarkdown": "x" * 5000,
            },
        ]
    )
    link_user(mongo_db, "carol", repo.full_name, Secret(OTHER_TOKEN))  # revoked below
    link_user(mongo_db, "dave", "dave/no-such-repo", Secret(TOKEN))
    add_posts(mongo_db, "pub-c", 2, author="carol")
    add_posts(mongo_db, "pub-d", 2, author="dave")
    github.revoke(OTHER_TOKEN)
    github.configure(fail_next=[{"status": 502}, {"status": 503}])  # GitHub down, briefly
    bad_json = b'{"id":"r1","type":"backup_requested","v":1}'
    no_user = request("b-nouser", "pub-a", user_id=None)

    run_backup(
        tmp_path,
        github,
        mongo_db,
        redis_prefix,
        [
            request("b-a", "pub-a"),
            request("b-unknown", "pub-missing"),
            request("b-unlinked", "pub-a", user_id="erin"),
            request("b-c", "pub-c", user_id="carol"),
            request("b-d", "pub-d", user_id="dave"),
            no_user,
            bad_json,
            request("b-a", "pub-a", user_id="mallory"),  # someone else's backup id
        ],
        "--max-post-bytes=2000",
    )

    a = load_backup(mongo_db, "b-a")
    assert (a["status"], a["total"], a["done"], a["failed"]) == ("failed", 6, 4, 2)
    failed = {i["postId"]: i for i in load_items(mongo_db, "b-a") if i["status"] == "failed"}
    assert "not safe" in failed["../../.github/evil"]["error"]
    assert failed["../../.github/evil"]["path"] is None
    assert "over the 2,000-byte limit" in failed["huge"]["error"]
    assert not any(".github" in path for path in tree_paths(repo))

    unknown = load_backup(mongo_db, "b-unknown")
    assert unknown["status"] == "failed" and "'pub-missing' is unknown" in unknown["error"]
    unlinked = load_backup(mongo_db, "b-unlinked")
    assert unlinked["status"] == "failed" and "no GitHub repository linked" in unlinked["error"]
    for backup_id, status in (("b-c", 401), ("b-d", 404)):
        stored = load_backup(mongo_db, backup_id)
        assert (stored["status"], stored["done"], stored["failed"]) == ("failed", 0, 2)
        errors = {i["error"] for i in load_items(mongo_db, backup_id)}
        assert len(errors) == 1 and f"answered {status}" in errors.pop()
    assert mongo_db.backup_items.count_documents({}) == 6 + 2 + 2
    assert all(b["status"] != "running" for b in mongo_db.backups.find())

    dead = list(mongo_db.deadletters.find({"pipeline": "backup"}))
    assert sorted(d["stage"] for d in dead) == ["parse", "plan", "plan"]
    reasons = sorted(d["error"] for d in dead if d["stage"] == "plan")
    assert "belongs to another user" in reasons[0] and "no userId" in reasons[1]
    assert load_backup(mongo_db, "b-a")["userId"] == "alice"
    everything = json.dumps(
        [list(mongo_db[c].find()) for c in ("backups", "backup_items")], default=str
    )
    for secret in (TOKEN, OTHER_TOKEN):
        assert secret not in everything and secret not in caplog.text

    # the cause mended, the same request resumes the failed backup: only dave's posts are written
    gh = client(github)
    fixed = gh.get_user().create_repo(f"{repo.name}-dave", auto_init=True)
    link_user(mongo_db, "dave", fixed.full_name, Secret(TOKEN))
    before = len(github.requests())
    run_backup(tmp_path, github, mongo_db, redis_prefix, [request("b-d", "pub-d", user_id="dave")])
    assert len(writes(github, before)) == 3
    resumed = load_backup(mongo_db, "b-d")
    assert (resumed["status"], resumed["done"], resumed["failed"]) == ("done", 2, 0)
    assert {i["status"] for i in load_items(mongo_db, "b-d")} == {"committed"}
    gh.close()


def test_streaming_writes_overlapping_backups_of_one_repository_one_after_another(
    github, repo, mongo_db, redis_prefix
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    one = add_posts(mongo_db, "pub-1", 12)
    two = add_posts(mongo_db, "pub-2", 9)
    records = [
        SourceRecord(request(backup_id, pub), f"msg-{backup_id}")
        for backup_id, pub in (("s1", "pub-1"), ("s2", "pub-2"), ("s1", "pub-1"))
    ]
    before = len(github.requests())
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    stream = TestStream().add_elements(records).advance_watermark_to_infinity()
    with beam.Pipeline(runner=BundleBasedDirectRunner(), options=options) as p:
        events = (p | stream | ParseEvents(accept={"backup_requested"}, event_time=False)).events
        _ = events | backup.BackUpPublications(
            streaming=True,
            mongo_uri=None,
            database=mongo_db.name,
            api_url=github.url,
            posts_per_commit=5,
            write_interval=0,
        )
    for backup_id, posts in (("s1", one), ("s2", two)):
        stored = load_backup(mongo_db, backup_id)
        assert (stored["status"], stored["done"], stored["total"]) == (
            "done",
            len(posts),
            len(posts),
        )
    paths = {post_path(BackupPost.from_document(p)) for p in one + two}
    assert paths <= tree_paths(repo)
    made = writes(github, before)
    # 3 + 2 commits; serialised, so no commit was ever rebuilt after a 422
    assert len(made) == 15 and all(r["status"] in (200, 201) for r in made)


def test_two_backup_jobs_at_once_on_one_repository_both_complete(
    tmp_path, github, repo, mongo_db, redis_prefix
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    one = add_posts(mongo_db, "pub-x", 40)
    two = add_posts(mongo_db, "pub-y", 40)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    jobs = []
    for backup_id, pub in (("x1", "pub-x"), ("y1", "pub-y")):
        path = tmp_path / f"{backup_id}.jsonl"
        path.write_bytes(request(backup_id, pub) + b"\n")
        jobs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "blogflow.pipelines.backup",
                    f"--source=file://{path}",
                    f"--mongo-db={mongo_db.name}",
                    f"--redis-prefix={redis_prefix}",
                    f"--github-api-url={github.url}",
                    "--write-interval=0",
                    "--posts-per-commit=10",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        )
    results = []

    def wait(job):
        _, err = job.communicate(timeout=180)
        results.append((job.returncode, err[-2000:]))

    threads = [threading.Thread(target=wait, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [code for code, _ in results] == [0, 0], results
    for backup_id, posts in (("x1", one), ("y1", two)):
        stored = load_backup(mongo_db, backup_id)
        assert (stored["status"], stored["done"]) == ("done", len(posts))
    paths = {post_path(BackupPost.from_document(p)) for p in one + two}
    assert paths <= tree_paths(repo)  # no commit of one job undid the other's
    updates = [r["status"] for r in github.requests() if r["method"] == "PATCH"]
    assert updates.count(200) == 8 and set(updates) <= {200, 422}  # 422: rebuilt, not lost


def test_a_job_that_stopped_after_planning_is_finished_by_backups_resume(
    tmp_path, github, repo, mongo_db, redis_prefix, sqs_queue, monkeypatch
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    add_posts(mongo_db, "pub-r", 30)
    write = BackupWriter.write

    def worker_lost(self, chunk):
        raise RuntimeError("the worker was lost")

    monkeypatch.setattr(BackupWriter, "write", worker_lost)  # the job dies after planning
    with pytest.raises(Exception, match="the worker was lost"):
        run_backup(tmp_path, github, mongo_db, redis_prefix, [request("r1", "pub-r")])
    monkeypatch.setattr(BackupWriter, "write", write)
    assert load_backup(mongo_db, "r1")["status"] == "running"

    def resume(*args):
        return CliRunner().invoke(
            cli,
            ["backups", "resume", *args, "--to", f"sqs://{sqs_queue}", "--mongo-db", mongo_db.name],
        )

    assert "0 backup(s) to resume" in resume("--idle", "3600").output  # not idle long enough
    sent = resume("--idle", "0")
    assert sent.exit_code == 0 and "backup r1 of pub-r for alice: running, 0/30" in sent.output
    assert "sent 1 request(s)" in sent.output
    backup.run(
        [
            f"--source=sqs://{sqs_queue}",
            "--drain",
            "--idle-timeout=1",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
            f"--github-api-url={github.url}",
            "--write-interval=0",
        ]
    )
    resumed = load_backup(mongo_db, "r1")
    assert (resumed["status"], resumed["done"], resumed["total"]) == ("done", 30, 30)
    assert "0 backup(s) to resume" in resume("--idle", "0").output


CAROL_TOKEN = "ghp_backup_pipeline_carol_0123456789"


def own_repo(github, unique_name, user_id, token, mongo_db):
    """A repository of ``token``'s account, linked to ``user_id``; its client."""
    gh = client(github, token)
    made = gh.get_user().create_repo(f"{unique_name}-{user_id}", auto_init=True)
    link_user(mongo_db, user_id, made.full_name, Secret(token))
    return gh, made


def test_only_the_owner_or_a_member_of_a_publication_may_back_it_up(
    tmp_path, github, repo, mongo_db, redis_prefix, unique_name
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    bob, bob_repo = own_repo(github, unique_name, "bob", OTHER_TOKEN, mongo_db)
    carol, carol_repo = own_repo(github, unique_name, "carol", CAROL_TOKEN, mongo_db)
    posts = add_posts(mongo_db, "pub-1", 3, author="alice", members=["carol"])
    # posts of a publication the platform has no document of
    mongo_db.posts.insert_one({"_id": "orphan-1", "publicationId": "pub-nodoc", "slug": "o"})
    bob_login = bob.get_user().login
    before = len(github.requests())

    run_backup(
        tmp_path,
        github,
        mongo_db,
        redis_prefix,
        [
            request("b-bob", "pub-1", user_id="bob"),
            request("b-carol", "pub-1", user_id="carol"),
            request("b-alice", "pub-1", user_id="alice"),
            request("b-nodoc", "pub-nodoc", user_id="bob"),
        ],
    )

    # the job made no request with Bob's token, and nothing reached Bob's repository
    assert [r for r in github.requests()[before:] if r["token_login"] == bob_login] == []
    assert tree_paths(bob_repo) == {"README.md"}
    refused = load_backup(mongo_db, "b-bob")
    assert (refused["status"], refused["total"], refused["done"]) == ("failed", 0, 0)
    assert refused["error"] == "user 'bob' may not back up publication 'pub-1'"
    assert load_items(mongo_db, "b-bob") == []
    bob_sees = latest_progress(redis_prefix, "bob")
    assert (bob_sees["b-bob"]["status"], bob_sees["b-bob"]["total"]) == ("failed", 0)
    assert "b-bob" not in latest_progress(redis_prefix, "alice")
    unknown = load_backup(mongo_db, "b-nodoc")
    assert unknown["status"] == "failed" and "'pub-nodoc' is unknown" in unknown["error"]
    assert load_items(mongo_db, "b-nodoc") == []

    paths = {post_path(BackupPost.from_document(p)) for p in posts}
    for backup_id, target in (("b-carol", carol_repo), ("b-alice", repo)):  # a member, the owner
        stored = load_backup(mongo_db, backup_id)
        assert (stored["status"], stored["done"], stored["total"]) == ("done", 3, 3)
        assert paths <= tree_paths(target)
    bob.close()
    carol.close()


def test_a_backup_id_reused_for_another_publication_is_dead_lettered_and_changes_nothing(
    tmp_path, github, repo, mongo_db, redis_prefix
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    add_posts(mongo_db, "pub-h1", 5)
    add_posts(mongo_db, "pub-h2", 4)
    add_posts(mongo_db, "pub-h3", 2)
    mongo_db.posts.insert_one({"_id": "bad/id", "publicationId": "pub-h1", "slug": "bad"})
    run_backup(tmp_path, github, mongo_db, redis_prefix, [request("b-h", "pub-h1")])
    run_backup(tmp_path, github, mongo_db, redis_prefix, [request("b-done", "pub-h3")])
    failed = load_backup(mongo_db, "b-h")  # failed: a resumable backup, not a replay
    assert (failed["status"], failed["total"], failed["done"], failed["failed"]) == (
        "failed",
        6,
        5,
        1,
    )
    items = load_items(mongo_db, "b-h")
    done = load_backup(mongo_db, "b-done")
    before = len(github.requests())

    run_backup(
        tmp_path,
        github,
        mongo_db,
        redis_prefix,
        [request("b-h", "pub-h2"), request("b-done", "pub-h2")],
        name="reused",
    )

    assert writes(github, before) == []
    assert load_backup(mongo_db, "b-h") == failed and load_items(mongo_db, "b-h") == items
    assert load_backup(mongo_db, "b-done") == done
    dead = sorted(
        mongo_db.deadletters.find({"pipeline": "backup", "stage": "plan"}), key=lambda d: d["error"]
    )
    assert [d["error"] for d in dead] == [
        "backup 'b-done' is of publication 'pub-h3', not 'pub-h2': a backup id names one "
        "backup; request a new id",
        "backup 'b-h' is of publication 'pub-h1', not 'pub-h2': a backup id names one "
        "backup; request a new id",
    ]
    shown = CliRunner().invoke(cli, ["backups", "show", "b-h", "--mongo-db", mongo_db.name])
    assert "of pub-h1 for alice: failed, 5/6 posts backed up, 1 failed" in shown.output


def test_plan_stage_dead_letters_keep_the_sqs_message_id_and_the_raw_bytes(
    github, repo, mongo_db, redis_prefix, sqs_client, sqs_queue
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    add_posts(mongo_db, "pub-s", 2)
    # spaced out and in an order of its own: a re-serialised event would differ
    no_user = (
        '{ "type" : "backup_requested", "id": "r-nouser", "v": 1,\n'
        '  "occurredAt": "2026-11-21T12:00:00Z", "data": {"publicationId": "pub-s", '
        '"backupId": "b-s"} }'
    )
    stolen = request("b-s", "pub-s", user_id="mallory").decode()
    sent = {
        body: sqs_client.send_message(QueueUrl=sqs_queue, MessageBody=body)["MessageId"]
        for body in (request("b-s", "pub-s").decode(), no_user, stolen)
    }
    backup.run(
        [
            f"--source=sqs://{sqs_queue}",
            "--drain",
            "--idle-timeout=1",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
            f"--github-api-url={github.url}",
            "--write-interval=0",
        ]
    )
    assert load_backup(mongo_db, "b-s")["status"] == "done"
    dead = {d["error"]: d for d in mongo_db.deadletters.find({"stage": "plan"})}
    assert len(dead) == 2
    by_reason = {
        "no userId": no_user,
        "belongs to another user": stolen,
    }
    for reason, body in by_reason.items():
        [letter] = [d for error, d in dead.items() if reason in error]
        assert letter["sourceId"] == sent[body]
        assert letter["payload"] == body and letter["payloadBytes"] == len(body.encode())


def test_backups_resume_sends_failed_backups_a_new_try_can_finish(
    tmp_path, github, repo, mongo_db, redis_prefix, sqs_queue, unique_name
):
    link_user(mongo_db, "alice", repo.full_name, Secret(TOKEN))
    add_posts(mongo_db, "pub-t", 4)
    add_posts(mongo_db, "pub-z", 2)
    add_posts(mongo_db, "pub-bob", 2, author="bob")
    carol, _ = own_repo(github, unique_name, "carol", CAROL_TOKEN, mongo_db)
    add_posts(mongo_db, "pub-c", 2, author="carol")
    github.revoke(CAROL_TOKEN)
    # throttled for longer than the writer waits: alice's first commit fails, retryable
    github.configure(
        fail_next=[
            {
                "status": 403,
                "method": "POST",
                "path": "/git/trees$",
                "message": "You have exceeded a secondary rate limit.",
                "headers": {"retry-after": "3600"},
            }
        ]
    )
    run_backup(
        tmp_path,
        github,
        mongo_db,
        redis_prefix,
        [
            request("t1", "pub-t"),  # GitHub throttled it: a new try may finish it
            request("z1", "pub-z"),  # done
            request("bob1", "pub-bob"),  # refused as a whole: not bob's publication's member
            request("c1", "pub-c", user_id="carol"),  # revoked token: needs carol to relink
        ],
        "--posts-per-commit=4",
    )
    assert github.pending_faults() == []
    states = {b: load_backup(mongo_db, b)["status"] for b in ("t1", "z1", "bob1", "c1")}
    assert states == {"t1": "failed", "z1": "done", "bob1": "failed", "c1": "failed"}
    failed_items = {i["postId"]: i for i in load_items(mongo_db, "t1")}
    assert all(i["retryable"] for i in failed_items.values()) and len(failed_items) == 4
    assert not any(i["retryable"] for i in load_items(mongo_db, "c1"))

    resumed = CliRunner().invoke(
        cli,
        ["backups", "resume", "--to", f"sqs://{sqs_queue}", "--mongo-db", mongo_db.name],
    )  # the default --idle of 600 s: failed backups are sent at once all the same
    assert resumed.exit_code == 0, resumed.output
    assert "backup t1 of pub-t for alice: failed, 0/4 done, 4 failed" in resumed.output
    assert "sent 1 request(s)" in resumed.output
    # (by the line: the queue's random name may hold "c1")
    assert "backup bob1 " not in resumed.output and "backup c1 " not in resumed.output

    before = len(github.requests())
    backup.run(
        [
            f"--source=sqs://{sqs_queue}",
            "--drain",
            "--idle-timeout=1",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
            f"--github-api-url={github.url}",
            "--write-interval=0",
        ]
    )
    assert len(writes(github, before)) == 3  # one commit: the four posts
    finished = load_backup(mongo_db, "t1")
    assert (finished["status"], finished["done"], finished["failed"]) == ("done", 4, 0)
    again = CliRunner().invoke(
        cli,
        ["backups", "resume", "--to", f"sqs://{sqs_queue}", "--mongo-db", mongo_db.name],
    )
    assert "0 backup(s) to resume; nothing sent" in again.output
    carol.close()
