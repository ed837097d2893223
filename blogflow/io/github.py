"""Writing posts to a GitHub repository: many files per commit, never a lost update.

:class:`RepoWriter` commits a batch of files with the Git Data API: it reads the branch
head and its tree, leaves out files whose blob sha is already there (unchanged posts make
no commit), creates one tree with the files' content inline, one commit, and moves the
branch with ``force=false``.

Two kinds of retry, both bounded by ``max_attempts`` and backing off:

- *the same request again*: secondary rate limits (403/429) are waited out as
  ``retry-after`` or ``x-ratelimit-reset`` say, 5xx answers and lost connections are
  retried with exponential backoff and jitter;
- *the whole commit again, on the current head*: a 409 (conflict) or 422 (unprocessable:
  "not a fast forward" when another writer moved the branch meanwhile, or a tree GitHub
  could not build on a base that went stale) to any step of a commit makes the writer
  read the branch's head again, leave out what is now there, and build the tree, the
  commit and the ref update anew (tenacity, exponential backoff with jitter). Only when
  every attempt was refused does :meth:`RepoWriter.write` raise, naming the last answer.

A retried ref update that GitHub had applied already (its answer lost) moves the branch
to the commit it points to, which GitHub accepts; a rebuilt commit leaves out the files
that are already there: a file is never committed twice.

Content-creating requests (tree, commit, ref update) are paced per token: every writer of
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
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from blogflow.tokens import Secret
from blogflow.transforms.backups import git_blob_sha

__all__ = [
    "CONFLICT_STATUSES",
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
#: GitHub's answers to a step of a commit that a commit rebuilt on the current head may
#: not get: 409 Conflict, 422 Unprocessable (not a fast forward, a stale base tree).
CONFLICT_STATUSES = frozenset({409, 422})
#: Seconds before the first rebuild of a refused commit; doubles per rebuild, plus jitter.
REBUILD_FIRST_WAIT = 0.25
#: Longest wait between two builds of one commit, in seconds.
REBUILD_MAX_WAIT = 8.0
#: The steps of a commit as an error names them, by PyGithub's method.
_STEPS = {
    "get_git_ref": "reading the branch",
    "get_git_commit": "reading the head commit",
    "get_git_tree": "reading the head tree",
    "create_git_tree": "creating the tree",
    "create_git_commit": "creating the commit",
    "edit": "updating the branch",
}


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
    """The token was refused (401, revoked), cannot see the repository (404) or may not
    write to it (403 that is not a rate limit): a person has to mend it."""


class _CommitRefused(GitHubError):
    """GitHub answered 409 or 422 to a step of a commit: build it again on the head."""

    def __init__(self, message: str, status: int, step: str, answer: str) -> None:
        super().__init__(message, status)
        self.step = step
        self.answer = answer


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
        max_attempts: bounds both the builds of one commit (after a 409 or 422) and the
            attempts of one throttled or failed request.
        write_interval: seconds between two content-creating requests of this token, in
            this process (GitHub asks for at least one second, and allows 80 a minute).
        max_wait: the longest a ``retry-after`` is waited out before giving up.
        rebuild_wait: seconds before the first rebuild of a refused commit; doubles per
            rebuild (plus jitter), up to :data:`REBUILD_MAX_WAIT`.
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
        rebuild_wait: float = REBUILD_FIRST_WAIT,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be positive, got {max_attempts}")
        if write_interval < 0:
            raise ValueError(f"write_interval must not be negative, got {write_interval}")
        if rebuild_wait < 0:
            raise ValueError(f"rebuild_wait must not be negative, got {rebuild_wait}")
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
        self._rebuild_wait = rebuild_wait
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
                if status in CONFLICT_STATUSES:
                    name = getattr(function, "__name__", "")
                    step = _STEPS.get(name, name or "a request")
                    raise _CommitRefused(
                        f"{what} {self._repo_name}: GitHub answered {status} "
                        f"({_message(error)}) to {step}",
                        status,
                        step,
                        _message(error),
                    ) from None
                wait = _retry_wait(error, attempt)
                if status == 403 and wait is None:  # forbidden, not throttled
                    raise RepoAccessError(
                        f"{what} {self._repo_name}: GitHub answered 403 ({_message(error)}): "
                        "the token may not write to the repository",
                        status,
                    ) from None
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

        A commit GitHub refuses with 409 or 422 is built again on the branch's current
        head, after a backoff, up to ``max_attempts`` builds.

        Raises:
            RepoAccessError: for a refused token or a repository it cannot see.
            GitHubError: when GitHub kept refusing after the retries.
        """
        repo = self._repository()
        retrying = Retrying(
            retry=retry_if_exception_type(_CommitRefused),
            stop=stop_after_attempt(self._max_attempts),
            wait=wait_exponential_jitter(
                initial=self._rebuild_wait, max=REBUILD_MAX_WAIT, jitter=self._rebuild_wait
            ),
            before_sleep=self._log_rebuild,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._build(repo, files, message, attempt.retry_state.attempt_number)
        except _CommitRefused as refused:
            raise GitHubError(
                f"writing {self._repo_name}: GitHub refused the commit {self._max_attempts} "
                f"time(s), each time rebuilt on the branch's current head; the last answer "
                f"was {refused.status} ({refused.answer}) to {refused.step}",
                refused.status,
            ) from None
        raise AssertionError("unreachable")

    def _build(
        self, repo: Any, files: Sequence[tuple[str, bytes]], message: str, attempt: int
    ) -> WriteResult:
        """One build of the commit on the branch's current head."""
        branch = repo.default_branch
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
        # Throttled or failed updates are retried (waited, bounded) by _call; a 409 or 422
        # (another writer moved the branch) raises _CommitRefused: write() rebuilds.
        self._call("writing", ref.edit, commit.sha, force=False)
        return WriteResult(commit.sha, tuple(p for p, _ in changed), unchanged, attempt)

    def _log_rebuild(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        _LOGGER.info(
            "%s; rebuilding the commit on the branch's current head in %.2f s (attempt %d/%d)",
            error,
            wait,
            state.attempt_number + 1,
            self._max_attempts,
        )


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
