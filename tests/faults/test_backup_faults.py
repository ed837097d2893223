"""The backup pipeline under GitHub faults and a kill -9: every post committed exactly once.

The GitHub stand-in injects the answers GitHub gives under trouble — 5xx, 409 Conflict,
422 (a tree it cannot build, a ref update that is not a fast forward), secondary rate
limits (403 with ``retry-after``, 403 with ``x-ratelimit-reset``, 429) and answers lost
after the write happened — aimed at the steps of a commit. A backup job is also killed
with SIGKILL while it commits, then ``blogflow backups resume`` and a second run finish it.

"Exactly once" is read back from the repository: walking the branch's history from the
first commit, every post's file appears in exactly one commit (the one its item names,
unless a killed job made it before recording it) and never changes after; the head's tree
holds every post and nothing else; ``backup_items`` holds one item per post.
"""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from click.testing import CliRunner
from github import Auth, Github

from blogflow.cli import cli
from blogflow.events import make_event
from blogflow.io.backups import load_backup, load_items, store_publication
from blogflow.io.users import link_user
from blogflow.local.github import GitHubStandIn
from blogflow.pipelines import backup
from blogflow.tokens import Secret
from blogflow.transforms.backups import BackupPost, git_blob_sha, post_path, render_post
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "backup-fault-test-key-" + "k" * 30
TOKEN = "ghp_backup_fault_token_0123456789"
USER = "alice"


@pytest.fixture(autouse=True)
def secret_key(monkeypatch):
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)


@pytest.fixture
def github():
    with GitHubStandIn() as server:
        yield server


@pytest.fixture
def repo(github, unique_name, mongo_db):
    gh = Github(
        auth=Auth.Token(TOKEN),
        base_url=github.url,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    created = gh.get_user().create_repo(unique_name, auto_init=True)
    link_user(mongo_db, USER, created.full_name, Secret(TOKEN))
    yield created
    gh.close()


def add_publication(db, publication_id, n):
    """A publication of ``USER`` with ``n`` posts; the files they must become."""
    store_publication(db, publication_id, USER)
    docs = [
        {
            "_id": f"{publication_id}-p{i:03d}",
            "publicationId": publication_id,
            "authorId": USER,
            "title": f"Post {i}",
            "slug": f"post-{i}",
            "contentMarkdown": f"# Post {i}\n\nOf {publication_id}.\n",
        }
        for i in range(n)
    ]
    db.posts.insert_many(docs)
    posts = [BackupPost.from_document(doc) for doc in docs]
    return {post_path(p): git_blob_sha(render_post(p)) for p in posts}


def request(backup_id, publication_id):
    return make_event(
        "backup_requested", {"backupId": backup_id, "publicationId": publication_id}, user_id=USER
    ).to_json()


def job_args(github, mongo_db, redis_prefix, *extra):
    return [
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={redis_prefix}",
        f"--github-api-url={github.url}",
        *extra,
    ]


def history(repo):
    """The branch's commits, oldest first: ``(sha, {path: blob sha})`` each."""
    commits = []
    sha = repo.get_git_ref(f"heads/{repo.default_branch}").object.sha
    while sha:
        commit = repo.get_git_commit(sha)
        tree = repo.get_git_tree(commit.tree.sha, recursive=True)
        commits.append((sha, {e.path: e.sha for e in tree.tree if e.type == "blob"}))
        sha = commit.parents[0].sha if commit.parents else None
        assert len(commit.parents) <= 1 and len(commits) < 200  # linear, bounded
    return commits[::-1]


def assert_committed_exactly_once(repo, files, commits_expected=None):
    """Every file of ``files`` (path → blob sha) was added by exactly one commit of the
    branch and never changed after; the head holds them and the initial README only.
    Returns ``{path: sha of the commit that added it}``."""
    commits = history(repo)
    added: dict[str, list[str]] = {}
    for (_, before), (sha, after) in zip(commits, commits[1:], strict=False):
        changed = {p for p in after if before.get(p) != after[p]}
        assert set(before) <= set(after), f"commit {sha} removed files"
        assert changed, f"commit {sha} changed nothing"
        for path in changed:
            added.setdefault(path, []).append(sha)
    assert {p: len(shas) for p, shas in added.items()} == dict.fromkeys(files, 1)
    head = commits[-1][1]
    assert head == {"README.md": commits[0][1]["README.md"], **files}
    if commits_expected is not None:
        assert len(commits) - 1 == commits_expected
    return {path: shas[0] for path, shas in added.items()}


def test_github_faults_during_a_backup_leave_every_post_committed_exactly_once(
    tmp_path, github, repo, mongo_db, redis_prefix, sqs_queue
):
    files = add_publication(mongo_db, "pub-f", 60)  # 6 commits of 10
    soon = str(int(time.time()) + 1)
    trees, commits, refs = "/git/trees$", "/git/commits$", "/git/refs/"
    # Per route, a fault's "skip" counts the requests it lets pass once the faults
    # before it (of that route) are used up: spread over the backup's six commits.
    faults = [
        # 5xx, retried as the same request
        {"status": 502, "method": "GET", "path": "/git/ref/"},
        {"status": 503, "method": "POST", "path": trees, "skip": 1},
        {"status": 500, "method": "POST", "path": commits, "skip": 1},
        # conflicts: the commit is rebuilt on the current head
        {"status": 422, "method": "POST", "path": trees, "message": "BadObjectState"},
        {"status": 409, "method": "POST", "path": commits, "skip": 1, "message": "Conflict"},
        {"status": 409, "method": "PATCH", "path": refs, "skip": 1, "message": "Conflict"},
        {
            "status": 422,
            "method": "PATCH",
            "path": refs,
            "skip": 1,
            "message": "not a fast forward",
        },
        # secondary rate limits, waited out
        {
            "status": 403,
            "method": "POST",
            "path": trees,
            "skip": 1,
            "message": "You have exceeded a secondary rate limit.",
            "headers": {"retry-after": "1"},
        },
        {
            "status": 429,
            "method": "POST",
            "path": commits,
            "skip": 1,
            "headers": {"retry-after": "0"},
        },
        {
            "status": 403,
            "method": "GET",
            "path": "/git/trees/",
            "skip": 2,
            "message": "API rate limit exceeded",
            "headers": {"x-ratelimit-remaining": "0", "x-ratelimit-reset": soon},
        },
        # the write happened, its answer was lost
        {"status": 502, "method": "PATCH", "path": refs, "skip": 1, "after": True},
        {"status": 504, "method": "POST", "path": commits, "after": True},
    ]
    github.configure(fail_next=faults)
    path = tmp_path / "requests.jsonl"
    path.write_bytes(request("bf", "pub-f") + b"\n")
    started = time.monotonic()

    backup.run(
        job_args(
            github,
            mongo_db,
            redis_prefix,
            f"--source=file://{path}",
            "--write-interval=0",
            "--posts-per-commit=10",
        )
    )

    took = time.monotonic() - started
    assert github.pending_faults() == []  # every fault met a request
    refused = [r["status"] for r in github.requests() if r["status"] >= 400]
    assert sorted(refused) == sorted(f["status"] for f in faults)
    stored = load_backup(mongo_db, "bf")
    assert (stored["status"], stored["done"], stored["failed"], stored["total"]) == (
        "done",
        60,
        0,
        60,
    )
    items = load_items(mongo_db, "bf")
    assert len(items) == 60 and {i["status"] for i in items} == {"committed"}
    added_by = assert_committed_exactly_once(repo, files, commits_expected=6)
    assert {i["path"]: i["commitSha"] for i in items} == added_by
    assert took < 40, took

    # GitHub refuses every build of one commit: its posts fail with the reason, and
    # `backups resume` + a run write them, once
    more = add_publication(mongo_db, "pub-g", 15)  # commits of 10 and 5
    github.configure(fail_next=[{"status": 422, "method": "POST", "path": trees}] * 5)
    path.write_bytes(request("bg", "pub-g") + b"\n")
    backup.run(
        job_args(
            github,
            mongo_db,
            redis_prefix,
            f"--source=file://{path}",
            "--write-interval=0",
            "--posts-per-commit=10",
        )
    )
    failed = load_backup(mongo_db, "bg")
    assert (failed["status"], failed["done"], failed["failed"]) == ("failed", 5, 10)
    errors = {i["error"] for i in load_items(mongo_db, "bg") if i["status"] == "failed"}
    assert len(errors) == 1
    assert "refused the commit 5 time(s)" in (error := errors.pop()) and "422" in error
    assert TOKEN not in error
    resumed = CliRunner().invoke(
        cli, ["backups", "resume", "--to", f"sqs://{sqs_queue}", "--mongo-db", mongo_db.name]
    )
    assert "sent 1 request(s)" in resumed.output, resumed.output
    backup.run(
        job_args(
            github,
            mongo_db,
            redis_prefix,
            f"--source=sqs://{sqs_queue}",
            "--drain",
            "--idle-timeout=1",
            "--write-interval=0",
        )
    )
    finished = load_backup(mongo_db, "bg")
    assert (finished["status"], finished["done"], finished["failed"]) == ("done", 15, 0)
    assert len(load_items(mongo_db, "bg")) == 15
    assert_committed_exactly_once(repo, {**files, **more}, commits_expected=6 + 2)


def test_a_backup_job_killed_mid_backup_is_finished_by_resume_and_a_rerun(
    tmp_path, github, repo, mongo_db, redis_prefix, sqs_client, sqs_queue
):
    files = add_publication(mongo_db, "pub-k", 48)  # 12 commits of 4
    sqs_client.send_message(QueueUrl=sqs_queue, MessageBody=request("bk", "pub-k").decode())
    common = job_args(
        github,
        mongo_db,
        redis_prefix,
        f"--source=sqs://{sqs_queue}",
        "--drain",
        "--idle-timeout=1",
        "--posts-per-commit=4",
    )
    log = tmp_path / "killed-job.log"
    with log.open("wb") as stderr:
        job = subprocess.Popen(
            # ~0.3 s a commit: the job is still committing when it is killed
            [sys.executable, "-m", "blogflow.pipelines.backup", *common, "--write-interval=0.1"],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:

        def committing():
            assert job.poll() is None, log.read_text()[-2000:]
            return mongo_db.backup_items.count_documents({"backupId": "bk"}) >= 8

        wait_for(committing, 90, "the job committed two chunks")
        children = psutil.Process(job.pid).children(recursive=True)
        os.kill(job.pid, signal.SIGKILL)
        for child in children:  # any worker it started goes with it
            if child.is_running():
                child.kill()
        assert job.wait(timeout=10) == -signal.SIGKILL
    finally:
        if job.poll() is None:
            job.kill()
            job.wait(timeout=10)
    at_kill = mongo_db.backup_items.count_documents({"backupId": "bk"})
    assert 8 <= at_kill < 48, at_kill  # killed mid-backup
    assert load_backup(mongo_db, "bk")["status"] == "running"

    resumed = CliRunner().invoke(
        cli,
        [
            "backups",
            "resume",
            "--to",
            f"sqs://{sqs_queue}",
            "--idle",
            "0",
            "--mongo-db",
            mongo_db.name,
        ],
    )
    assert resumed.exit_code == 0 and "sent 1 request(s)" in resumed.output, resumed.output
    backup.run([*common, "--write-interval=0"])

    stored = load_backup(mongo_db, "bk")
    assert (stored["status"], stored["done"], stored["failed"], stored["total"]) == (
        "done",
        48,
        0,
        48,
    )
    items = load_items(mongo_db, "bk")
    assert len(items) == 48 == mongo_db.backup_items.count_documents({"backupId": "bk"})
    assert {i["status"] for i in items} <= {"committed", "unchanged"}
    added_by = assert_committed_exactly_once(repo, files, commits_expected=12)
    for item in items:  # a committed item names the commit that added its file
        if item["status"] == "committed":
            assert item["commitSha"] == added_by[item["path"]]
