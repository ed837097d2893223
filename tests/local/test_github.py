"""Tests of the GitHub API stand-in, driven by PyGithub over real connections."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import github
import pytest
from github import Auth, Github, GithubException, InputGitTreeElement

from blogflow.local.github import GitHubStandIn, blob_sha, git_object_sha, tree_object
from blogflow.local.stack import LocalStack

__all__: list[str] = []

EMPTY_BLOB = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
# PyGithub sleeps between requests (0.25 s) and writes (1 s) by default.
_NO_THROTTLE = {"seconds_between_requests": None, "seconds_between_writes": None}


@pytest.fixture(scope="module")
def server() -> Iterator[GitHubStandIn]:
    with GitHubStandIn() as stand_in:
        yield stand_in


@pytest.fixture
def token() -> str:
    return f"tok-{uuid.uuid4().hex}"


def _client(server: GitHubStandIn, token: str) -> Github:
    return Github(auth=Auth.Token(token), base_url=server.url, retry=None, **_NO_THROTTLE)


def test_create_repo_with_auto_init_and_contents(server: GitHubStandIn, token: str) -> None:
    gh = _client(server, token)
    user = gh.get_user()
    assert user.login.startswith("user-")
    repo = user.create_repo("backup", auto_init=True, private=True)
    readme = repo.get_contents("README.md")
    assert readme.decoded_content == b"# backup\n"
    assert readme.sha == blob_sha(b"# backup\n")

    created = repo.create_file("posts/a.md", "add a", "hello", branch="main")
    assert created["content"].sha == blob_sha(b"hello")
    updated = repo.update_file("posts/a.md", "edit a", "hello again", created["content"].sha)
    assert repo.get_contents("posts/a.md").decoded_content == b"hello again"
    head = repo.get_git_ref("heads/main").object.sha
    assert head == updated["commit"].sha

    with pytest.raises(GithubException) as error:
        repo.update_file("posts/a.md", "stale", "x", created["content"].sha)
    assert error.value.status == 409
    assert "does not match" in error.value.data["message"]


def test_multi_file_commit_through_the_git_data_api(server: GitHubStandIn, token: str) -> None:
    repo = _client(server, token).get_user().create_repo("multi", auto_init=True)
    ref = repo.get_git_ref("heads/main")
    base = repo.get_git_commit(ref.object.sha)
    elements = [
        InputGitTreeElement("posts/one.md", "100644", "blob", content="one"),
        InputGitTreeElement("posts/two.md", "100644", "blob", content="two"),
    ]
    tree = repo.create_git_tree(elements, base.tree)
    commit = repo.create_git_commit("two posts", tree, [base])
    ref.edit(commit.sha, force=False)

    assert repo.get_git_ref("heads/main").object.sha == commit.sha
    read = repo.get_git_tree(repo.get_git_commit(commit.sha).tree.sha, recursive=True)
    assert {e.path: e.type for e in read.tree} == {
        "README.md": "blob",
        "posts": "tree",
        "posts/one.md": "blob",
        "posts/two.md": "blob",
    }
    assert repo.get_contents("posts/two.md").decoded_content == b"two"

    # A sibling commit on the old base is not a fast forward.
    other = repo.create_git_commit(
        "diverged", repo.create_git_tree(elements[:1], base.tree), [base]
    )
    with pytest.raises(GithubException) as error:
        ref.edit(other.sha, force=False)
    assert error.value.status == 422
    assert error.value.data["message"] == "Update is not a fast forward"
    ref.edit(other.sha, force=True)
    assert repo.get_git_ref("heads/main").object.sha == other.sha


def test_other_token_gets_404_and_revoked_token_gets_401(server: GitHubStandIn, token: str) -> None:
    repo = _client(server, token).get_user().create_repo("mine", auto_init=True, private=True)
    stranger = _client(server, f"other-{token}")
    with pytest.raises(GithubException) as error:
        stranger.get_repo(repo.full_name)
    assert error.value.status == 404

    server.revoke(token)
    with pytest.raises(GithubException) as error:
        _client(server, token).get_repo(repo.full_name)
    assert error.value.status == 401
    assert error.value.data["message"] == "Bad credentials"
    logged = [r for r in server.requests() if r["status"] == 401]
    assert logged and all(token not in str(r) for r in server.requests())


def test_secondary_rate_limit_and_injected_faults(server: GitHubStandIn, token: str) -> None:
    repo = _client(server, token).get_user().create_repo("limited", auto_init=True)
    server.configure(rate_limit_per_minute=3)
    try:
        for i in range(3):  # the new budget starts empty
            repo.create_file(f"f{i}.md", "m", "x")
        with pytest.raises(GithubException) as error:
            repo.create_file("f9.md", "m", "x")
        assert error.value.status == 403
        assert "secondary rate limit" in error.value.data["message"]
        assert int(error.value.headers["retry-after"]) >= 1
    finally:
        server.configure(rate_limit_per_minute=80)

    server.configure(fail_next=[{"status": 502}])
    with pytest.raises(GithubException) as error:
        repo.get_contents("README.md")
    assert error.value.status == 502
    assert repo.get_contents("README.md").decoded_content == b"# limited\n"


def test_faults_aimed_at_a_route_served_or_not(server: GitHubStandIn, token: str) -> None:
    repo = _client(server, token).get_user().create_repo("aimed", auto_init=True)
    server.configure(
        fail_next=[
            {"status": 422, "method": "POST", "path": "/git/trees$", "message": "BadObjectState"},
            {"status": 502, "method": "PATCH", "path": "/git/refs/", "after": True},
            {"status": 403, "message": "secondary rate limit", "headers": {"retry-after": "7"}},
        ]
    )
    with pytest.raises(GithubException) as error:  # a GET: only the last fault matches it
        repo.get_git_ref("heads/main")
    assert error.value.status == 403 and error.value.headers["retry-after"] == "7"
    assert [f["status"] for f in server.pending_faults()] == [422, 502]
    ref = repo.get_git_ref("heads/main")
    base = repo.get_git_commit(ref.object.sha)
    elements = [InputGitTreeElement("posts/a.md", "100644", "blob", content="a")]
    with pytest.raises(GithubException) as error:
        repo.create_git_tree(elements, base.tree)
    assert error.value.status == 422 and error.value.data["message"] == "BadObjectState"
    tree = repo.create_git_tree(elements, base.tree)
    commit = repo.create_git_commit("a", tree, [base])
    with pytest.raises(GithubException) as error:
        ref.edit(commit.sha, force=False)
    assert error.value.status == 502
    assert repo.get_git_ref("heads/main").object.sha == commit.sha  # served all the same
    assert server.pending_faults() == []

    server.configure(fail_next=[{"status": 500, "path": "/contents/", "skip": 2}])
    for _ in range(2):  # the first two matching requests pass
        assert repo.get_contents("posts/a.md").decoded_content == b"a"
    assert server.pending_faults()[0]["skip"] == 0
    with pytest.raises(GithubException) as error:
        repo.get_contents("posts/a.md")
    assert error.value.status == 500 and server.pending_faults() == []


def test_shas_are_git_exact(tmp_path: Path) -> None:
    assert blob_sha(b"") == EMPTY_BLOB
    assert git_object_sha("tree", tree_object([])) == EMPTY_TREE
    data = b"hello\n"
    sub = git_object_sha("tree", tree_object([("100644", "x.md", blob_sha(data))]))
    entries = [
        ("100644", "a.md", blob_sha(data)),
        ("40000", "a", sub),
        ("100644", "a-b", EMPTY_BLOB),
    ]
    ours = git_object_sha("tree", tree_object(entries))
    if shutil.which("git") is None:
        pytest.skip("git is not installed")

    def git(*args: str, stdin: bytes = b"") -> str:
        result = subprocess.run(
            ["git", *args], input=stdin, cwd=tmp_path, capture_output=True, check=True
        )
        return result.stdout.decode().strip()

    git("init", "-q")
    assert git("hash-object", "-w", "--stdin", stdin=data) == blob_sha(data)
    git("hash-object", "-w", "--stdin", stdin=b"")
    assert git("mktree", stdin=f"100644 blob {blob_sha(data)}\tx.md\n".encode()) == sub
    listing = "".join(
        f"{'040000 tree' if m == '40000' else m + ' blob'} {s}\t{n}\n" for m, n, s in entries
    )
    assert git("mktree", stdin=listing.encode()) == ours


@pytest.mark.integration
def test_the_local_stack_starts_the_stand_in(tmp_path: Path) -> None:
    with LocalStack(state_dir=tmp_path, services=("github",)) as stack:
        url = stack.env["GITHUB_API_URL"]
        assert url == f"http://127.0.0.1:{stack.ports['github']}"
        gh = github.Github(auth=Auth.Token("t"), base_url=url, retry=None, **_NO_THROTTLE)
        assert gh.get_user().login.startswith("user-")
