"""RepoWriter against the GitHub stand-in over real connections."""

import socket
import threading

import pytest
from github import Auth, Github

from blogflow.io.github import GitHubError, RepoAccessError, RepoWriter
from blogflow.local.github import GitHubStandIn
from blogflow.tokens import Secret

pytestmark = pytest.mark.integration

TOKEN = "ghp_writer_test_token_1234567890"


@pytest.fixture
def github():
    with GitHubStandIn() as server:
        yield server


@pytest.fixture
def repo(github, unique_name):
    client = Github(
        auth=Auth.Token(TOKEN),
        base_url=github.url,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    created = client.get_user().create_repo(unique_name, auto_init=True)
    yield created
    client.close()


def files(n, version="v1"):
    return [(f"posts/post-{i}-p{i}.md", f"# Post {i} {version}\n".encode()) for i in range(n)]


def writes(github, since=0):
    """The content-creating requests of the log, from entry ``since`` on."""
    return [r for r in github.requests()[since:] if r["method"] in ("POST", "PATCH", "PUT")]


def test_many_posts_make_one_commit_and_unchanged_posts_none(github, repo):
    writer = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url)
    before = len(github.requests())
    first = writer.write(files(25), "back up 25 posts")
    assert first.commit_sha and len(first.written) == 25 and first.unchanged == ()
    assert len(writes(github, before)) == 3  # one tree, one commit, one ref update
    assert repo.get_contents("posts/post-7-p7.md").decoded_content == b"# Post 7 v1\n"

    again = writer.write(files(25), "back up 25 posts")
    assert again.commit_sha is None and len(again.unchanged) == 25
    mixed = writer.write(files(2, "v2") + files(25)[2:], "one changed")
    assert mixed.written == ("posts/post-0-p0.md", "posts/post-1-p1.md")
    assert len(mixed.unchanged) == 23
    writer.close()


def test_a_concurrent_writer_is_rebased_on_and_nothing_is_lost(github, repo):
    def backup(n, results):
        writer = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url, max_attempts=20)
        results[n] = writer.write(
            [(f"posts/w{n}-{i}.md", f"writer {n} post {i}\n".encode()) for i in range(10)],
            f"writer {n}",
        )
        writer.close()

    results = {}
    threads = [threading.Thread(target=backup, args=(n, results)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r.commit_sha for r in results.values()) and len(results) == 4
    head = repo.get_git_commit(repo.get_git_ref("heads/main").object.sha)
    paths = {e.path for e in repo.get_git_tree(head.tree.sha, recursive=True).tree}
    assert {f"posts/w{n}-{i}.md" for n in range(4) for i in range(10)} <= paths


def test_a_commit_that_lands_meanwhile_is_rebased_on(github, repo):
    ours = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url)
    theirs = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url)
    call, landed = ours._call, []

    def call_with_a_commit_landing(what, function, *args, **kwargs):
        # Their commit lands after we read the head and before we move the branch.
        if getattr(function, "__name__", "") == "create_git_commit" and not landed:
            landed.append(theirs.write([("posts/theirs.md", b"theirs\n")], "theirs"))
        return call(what, function, *args, **kwargs)

    ours._call = call_with_a_commit_landing
    result = ours.write([("posts/ours.md", b"ours\n")], "ours")
    assert landed[0].commit_sha and result.attempts == 2
    head = repo.get_git_commit(repo.get_git_ref("heads/main").object.sha)
    assert head.sha == result.commit_sha and head.parents[0].sha == landed[0].commit_sha
    paths = {e.path for e in repo.get_git_tree(head.tree.sha, recursive=True).tree}
    assert {"posts/ours.md", "posts/theirs.md"} <= paths


def test_rate_limits_are_waited_out_and_5xx_retried(github, repo):
    writer = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url, max_attempts=4)
    github.configure(fail_next=[{"status": 502}, {"status": 503}])
    assert writer.write(files(3), "after two 5xx").commit_sha
    github.configure(rate_limit_per_minute=1)
    with pytest.raises(GitHubError, match="403") as refused:
        RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url, max_wait=0.5).write(
            files(3, "v9"), "over the limit"
        )
    assert TOKEN not in str(refused.value)
    writer.close()


def test_refused_token_and_missing_repo_fail_clearly(github, repo):
    github.revoke(TOKEN)
    with pytest.raises(RepoAccessError, match="401") as revoked:
        RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url).write(files(1), "x")
    assert TOKEN not in str(revoked.value)
    with pytest.raises(RepoAccessError, match="404"):
        RepoWriter(
            repo.full_name, Secret("ghp_someone_else_entirely_00000"), api_url=github.url
        ).write(files(1), "x")


def test_content_creating_requests_are_paced_per_token_across_writers(github, unique_name):
    client = Github(
        auth=Auth.Token(TOKEN),
        base_url=github.url,
        retry=None,
        seconds_between_requests=None,
        seconds_between_writes=None,
    )
    user = client.get_user()
    names = [user.create_repo(f"{unique_name}-{i}", auto_init=True).full_name for i in (1, 2)]
    interval = 0.25
    writers = [
        RepoWriter(name, Secret(TOKEN), api_url=github.url, write_interval=interval)
        for name in names
    ]
    before = len(github.requests())
    threads = [
        threading.Thread(target=w.write, args=(files(3, name), "paced"))
        for w, name in zip(writers, names, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    made = writes(github, before)
    assert len(made) == 6 and {r["status"] for r in made} <= {200, 201}
    times = sorted(r["at"] for r in made)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # two writers, one token: their writes interleave, yet never closer than the interval
    assert min(gaps) >= interval * 0.9, gaps
    for writer in writers:
        writer.close()
    client.close()


def test_a_failed_ref_update_retried_after_another_commit_landed_is_rebuilt(github, repo):
    ours = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url)
    theirs = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url)
    target = ours._repository()
    create_commit, raced = target.create_git_commit, []

    def commit_then_race(*args, **kwargs):
        made = create_commit(*args, **kwargs)
        if not raced:  # their commit lands, then GitHub fails our ref update once
            raced.append(theirs.write([("posts/theirs.md", b"theirs\n")], "theirs"))
            github.configure(fail_next=[{"status": 502}])
        return made

    target.create_git_commit = commit_then_race
    result = ours.write([("posts/ours.md", b"ours\n")], "ours")

    assert result.commit_sha and result.attempts == 2  # 502, retried: 422, rebuilt: landed
    updates = [r["status"] for r in github.requests() if r["method"] == "PATCH"]
    assert updates[-3:] == [502, 422, 200]
    head = repo.get_git_commit(repo.get_git_ref("heads/main").object.sha)
    assert head.sha == result.commit_sha and head.parents[0].sha == raced[0].commit_sha


def test_an_unreachable_github_is_retried_then_a_clear_error():
    with socket.socket() as probe:  # a port nothing listens on: connections are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    writer = RepoWriter(
        "ann/blog", Secret(TOKEN), api_url=f"http://127.0.0.1:{port}", max_attempts=2
    )
    with pytest.raises(GitHubError, match="GitHub unreachable after 2 attempt") as error:
        writer.write(files(1), "x")
    assert TOKEN not in str(error.value)


def head_of(repo):
    return repo.get_git_commit(repo.get_git_ref("heads/main").object.sha)


def test_a_409_or_a_422_to_a_step_of_a_commit_rebuilds_it_on_the_current_head(github, repo):
    writer = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url, rebuild_wait=0.01)
    before = head_of(repo)
    github.configure(
        fail_next=[
            {"status": 422, "method": "POST", "path": "/git/trees$", "message": "BadObjectState"},
            {"status": 409, "method": "POST", "path": "/git/commits$", "message": "Conflict"},
            {"status": 409, "method": "PATCH", "path": "/git/refs/", "message": "Conflict"},
        ]
    )
    since = len(github.requests())

    result = writer.write(files(3), "after a 422 and two 409s")

    assert github.pending_faults() == []  # every fault was met
    assert result.commit_sha and result.attempts == 4 and len(result.written) == 3
    refused = [(r["method"], r["status"]) for r in writes(github, since) if r["status"] >= 400]
    assert refused == [("POST", 422), ("POST", 409), ("PATCH", 409)]
    head = head_of(repo)
    assert head.sha == result.commit_sha and [p.sha for p in head.parents] == [before.sha]
    assert repo.get_contents("posts/post-2-p2.md").decoded_content == b"# Post 2 v1\n"
    writer.close()


def test_a_commit_refused_on_every_attempt_fails_clearly_and_writes_nothing(github, repo):
    writer = RepoWriter(
        repo.full_name, Secret(TOKEN), api_url=github.url, max_attempts=3, rebuild_wait=0.01
    )
    before = head_of(repo).sha
    github.configure(fail_next=[{"status": 422, "method": "POST", "path": "/git/trees$"}] * 4)
    since = len(github.requests())
    with pytest.raises(GitHubError, match="refused the commit 3 time") as refused:
        writer.write(files(2), "never lands")
    assert refused.value.status == 422 and "creating the tree" in str(refused.value)
    assert TOKEN not in str(refused.value)
    assert len(github.pending_faults()) == 1  # bounded: three builds, not four
    assert [r["status"] for r in writes(github, since)] == [422, 422, 422]
    assert head_of(repo).sha == before
    writer.close()


def test_a_ref_update_whose_answer_was_lost_commits_once(github, repo):
    writer = RepoWriter(repo.full_name, Secret(TOKEN), api_url=github.url)
    before = head_of(repo).sha
    # GitHub moves the branch, then the answer is lost: the retried update is a no-op
    github.configure(fail_next=[{"status": 502, "method": "PATCH", "after": True}])
    result = writer.write(files(2), "answer lost")
    head = head_of(repo)
    assert head.sha == result.commit_sha and [p.sha for p in head.parents] == [before]
    assert [r["status"] for r in github.requests() if r["method"] == "PATCH"] == [502, 200]
    assert writer.write(files(2), "again").commit_sha is None
    writer.close()
