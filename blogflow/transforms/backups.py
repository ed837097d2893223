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
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, TypeVar

__all__ = [
    "POSTS_DIR",
    "BackupPost",
    "UnsafePathError",
    "commit_batches",
    "git_blob_sha",
    "post_path",
    "render_post",
    "safe_slug",
]

#: The folder of the repository that holds the backed-up posts.
POSTS_DIR = "posts"
_MAX_SLUG = 80
_POST_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_T = TypeVar("_T")


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
