"""Writing posts to a GitHub repository: many files per commit, never a lost update.

:class:`RepoWriter` commits a batch of files with the Git Data API: it reads the branch
head and its tree, leaves out files whose blob sha is already there (unchanged posts make
no commit), creates one tree with the files' content inline, one commit, and moves the
branch with ``force=false``. When another writer moved the branch meanwhile, GitHub
answers 422 "not a fast forward": the writer reads the new head and builds the commit on
it again (bounded). Secondary rate limits (403/429) are waited out as ``retry-after`` or
``x-ratelimit-reset`` say, 5xx answers and lost connections are retried with backoff, and
content-creating requests (tree, commit, ref update) are paced per token: every writer of
one process that holds the same token shares one pacer, since GitHub counts its limits
per user.

The token is a :class:`~blogflow.tokens.Secret`; it is given to PyGithub and appears in
no message, log line or exception of this module.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import requests
from github import Auth, Github, GithubException, InputGitTreeElement

from blogflow.tokens import Secret
from blogflow.transforms.backups import git_blob_sha

__all__ = [
    "GitHubError",
    "create_repository",
    "RepoAccessError",
    "RepoWriter",
    "WriteResult",
    "default_api_url",
]

_LOGGER = logging.getLogger(__name__)
_T = TypeVar("_T")

#: GitHub's public API; ``GITHUB_API_URL`` (set by ``blogflow local up``) overrides it.
GITHUB_API = "https://api.github.com"


def default_api_url() -> str:
    """``GITHUB_API_URL`` from the environment, else GitHub's public API."""
    return os.environ.get("GITHUB_API_URL") or GITHUB_API


class GitHubError(RuntimeError):
    """GitHub refused a write after the retries; ``status`` is its last HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def create_repository(name: str, token: Secret, *, api_url: str | None = None) -> str:
    """Creates a repository of the token's user with a first commit (``POST /user/repos``,
    ``auto_init``); returns its ``owner/name``. For the demo and for setting up tests."""
    client = Github(
        auth=Auth.Token(token.reveal()), base_url=api_url or default_api_url(), retry=None
    )
    try:
        return str(client.get_user().create_repo(name, auto_init=True).full_name)
    except GithubException as error:
        raise GitHubError(
            f"creating repository {name}: GitHub answered {error.status} ({_message(error)})",
            error.status,
        ) from None
    finally:
        client.close()


class RepoAccessError(GitHubError):
    """The token was refused (401, revoked) or cannot see the repository (404)."""


class WriteResult(NamedTuple):
    """What one :meth:`RepoWriter.write` did.

    Attributes:
        commit_sha: the new commit, or None when every file was unchanged.
        written: paths the commit wrote.
        unchanged: paths whose content was already there.
        attempts: commits built (more than 1 after a concurrent writer moved the branch).
    """

    commit_sha: str | None
    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    attempts: int


class _Pacer:
    """At most one request every ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self._interval
        if delay > 0:
            time.sleep(delay)


_PACERS: dict[tuple[str, float], _Pacer] = {}
_PACERS_LOCK = threading.Lock()


def _pacer_for(token: Secret, interval: float) -> _Pacer:
    """The pacer every writer of this process shares for ``token`` (keyed by a digest,
    never by the token itself)."""
    with _PACERS_LOCK:
        return _PACERS.setdefault((token.digest(), interval), _Pacer(interval))


class RepoWriter:
    """Writes files to one repository's default branch.

    Args:
        repo: ``owner/name``.
        token: the user's token.
        api_url: the GitHub API; ``GITHUB_API_URL`` or api.github.com by default.
        max_attempts: bounds both the rebuilds after a concurrent commit and the retries
            of a throttled or failed request.
        write_interval: seconds between two content-creating requests of this token, in
            this process (GitHub asks for at least one second, and allows 80 a minute).
        max_wait: the longest a ``retry-after`` is waited out before giving up.
    """

    def __init__(
        self,
        repo: str,
        token: Secret,
        *,
        api_url: str | None = None,
        max_attempts: int = 5,
        write_interval: float = 0.0,
        max_wait: float = 120.0,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be positive, got {max_attempts}")
        if write_interval < 0:
            raise ValueError(f"write_interval must not be negative, got {write_interval}")
        self._repo_name = repo
        self._client = Github(
            auth=Auth.Token(token.reveal()),
            base_url=api_url or default_api_url(),
            retry=None,  # retries are ours: bounded and honouring retry-after
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        self._max_attempts = max_attempts
        self._pacer = _pacer_for(token, write_interval)
        self._max_wait = max_wait
        self._repo: Any = None

    def close(self) -> None:
        self._client.close()

    def _call(self, what: str, function: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``function(*args, **kwargs)``, retried as GitHub's answer allows; a ``writing``
        call is paced."""
        for attempt in range(1, self._max_attempts + 1):
            if what == "writing":
                self._pacer.wait()
            try:
                return function(*args, **kwargs)
            except GithubException as error:
                status = error.status
                if status in (401, 404):
                    raise RepoAccessError(
                        f"{what} {self._repo_name}: GitHub answered {status} "
                        f"({_message(error)}): the token was refused or cannot see the "
                        "repository",
                        status,
                    ) from None
                wait = _retry_wait(error, attempt)
                if wait is None or attempt == self._max_attempts or wait > self._max_wait:
                    raise GitHubError(
                        f"{what} {self._repo_name}: GitHub answered {status} "
                        f"({_message(error)}) after {attempt} attempt(s)",
                        status,
                    ) from None
                _LOGGER.info(
                    "%s %s: GitHub answered %s; retrying in %.1f s",
                    what,
                    self._repo_name,
                    status,
                    wait,
                )
                time.sleep(wait)
            except (requests.ConnectionError, requests.Timeout) as error:
                # GitHub unreachable: retried like a 5xx, then a clear error (the
                # exception's text names the host, never the token)
                if attempt == self._max_attempts:
                    raise GitHubError(
                        f"{what} {self._repo_name}: GitHub unreachable after {attempt} "
                        f"attempt(s) ({type(error).__name__})"
                    ) from None
                wait = min(30.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                _LOGGER.info(
                    "%s %s: GitHub unreachable; retrying in %.1f s", what, self._repo_name, wait
                )
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _repository(self) -> Any:
        if self._repo is None:
            self._repo = self._call("reading", self._client.get_repo, self._repo_name)
        return self._repo

    def write(self, files: Sequence[tuple[str, bytes]], message: str) -> WriteResult:
        """Commits ``files`` (path, content) as one commit; unchanged files are left out.

        Raises:
            RepoAccessError: for a refused token or a repository it cannot see.
            GitHubError: when GitHub kept refusing after the retries.
        """
        repo = self._repository()
        branch = repo.default_branch
        for attempt in range(1, self._max_attempts + 1):
            ref = self._call("reading", repo.get_git_ref, f"heads/{branch}")
            head = self._call("reading", repo.get_git_commit, ref.object.sha)
            tree = self._call("reading", repo.get_git_tree, head.tree.sha, recursive=True)
            existing = {e.path: e.sha for e in tree.tree if e.type == "blob"}
            changed = [(p, c) for p, c in files if existing.get(p) != git_blob_sha(c)]
            unchanged = tuple(p for p, c in files if existing.get(p) == git_blob_sha(c))
            if not changed:
                return WriteResult(None, (), unchanged, attempt - 1)
            elements = [
                InputGitTreeElement(path, "100644", "blob", content=content.decode("utf-8"))
                for path, content in changed
            ]
            new_tree = self._call("writing", repo.create_git_tree, elements, head.tree)
            commit = self._call("writing", repo.create_git_commit, message, new_tree, [head])
            # Throttled or failed updates are retried (waited, bounded) by _call; a 422 on
            # any of them means another writer moved the branch: build on its head.
            if not self._call("writing", _fast_forward, ref, commit.sha):
                _LOGGER.info(
                    "%s moved while writing; rebuilding the commit on the new head",
                    self._repo_name,
                )
                continue
            return WriteResult(commit.sha, tuple(p for p, _ in changed), unchanged, attempt)
        raise GitHubError(
            f"writing {self._repo_name}: the branch kept moving over {self._max_attempts} attempts",
            422,
        )


def _fast_forward(ref: Any, sha: str) -> bool:
    """Moves ``ref`` to ``sha`` without force; False when GitHub answers 422 (not a fast
    forward: the branch moved)."""
    try:
        ref.edit(sha, force=False)
    except GithubException as error:
        if error.status == 422:
            return False
        raise
    return True


def _message(error: GithubException) -> str:
    data = error.data if isinstance(error.data, dict) else {}
    return str(data.get("message") or "no message")[:200]


def _retry_wait(error: GithubException, attempt: int) -> float | None:
    """Seconds to wait before retrying, or None when retrying cannot help."""
    headers = {k.lower(): v for k, v in (error.headers or {}).items()}
    if error.status in (403, 429):
        if "retry-after" in headers:
            return float(headers["retry-after"])
        if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
            return max(0.0, float(headers["x-ratelimit-reset"]) - time.time())
        if "rate limit" in _message(error).lower():
            return 60.0
        return None
    if error.status is not None and error.status >= 500:
        return min(30.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
    return None
