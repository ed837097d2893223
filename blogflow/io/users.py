"""MongoDB ``users``: which GitHub repository a user backs up to, with the token encrypted.

A document is ``{_id: userId, githubRepo: "owner/repo", githubToken: <Fernet ciphertext>,
linkedAt}``; the plaintext token exists only in memory, wrapped in a
:class:`~blogflow.tokens.Secret`, and never in a log line, an exception or a dead letter.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, NamedTuple

from blogflow.tokens import Secret, decrypt_token, encrypt_token

__all__ = ["COLLECTION", "GitHubLink", "UserNotLinkedError", "link_user", "load_link"]

COLLECTION = "users"
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$")


class UserNotLinkedError(LookupError):
    """The user has no GitHub repository and token linked."""


class GitHubLink(NamedTuple):
    """A user's backup target: the repository and the token to write to it."""

    user_id: str
    repo: str
    token: Secret


def link_user(
    db: Any, user_id: str, repo: str, token: Secret, *, secret_key: str | None = None
) -> None:
    """Stores (or replaces) the user's repository and encrypted token.

    Raises:
        ValueError: for an empty user id or a repository not of the form ``owner/name``.
        blogflow.tokens.TokenError: when no secret key is configured.
    """
    if not user_id:
        raise ValueError("user id must not be empty")
    if not _REPO.match(repo) or repo.endswith((".", "/..")) or "/." in repo:
        raise ValueError(f"repository must look like OWNER/NAME, got {repo!r}")
    db[COLLECTION].replace_one(
        {"_id": user_id},
        {
            "_id": user_id,
            "githubRepo": repo,
            "githubToken": encrypt_token(token, secret_key=secret_key),
            "linkedAt": dt.datetime.now(dt.timezone.utc),
        },
        upsert=True,
    )


def load_link(db: Any, user_id: str, *, secret_key: str | None = None) -> GitHubLink:
    """The user's repository and decrypted token.

    Raises:
        UserNotLinkedError: when the user never linked a repository.
        blogflow.tokens.TokenError: when the stored token cannot be decrypted.
    """
    doc = db[COLLECTION].find_one({"_id": user_id})
    if not doc or not doc.get("githubRepo") or not doc.get("githubToken"):
        raise UserNotLinkedError(f"user {user_id!r} has no GitHub repository linked")
    return GitHubLink(
        user_id, doc["githubRepo"], decrypt_token(doc["githubToken"], secret_key=secret_key)
    )
