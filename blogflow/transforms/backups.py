"""Backups' pure logic: where a post goes in the repository, what the file says, and
whether it changed.

- :func:`post_path`: ``posts/<safe-slug>-<postId>.md``. The slug is reduced to lower-case
  letters, digits and dashes, so no slug can leave ``posts/`` (``..``, ``/``, ``\\``),
  reach ``.github`` or carry control characters; the post id keeps two posts with the
  same slug apart, and it is checked too.
- :func:`render_post`: the Markdown file, front matter first, byte-for-byte the same for
  the same post, so an unchanged post gives the same git blob.
- :func:`git_blob_sha`: the sha git gives a file's content; equal to the sha in the
  repository's tree means the post is unchanged and needs no commit.
- :func:`commit_batches`: posts cut into commits of at most ``size`` files.
- :func:`plan_backup`: a publication's posts as the files to write, cut into
  :class:`BackupChunk` s (one commit each); a post that cannot be written (unsafe id, too
  large) rides along with its reason, so it ends as a ``failed`` item.
- :func:`progress_message` and :func:`backup_status`: what the browser is told and what
  MongoDB ``backups`` says.
- :func:`may_export`: who may back up a publication — its owner and its members, as the
  platform's ``publications`` collection lists them (:class:`Publication`); nobody may
  back up a publication that has no such document.
- :func:`should_resume`: which stored backups ``blogflow backups resume`` sends again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "DONE",
    "FAILED",
    "FINAL_ITEM_STATUSES",
    "POSTS_DIR",
    "RUNNING",
    "BackupChunk",
    "BackupFile",
    "BackupPost",
    "Publication",
    "UnsafePathError",
    "backup_status",
    "commit_batches",
    "may_export",
    "plan_backup",
    "progress_message",
    "git_blob_sha",
    "post_path",
    "render_post",
    "safe_slug",
    "should_resume",
]

#: The folder of the repository that holds the backed-up posts.
POSTS_DIR = "posts"
_MAX_SLUG = 80
_POST_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_T = TypeVar("_T")

#: Backup statuses: still writing; every post backed up; finished with failures (or the
#: whole backup refused: unknown publication, no linked repository).
RUNNING, DONE, FAILED = "running", "done", "failed"
#: Item statuses that a replay leaves alone; a ``failed`` item is tried again.
FINAL_ITEM_STATUSES = frozenset({"committed", "unchanged"})


class UnsafePathError(ValueError):
    """A post id that cannot be part of a file name safely."""


class BackupPost(NamedTuple):
    """A post as the backup writes it (from MongoDB ``posts``)."""

    post_id: str
    publication_id: str
    author_id: str
    title: str
    slug: str
    tags: tuple[str, ...]
    content_markdown: str
    updated_at: str

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> BackupPost:
        """From a ``posts`` document ``{_id, publicationId, authorId, title, slug, tags,
        contentMarkdown, updatedAt}``; ``updatedAt`` as ISO 8601 text."""
        updated: Any = doc.get("updatedAt")
        return cls(
            str(doc["_id"]),
            str(doc.get("publicationId", "")),
            str(doc.get("authorId", "")),
            str(doc.get("title", "")),
            str(doc.get("slug", "")),
            tuple(str(t) for t in doc.get("tags", ())),
            str(doc.get("contentMarkdown", "")),
            updated.isoformat()
            if updated is not None and hasattr(updated, "isoformat")
            else str(updated or ""),
        )


def safe_slug(slug: str) -> str:
    """``slug`` as lower-case ASCII letters, digits and single dashes, at most 80 long.

    Accents are folded (``é`` → ``e``); everything else (dots, slashes, spaces, control
    characters) becomes a dash. An empty result is ``"post"``.
    """
    ascii_slug = unicodedata.normalize("NFKD", slug).encode("ascii", "ignore").decode()
    cleaned = re.sub(r"[^a-z0-9]+", "-", ascii_slug.lower()).strip("-")
    return cleaned[:_MAX_SLUG].rstrip("-") or "post"


def post_path(post: BackupPost) -> str:
    """Where the post is stored: ``posts/<safe-slug>-<postId>.md``.

    Raises:
        UnsafePathError: for a post id with characters other than letters, digits,
            ``-`` and ``_`` (post ids are generated; anything else is refused, not fixed).
    """
    if not _POST_ID.match(post.post_id):
        raise UnsafePathError("post id is not safe in a file name")
    return f"{POSTS_DIR}/{safe_slug(post.slug)}-{post.post_id}.md"


def render_post(post: BackupPost) -> bytes:
    """The file: front matter (JSON values, which YAML reads too) and the Markdown body."""
    front = {
        "title": post.title,
        "slug": post.slug,
        "postId": post.post_id,
        "publicationId": post.publication_id,
        "authorId": post.author_id,
        "tags": list(post.tags),
        "updatedAt": post.updated_at,
    }
    lines = ["---"]
    lines += [f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in front.items()]
    lines += ["---", "", post.content_markdown.rstrip("\n"), ""]
    return "\n".join(lines).encode("utf-8")


def git_blob_sha(content: bytes) -> str:
    """The sha1 git gives a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content, usedforsecurity=False).hexdigest()


def commit_batches(items: Iterable[_T], size: int) -> Iterator[Sequence[_T]]:
    """``items`` in order, cut into lists of at most ``size`` (one commit each)."""
    if size < 1:
        raise ValueError(f"batch size must be positive, got {size}")
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class BackupFile(NamedTuple):
    """One post as a file to write, or the reason it cannot be written."""

    post_id: str
    path: str | None
    content: bytes
    error: str | None = None


class BackupChunk(NamedTuple):
    """The posts of one backup that go into one commit (the writer's unit of work)."""

    backup_id: str
    user_id: str
    repo: str
    part: int
    files: tuple[BackupFile, ...]


def _backup_file(post: BackupPost, max_bytes: int) -> BackupFile:
    try:
        path = post_path(post)
    except UnsafePathError as error:
        return BackupFile(post.post_id, None, b"", str(error))
    content = render_post(post)
    if len(content) > max_bytes:
        return BackupFile(
            post.post_id,
            path,
            b"",
            f"post is {len(content):,} bytes, over the {max_bytes:,}-byte limit of one "
            "backed-up file",
        )
    return BackupFile(post.post_id, path, content)


def plan_backup(
    backup_id: str,
    user_id: str,
    repo: str,
    posts: Iterable[BackupPost],
    *,
    posts_per_commit: int = 25,
    max_post_bytes: int = 1 << 20,
    max_commit_bytes: int = 8 << 20,
) -> list[BackupChunk]:
    """The backup's commits, in post id order.

    A chunk holds at most ``posts_per_commit`` files and, unless one file alone is
    bigger, at most ``max_commit_bytes`` of content (one request to GitHub). Files that
    cannot be written carry their error and take no room.
    """
    if posts_per_commit < 1:
        raise ValueError(f"posts_per_commit must be positive, got {posts_per_commit}")
    chunks: list[BackupChunk] = []
    files: list[BackupFile] = []
    size = 0

    def cut() -> None:
        nonlocal files, size
        if files:
            chunks.append(BackupChunk(backup_id, user_id, repo, len(chunks), tuple(files)))
        files, size = [], 0

    for post in sorted(posts, key=lambda p: p.post_id):
        file = _backup_file(post, max_post_bytes)
        if files and (
            len(files) == posts_per_commit or size + len(file.content) > max_commit_bytes
        ):
            cut()
        files.append(file)
        size += len(file.content)
    cut()
    return chunks


def progress_message(
    backup_id: str, post_id: str | None, status: str, done: int, total: int
) -> dict[str, Any]:
    """The ``backup_progress`` message browsers get: ``done`` of ``total`` posts backed
    up (committed or unchanged) after ``post_id`` ended as ``status``."""
    return {
        "type": "backup_progress",
        "backupId": backup_id,
        "postId": post_id,
        "status": status,
        "done": done,
        "total": total,
    }


def backup_status(total: int, done: int, failed: int) -> str:
    """``running`` until every post has ended; then ``done``, or ``failed`` if any did."""
    if done + failed < total:
        return RUNNING
    return FAILED if failed else DONE


class Publication(NamedTuple):
    """Who a publication belongs to: the platform's ``publications`` document."""

    publication_id: str
    owner_id: str
    members: frozenset[str]

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> Publication:
        """From ``{_id, ownerId, members: [userId, ...]}``; a missing or malformed
        ``members`` is no members, never anyone."""
        members = doc.get("members")
        listed = members if isinstance(members, (list, tuple)) else ()
        return cls(
            str(doc["_id"]),
            str(doc.get("ownerId") or ""),
            frozenset(str(m) for m in listed if isinstance(m, str) and m),
        )


def may_export(user_id: str, publication: Publication | None) -> bool:
    """Whether ``user_id`` may back up ``publication``'s posts to their own repository:
    its owner or one of its members may; with no ``publications`` document
    (``publication`` None) nobody may, since nobody is known to own it."""
    if publication is None or not user_id:
        return False
    return user_id == publication.owner_id or user_id in publication.members


def should_resume(
    backup: Mapping[str, Any], retryable_failed: int, stalled_since: dt.datetime
) -> bool:
    """Whether ``blogflow backups resume`` sends a stored backup's request again.

    A ``running`` backup nothing updated since ``stalled_since`` is resumed: its job
    stopped after planning it. A ``failed`` backup is resumed when ``retryable_failed`` of
    its posts failed in a way a later try may mend by itself (GitHub still failing,
    throttling or refusing the commit after the retries), unless the backup was refused as
    a whole (its ``error``: unknown publication, a user who may not export it, no posts,
    no linked repository) — those, like a revoked token, a missing repository, an unsafe
    or too large post, need a person, and a new request once mended.
    """
    status = backup.get("status")
    if status == RUNNING:
        updated = backup.get("updatedAt") or backup.get("startedAt")
        if not isinstance(updated, dt.datetime):
            return False
        aware = updated if updated.tzinfo else updated.replace(tzinfo=dt.timezone.utc)
        return aware <= stalled_since
    return status == FAILED and not backup.get("error") and retryable_failed > 0
