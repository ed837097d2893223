"""Benchmark: GitHub content-creating requests per post of a 500-post backup.

GitHub asks for at least one second between content-creating requests (POST, PATCH, PUT,
DELETE) of one user and allows 80 a minute and 500 an hour. The original design made one
commit per post with the contents API (one PUT each): >= 1 request per post, so <= 500
posts an hour. Measured side by side against the GitHub stand-in of ``blogflow.local``
(run as its own process, with MongoDB and Redis, by ``LocalStack``):

- (a) one commit per post: PyGithub ``repo.create_file`` for each of the 500 posts, to a
  fresh repository. The stand-in's secondary rate limit is lifted for this side alone
  (at 80 a minute it would spend ~6 min waiting);
- (b) the backup pipeline (``python -m blogflow.pipelines.backup``, FnApiRunner, one
  process per job, ``--write-interval 0``: the stand-in is local) on a
  ``backup_requested`` event for a publication of the same 500 posts, to a fresh
  repository: once at the pipeline's default of 25 posts per commit, once at
  ``--posts-per-commit`` (100). Both run under the stand-in's default limit of 80 a
  minute. A commit costs 3 content-creating requests (tree, commit, ref update), so 25
  posts per commit give 0.12 per post and the goal of 0.05 needs >= 60;
- (c) two overlapping backups of one repository: two publications of one user
  (``--overlap-posts`` each), backed up into the same repository at the same time by two
  pipeline processes; a commit that lost the race answers 422 and is rebuilt.

Each side's requests are counted from the stand-in's request log (by repository path),
and every post is checked in the repository's final tree: its file at ``post_path`` with
the blob sha of ``render_post``. Backups must end ``done`` with ``done == total`` in
MongoDB ``backups``. A lost post or an incomplete backup exits 1, after the JSON line.
Wall times are measured unpaced; ``paced_s`` is what GitHub's one second per
content-creating request would add, ``posts_per_hour_cap`` what its 500 an hour allow.

The last line is one JSON object: ``{"name": "backup_requests", "writes_per_post",
"writes_per_post_default", "ratio_vs_one_commit_per_post", "lost_posts",
"overlap_both_complete", "overlap_lost_posts", "overlap_rebuilds_422", ...}``.

    python benchmarks/backup_requests.py [--posts 500] [--posts-per-commit 100]
        [--overlap-posts 500] [--timeout 600]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymongo
from github import Auth, Github

from blogflow.events import make_event
from blogflow.io import redis as redis_io
from blogflow.io.backups import load_backup, load_items, store_publication
from blogflow.io.users import link_user
from blogflow.local import LocalStack
from blogflow.local.github import DEFAULT_RATE_LIMIT_PER_MINUTE
from blogflow.tokens import SECRET_KEY_VARIABLE, Secret
from blogflow.transforms.backups import BackupPost, git_blob_sha, post_path, render_post

CONTENT_CREATING = frozenset({"POST", "PATCH", "PUT", "DELETE"})
SECONDS_PER_WRITE = 1.0  # GitHub: at least one second between content-creating requests
HOURLY_CAP = 500  # GitHub: at most 500 content-generating requests an hour
GOAL_WRITES_PER_POST = 0.05
PIPELINE_DEFAULT_POSTS_PER_COMMIT = 25  # backup's --posts-per-commit default
UNLIMITED = 1_000_000  # the stand-in's rate limit while (a) runs
BASELINE = "one_commit_per_post"
HTTP_TIMEOUT_S = 30
PUBLISHED = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.timezone.utc)
_PART = re.compile(r"\(backup (?P<backup>[^,]+), part \d+\)")

_TOPICS = (
    "pipelines", "windowing", "backups", "the feed", "triggers", "side inputs", "Redis",
    "MongoDB", "GitHub", "streaming", "batch jobs", "watermarks", "the notifier", "café notes",
)  # fmt: skip
_WORDS = (
    "the", "a", "every", "post", "reader", "author", "event", "window", "commit", "tree",
    "branch", "queue", "score", "feed", "late", "early", "replay", "idempotent", "key",
    "bundle", "worker", "runner", "state", "timer", "sink", "source", "retry", "backoff",
    "naïve", "façade", "über", "déjà vu", "—", "writes", "reads", "is", "are", "was", "we",
    "they", "then", "because", "without", "after", "before", "once", "twice", "never",
    "always", "quickly", "slowly", "in", "on", "of", "to", "with", "for", "and", "but",
)  # fmt: skip


# --------------------------------------------------------------------------- posts


def _sentence(rng: random.Random) -> str:
    words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 18))]
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), f"`{rng.choice(_WORDS).replace(' ', '_')}()`")
    if rng.random() < 0.15:
        words.insert(rng.randrange(len(words)), f"[{rng.choice(_TOPICS)}](https://example.org/)")
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice(".!?.")


def post_body(rng: random.Random, title: str) -> str:
    """A Markdown post of 2-4 KB: headings, paragraphs, a list, a code block, links."""
    target = rng.randint(2048, 4096)
    parts = [f"# {title}", ""]
    size = len(parts[0])
    section = 0
    while size < target:
        kind = rng.random()
        if kind < 0.12:
            section += 1
            block = f"## {section}. {rng.choice(_TOPICS).capitalize()}"
        elif kind < 0.22:
            block = "\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(2, 5)))
        elif kind < 0.3:
            block = (
                "```python\n"
                f"with beam.Pipeline() as p:\n    _ = p | 'Step{section}' >> beam.Create"
                f"([{rng.randint(1, 99)}, {rng.randint(1, 99)}])\n```"
            )
        elif kind < 0.35:
            block = f"> {_sentence(rng)}"
        else:
            block = " ".join(_sentence(rng) for _ in range(rng.randint(2, 5)))
        parts += [block, ""]
        size += len(block.encode()) + 2
    return "\n".join(parts)


def make_posts(publication_id: str, count: int, author: str) -> list[dict[str, Any]]:
    """``count`` posts of ``publication_id``, deterministic: the same on every run."""
    rng = random.Random(f"{publication_id}:{count}")
    posts = []
    for n in range(count):
        topic = rng.choice(_TOPICS)
        title = f"Notes on {topic}, part {n + 1}"
        posts.append(
            {
                "_id": f"{publication_id}-p{n:04d}",
                "publicationId": publication_id,
                "authorId": author,
                "title": title,
                "slug": title.lower().replace(",", "").replace(" ", "-"),
                "tags": sorted(rng.sample(_TOPICS, rng.randint(1, 3))),
                "contentMarkdown": post_body(rng, title),
                "updatedAt": PUBLISHED + dt.timedelta(minutes=17 * n),
            }
        )
    return posts


# --------------------------------------------------------------------------- stand-in


class StandIn:
    """The stand-in process, through its admin routes and PyGithub."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
            return json.loads(response.read())

    def requests(self) -> list[dict[str, Any]]:
        """The request log: ``{method, path, status, token_login, at}`` per request."""
        return self._admin("GET", "/_admin/requests")  # type: ignore[no-any-return]

    def rate_limit(self, per_minute: int) -> None:
        self._admin("POST", "/_admin/config", {"rate_limit_per_minute": per_minute})

    def client(self, token: str) -> Github:
        return Github(
            auth=Auth.Token(token),
            base_url=self.url,
            timeout=HTTP_TIMEOUT_S,
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )


def request_stats(log: list[dict[str, Any]], repo: str) -> dict[str, Any]:
    """What the log says about one repository: writes, reads, 403s, 422 ref updates."""
    base = f"/repos/{repo}"
    mine = [r for r in log if r["path"] == base or r["path"].startswith(base + "/")]
    writes = [r for r in mine if r["method"] in CONTENT_CREATING]
    return {
        "writes": len(writes),
        "reads": len(mine) - len(writes),
        "throttled": sum(1 for r in mine if r["status"] in (403, 429)),
        "rebuilds_422": sum(
            1
            for r in writes
            if r["method"] == "PATCH" and "/git/refs/" in r["path"] and r["status"] == 422
        ),
        "github_s": round(mine[-1]["at"] - mine[0]["at"], 2) if mine else 0.0,
    }


def read_tree(gh: Github, repo: str) -> tuple[dict[str, str], list[str]]:
    """The default branch's files ``{path: blob sha}`` and its commit messages, newest
    first."""
    found = gh.get_repo(repo)
    head = found.get_git_commit(found.get_git_ref(f"heads/{found.default_branch}").object.sha)
    tree = found.get_git_tree(head.tree.sha, recursive=True)
    files = {e.path: e.sha for e in tree.tree if e.type == "blob"}
    messages = []
    commit: Any = head
    for _ in range(10_000):
        messages.append(commit.message)
        if not commit.parents:
            break
        commit = found.get_git_commit(commit.parents[0].sha)
    return files, messages


def lost_posts(files: dict[str, str], posts: list[dict[str, Any]]) -> list[str]:
    """Posts whose file is missing from the tree or holds other content."""
    lost = []
    for doc in posts:
        post = BackupPost.from_document(doc)
        if files.get(post_path(post)) != git_blob_sha(render_post(post)):
            lost.append(post.post_id)
    return lost


# --------------------------------------------------------------------------- sides


def one_commit_per_post(
    stand_in: StandIn, token: str, posts: list[dict[str, Any]], timeout: float
) -> tuple[str, float]:
    """(a): one contents-API PUT (one commit) per post, to a fresh repository.

    Returns the repository (``owner/name``) and the seconds the posts took.
    """
    gh = stand_in.client(token)
    try:
        repo = gh.get_user().create_repo("bench-one-commit-per-post", auto_init=True)
        deadline = time.monotonic() + timeout
        start = time.perf_counter()
        for doc in posts:
            post = BackupPost.from_document(doc)
            repo.create_file(post_path(post), f"Back up {post.post_id}", render_post(post))
            if time.monotonic() > deadline:
                raise TimeoutError(f"one commit per post took over {timeout:.0f} s")
        elapsed = time.perf_counter() - start
    finally:
        gh.close()
    return repo.full_name, elapsed


@contextlib.contextmanager
def _jobs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Pipeline processes started into the yielded list are stopped by pid on the way out."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for job in started:
            if job.poll() is None:
                job.terminate()
                try:
                    job.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    job.kill()
                    job.wait(timeout=10)


class Backups:
    """Runs backup pipeline processes against the stack, one database for the run."""

    def __init__(self, work: Path, env: dict[str, str], api_url: str, db: str, prefix: str):
        self.work, self.env, self.api_url, self.db, self.prefix = work, env, api_url, db, prefix

    def run(
        self, requests: list[tuple[str, str, str]], posts_per_commit: int, timeout: float
    ) -> list[dict[str, Any]]:
        """Starts one pipeline process per ``(backupId, publicationId, userId)`` at once
        and waits for all of them.

        Returns per job: exit code, wall seconds (process start to exit) and the tail
        of its log.
        """
        with _jobs() as started:
            runs: list[dict[str, Any]] = []
            for backup_id, publication_id, user_id in requests:
                source = self.work / f"{backup_id}.jsonl"
                event = make_event(
                    "backup_requested",
                    {"backupId": backup_id, "publicationId": publication_id},
                    user_id=user_id,
                )
                source.write_bytes(event.to_json() + b"\n")
                log_path = self.work / f"{backup_id}.log"
                command = [
                    *(sys.executable, "-m", "blogflow.pipelines.backup", "--runner=fnapi"),
                    f"--source=file://{source}",
                    f"--mongo-db={self.db}",
                    f"--redis-prefix={self.prefix}",
                    f"--github-api-url={self.api_url}",
                    "--write-interval=0",
                    f"--posts-per-commit={posts_per_commit}",
                ]
                with open(log_path, "wb") as log:
                    job = subprocess.Popen(
                        command, env=self.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
                    )
                started.append(job)
                runs.append({"job": job, "log": log_path, "start": time.perf_counter()})
            deadline = time.monotonic() + timeout
            while True:
                now = time.perf_counter()
                for r in runs:
                    if "end" not in r and r["job"].poll() is not None:
                        r["end"] = now
                if all("end" in r for r in runs):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"backup job(s) still running after {timeout:.0f} s")
                time.sleep(0.02)
        results = []
        for r in runs:
            text = r["log"].read_text(errors="replace")
            results.append(
                {
                    "returncode": r["job"].returncode,
                    "elapsed_s": round(r["end"] - r["start"], 2),
                    "log_tail": text[-2000:],
                }
            )
        return results


def check_backup(db: Any, backup_id: str, total: int) -> tuple[bool, str]:
    """Whether the backup ended ``done`` with every post, and a one-line account."""
    stored = load_backup(db, backup_id) or {}
    statuses = Counter(i["status"] for i in load_items(db, backup_id))
    complete = stored.get("status") == "done" and stored.get("done") == stored.get("total") == total
    account = (
        f"{backup_id}: {stored.get('status')} {stored.get('done')}/{stored.get('total')} "
        f"(failed {stored.get('failed')}), items {dict(statuses)}"
    )
    return complete, account


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--posts", type=int, default=500, help="posts of the measured backup (default: %(default)s)"
    )
    parser.add_argument(
        "--posts-per-commit",
        type=int,
        default=100,
        help="the pipeline's --posts-per-commit for the headline writes_per_post and the "
        f"overlap (default: %(default)s; the pipeline's default, "
        f"{PIPELINE_DEFAULT_POSTS_PER_COMMIT}, is measured too)",
    )
    parser.add_argument(
        "--overlap-posts",
        type=int,
        default=500,
        help="posts of each of the two overlapping backups of one repository "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds any one side may take (default: %(default)s)",
    )
    args = parser.parse_args()
    if min(args.posts, args.posts_per_commit, args.overlap_posts) < 1:
        parser.error("--posts, --posts-per-commit and --overlap-posts must be positive")
    logging.basicConfig(level=logging.WARNING)
    wall = time.perf_counter()

    run_id = uuid.uuid4().hex[:8]
    tokens = {
        name: f"ghp_bench_{name}_{run_id}"
        for name in (BASELINE, "blogflow_default", "blogflow", "overlap")
    }
    sizes = {
        "blogflow_default": PIPELINE_DEFAULT_POSTS_PER_COMMIT,
        "blogflow": args.posts_per_commit,
    }
    posts = make_posts("pub-bench", args.posts, "author-bench")
    overlap = {
        pub: make_posts(pub, args.overlap_posts, "author-overlap") for pub in ("pub-x", "pub-y")
    }
    mean_kb = sum(len(render_post(BackupPost.from_document(p))) for p in posts) / len(posts) / 1024
    os.environ[SECRET_KEY_VARIABLE] = secrets.token_urlsafe(32)  # this run's, for its tokens
    db_name = f"bench-backup-{run_id}"
    prefix = f"bench-backup-{run_id}:"

    stats: dict[str, dict[str, Any]] = {}
    elapsed: dict[str, float] = {}
    lost: dict[str, list[str]] = {}
    complete: dict[str, bool] = {}
    accounts: list[str] = []
    jobs: dict[str, list[dict[str, Any]]] = {}
    with (
        tempfile.TemporaryDirectory() as work,
        LocalStack(state_dir=Path(work) / "stack", services=("github", "mongo", "redis")) as stack,
    ):
        stand_in = StandIn(stack.env["GITHUB_API_URL"])
        mongo: pymongo.MongoClient = pymongo.MongoClient(
            stack.env["MONGODB_URI"], tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        redis_client = redis_io.connect(stack.env["REDIS_URL"])
        db = mongo[db_name]
        try:
            db.posts.insert_many(posts + overlap["pub-x"] + overlap["pub-y"])
            # who may back them up: the owner or a member (MongoDB publications)
            store_publication(db, "pub-bench", "author-bench", [f"user-{s}" for s in sizes])
            for pub in overlap:
                store_publication(db, pub, "author-overlap", ["user-overlap"])
            env = {**os.environ, **stack.env, "PYTHONUNBUFFERED": "1"}
            backups = Backups(Path(work), env, stand_in.url, db_name, prefix)

            # (a) one commit per post, the secondary rate limit lifted for it alone
            stand_in.rate_limit(UNLIMITED)
            repo, elapsed[BASELINE] = one_commit_per_post(
                stand_in, tokens[BASELINE], posts, args.timeout
            )
            stand_in.rate_limit(DEFAULT_RATE_LIMIT_PER_MINUTE)
            stats[BASELINE] = request_stats(stand_in.requests(), repo)
            with contextlib.closing(stand_in.client(tokens[BASELINE])) as gh:
                lost[BASELINE] = lost_posts(read_tree(gh, repo)[0], posts)
            print(
                f"(a) one commit per post: {args.posts} posts ({mean_kb:.1f} KiB each), "
                f"{stats[BASELINE]['writes']} content-creating requests, "
                f"{elapsed[BASELINE]:.2f} s, lost {len(lost[BASELINE])}",
                flush=True,
            )

            # (b) the pipeline, one fresh repository per commit size
            for side, size in sizes.items():
                gh = stand_in.client(tokens[side])
                with contextlib.closing(gh):
                    repo = gh.get_user().create_repo(f"bench-{side}", auto_init=True).full_name
                    user = f"user-{side}"
                    link_user(db, user, repo, Secret(tokens[side]))
                    backup_id = f"b-{side}-{run_id}"
                    [job] = backups.run([(backup_id, "pub-bench", user)], size, args.timeout)
                    jobs[side] = [job]
                    elapsed[side] = job["elapsed_s"]
                    stats[side] = request_stats(stand_in.requests(), repo)
                    lost[side] = lost_posts(read_tree(gh, repo)[0], posts)
                complete[side], account = check_backup(db, backup_id, args.posts)
                # what a browser connecting now is sent first: the latest progress
                stored = redis_client.hget(f"{prefix}notifier:latest:{user}", backup_id)
                latest = json.loads(stored) if stored else {}
                accounts.append(account)
                print(
                    f"(b) blogflow, {size} posts per commit: {stats[side]['writes']} "
                    f"content-creating requests ({stats[side]['writes'] / args.posts:.3f} per "
                    f"post), {elapsed[side]:.2f} s (process) / {stats[side]['github_s']:.2f} s "
                    f"(GitHub requests), lost {len(lost[side])}, throttled "
                    f"{stats[side]['throttled']}; {account}; browser saw "
                    f"{latest.get('done')}/{latest.get('total')}",
                    flush=True,
                )
                if job["returncode"] != 0:
                    print(f"backup job exited {job['returncode']}:\n{job['log_tail']}")

            # (c) two backups of one repository at once, one pipeline process each
            gh = stand_in.client(tokens["overlap"])
            with contextlib.closing(gh):
                repo = gh.get_user().create_repo("bench-overlap", auto_init=True).full_name
                link_user(db, "user-overlap", repo, Secret(tokens["overlap"]))
                ids = {pub: f"b-overlap-{pub}-{run_id}" for pub in overlap}
                jobs["overlap"] = backups.run(
                    [(ids[pub], pub, "user-overlap") for pub in overlap],
                    args.posts_per_commit,
                    args.timeout,
                )
                stats["overlap"] = request_stats(stand_in.requests(), repo)
                files, messages = read_tree(gh, repo)
            lost["overlap"] = [p for pub in overlap for p in lost_posts(files, overlap[pub])]
            for backup_id in ids.values():
                complete[backup_id], account = check_backup(db, backup_id, args.overlap_posts)
                accounts.append(account)
            # The backups' commits in the branch's history, oldest first: x, y, x, ...
            history = [m.group("backup") for m in map(_PART.search, reversed(messages)) if m]
            switches = sum(1 for a, b in zip(history, history[1:], strict=False) if a != b)
            elapsed["overlap"] = max(j["elapsed_s"] for j in jobs["overlap"])
            print(
                f"(c) two backups of {args.overlap_posts} posts into one repository at once: "
                f"{len(history)} commits ({switches} switches between the backups), "
                f"{stats['overlap']['rebuilds_422']} rebuilt after a 422, "
                f"{stats['overlap']['writes']} content-creating requests, "
                f"{elapsed['overlap']:.2f} s, lost {len(lost['overlap'])}",
                flush=True,
            )
            for account in accounts[-2:]:
                print(f"    {account}")
            for job in jobs["overlap"]:
                if job["returncode"] != 0:
                    print(f"backup job exited {job['returncode']}:\n{job['log_tail']}")
        finally:
            redis_client.close()
            mongo.drop_database(db_name)
            mongo.close()

    per_post = {side: stats[side]["writes"] / args.posts for side in (BASELINE, *sizes)}
    names = {BASELINE: BASELINE, **{side: f"blogflow_{size}" for side, size in sizes.items()}}
    if sizes["blogflow"] == PIPELINE_DEFAULT_POSTS_PER_COMMIT:  # the same size twice
        names["blogflow_default"] += "_default"
    overlap_total = 2 * args.overlap_posts
    failures = [
        *(
            f"{names.get(side, side)}: {len(lost_ids)} posts lost ({', '.join(lost_ids[:3])} ...)"
            for side, lost_ids in lost.items()
            if lost_ids
        ),
        *(f"{key}: backup not complete" for key, ok in complete.items() if not ok),
        *(
            f"{side}: a backup job exited {job['returncode']}"
            for side, side_jobs in jobs.items()
            for job in side_jobs
            if job["returncode"] != 0
        ),
    ]
    ratio = per_post[BASELINE] / per_post["blogflow"] if per_post["blogflow"] else None
    verdict = "met" if per_post["blogflow"] <= GOAL_WRITES_PER_POST else "NOT met"
    print(
        f"writes per post: one commit per post {per_post[BASELINE]:.3f}, blogflow "
        f"{per_post['blogflow_default']:.3f} at {PIPELINE_DEFAULT_POSTS_PER_COMMIT} posts per "
        f"commit, {per_post['blogflow']:.3f} at {args.posts_per_commit} (goal "
        f"<= {GOAL_WRITES_PER_POST}: {verdict}); GitHub's 500 requests an hour back up "
        + ", ".join(f"{HOURLY_CAP / v:,.0f} ({names[s]})" for s, v in per_post.items())
        + " posts an hour"
    )
    if failures:
        print("BACKUP INCOMPLETE: " + "; ".join(failures))
    print(
        json.dumps(
            {
                "name": "backup_requests",
                "posts": args.posts,
                "posts_per_commit": args.posts_per_commit,
                "writes_per_post": round(per_post["blogflow"], 4),
                "writes_per_post_default": round(per_post["blogflow_default"], 4),
                "baseline_writes_per_post": round(per_post[BASELINE], 4),
                "ratio_vs_one_commit_per_post": round(ratio, 1) if ratio else None,
                "goal_writes_per_post": GOAL_WRITES_PER_POST,
                "lost_posts": len(lost["blogflow"]),
                "lost_posts_default": len(lost["blogflow_default"]),
                "baseline_lost_posts": len(lost[BASELINE]),
                "complete": complete.get("blogflow", False)
                and complete.get("blogflow_default", False),
                "writes": {names[s]: stats[s]["writes"] for s in per_post},
                "reads_per_post": {
                    names[s]: round(stats[s]["reads"] / args.posts, 3) for s in per_post
                },
                "throttled_403": {names[s]: stats[s]["throttled"] for s in per_post},
                "elapsed_s": {names[s]: round(elapsed[s], 2) for s in per_post},
                "github_s": {names[s]: stats[s]["github_s"] for s in per_post},
                "paced_s": {names[s]: stats[s]["writes"] * SECONDS_PER_WRITE for s in per_post},
                "posts_per_hour_cap": {
                    names[s]: round(HOURLY_CAP / v) for s, v in per_post.items()
                },
                "overlap_posts": args.overlap_posts,
                "overlap_both_complete": all(complete.get(i, False) for i in ids.values()),
                "overlap_lost_posts": len(lost["overlap"]),
                "overlap_rebuilds_422": stats["overlap"]["rebuilds_422"],
                "overlap_commits": len(history),
                "overlap_switches": switches,
                "overlap_writes_per_post": round(stats["overlap"]["writes"] / overlap_total, 4),
                "overlap_throttled_403": stats["overlap"]["throttled"],
                "overlap_elapsed_s": elapsed["overlap"],
                "mean_post_kib": round(mean_kb, 2),
                "write_interval_s": 0,
                "rate_limit_per_minute": DEFAULT_RATE_LIMIT_PER_MINUTE,
                "stand_in": "process (LocalStack 'github')",
                "seconds": round(time.perf_counter() - wall, 1),
            }
        )
    )
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
