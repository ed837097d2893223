"""Backups' pure logic: safe paths, stable files, git blob shas, commit batches."""

import datetime as dt
import posixpath
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blogflow.transforms.backups import (
    BackupPost,
    Publication,
    UnsafePathError,
    commit_batches,
    git_blob_sha,
    may_export,
    post_path,
    render_post,
    safe_slug,
    should_resume,
)


def post(slug="hello-world", post_id="p1", **extra):
    fields = dict(
        post_id=post_id,
        publication_id="pub1",
        author_id="alice",
        title="Hello, World",
        slug=slug,
        tags=("beam",),
        content_markdown="# Hi\n\nFirst post.\n",
        updated_at="2026-11-21T10:00:00+00:00",
    )
    fields.update(extra)
    return BackupPost(**fields)


@pytest.mark.parametrize(
    ("slug", "expected"),
    [
        ("hello-world", "hello-world"),
        ("../../etc/passwd", "etc-passwd"),
        (".github/workflows/x", "github-workflows-x"),
        ("a/b\\c", "a-b-c"),
        ("tab\there\x00nul\x1b[31m", "tab-here-nul-31m"),
        ("Café Crème", "cafe-creme"),
        ("..", "post"),
        ("", "post"),
        ("x" * 200, "x" * 80),
    ],
)
def test_safe_slug(slug, expected):
    assert safe_slug(slug) == expected


@given(st.text(), st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True))
def test_no_slug_leaves_posts(slug, post_id):
    path = post_path(post(slug=slug, post_id=post_id))
    assert posixpath.normpath(path) == path
    assert path.startswith("posts/") and path.count("/") == 1 and path.endswith(".md")
    name = path.removeprefix("posts/")
    assert not name.startswith(".") and all(ch.isprintable() for ch in name)


@pytest.mark.parametrize("post_id", ["../x", "a/b", "", ".github", "x y", "a\x00"])
def test_unsafe_post_ids_are_refused(post_id):
    with pytest.raises(UnsafePathError):
        post_path(post(post_id=post_id))


def test_render_is_stable_and_has_front_matter():
    rendered = render_post(post())
    assert rendered == render_post(post())
    text = rendered.decode()
    assert text.startswith('---\ntitle: "Hello, World"\n')
    assert '\ntags: ["beam"]\n' in text and text.endswith("\n---\n\n# Hi\n\nFirst post.\n")
    assert render_post(post(content_markdown="changed")) != rendered


def test_git_blob_sha_matches_git():
    assert git_blob_sha(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert git_blob_sha(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    if shutil.which("git"):
        content = render_post(post())
        out = subprocess.run(
            ["git", "hash-object", "--stdin"], input=content, capture_output=True, check=True
        )
        assert git_blob_sha(content) == out.stdout.decode().strip()


def test_commit_batches():
    assert [list(b) for b in commit_batches(range(7), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(commit_batches([], 25)) == []
    with pytest.raises(ValueError):
        list(commit_batches([1], 0))


def test_only_the_owner_and_the_members_may_export_a_publication():
    pub = Publication.from_document({"_id": "pub-1", "ownerId": "alice", "members": ["carol"]})
    assert pub == Publication("pub-1", "alice", frozenset({"carol"}))
    assert may_export("alice", pub) and may_export("carol", pub)
    assert not may_export("bob", pub) and not may_export("", pub)
    assert not may_export("alice", None)  # no publications document: nobody
    # a malformed document grants nobody but its owner
    for members in ("carol", None, {"carol": True}, [None, "", 7]):
        odd = Publication.from_document({"_id": "p", "ownerId": "alice", "members": members})
        assert odd.members == frozenset() and not may_export("carol", odd)
    ownerless = Publication.from_document({"_id": "p", "members": ["carol"]})
    assert not may_export("", ownerless) and may_export("carol", ownerless)


NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(
    ("backup", "retryable", "resumed"),
    [
        ({"status": "running", "updatedAt": NOW - dt.timedelta(hours=1)}, 0, True),
        ({"status": "running", "updatedAt": NOW}, 0, False),  # its job may still run
        ({"status": "running", "startedAt": dt.datetime(2026, 11, 21, 10)}, 0, True),  # naive
        ({"status": "failed", "error": None, "failed": 3}, 3, True),
        ({"status": "failed", "error": None, "failed": 3}, 0, False),  # all need a person
        ({"status": "failed", "error": "user 'bob' may not back up publication 'p'"}, 0, False),
        ({"status": "failed", "error": "publication 'p' is unknown", "failed": 2}, 2, False),
        ({"status": "done", "updatedAt": NOW - dt.timedelta(hours=1)}, 0, False),
    ],
)
def test_which_backups_are_resumed(backup, retryable, resumed):
    assert should_resume(backup, retryable, NOW - dt.timedelta(minutes=10)) is resumed
