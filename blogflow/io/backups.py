"""Backups' IO: the posts and links they read, the GitHub writes, the results they keep.

Two DoFns, one on each side of the per-repository shuffle:

- :class:`PlanBackupsFn`: a ``backup_requested`` event → who may export the publication,
  from MongoDB ``publications`` → its posts from ``posts`` and the user's repository from
  ``users`` → a ``backups`` document (``running``) → ``(repository, BackupChunk)`` per
  commit. A request that cannot run ends its backup as ``failed`` with the reason, at
  once: a publication with no ``publications`` document (unknown: nobody is known to own
  it), a requester who is neither its owner nor one of its members (``user 'bob' may not
  back up publication 'pub-1'``: no post of it is read, nothing is committed, and the
  requester's browser is told only that the backup failed, with a total of 0), a
  publication without posts, a user with no linked repository. A request that names a
  stored backup of another user or of another publication is dead-lettered (stage
  ``plan``) and leaves that backup and its items as they are: a backup id names one
  backup.
- :class:`BackupWriter`: writes one chunk with :class:`~blogflow.io.github.RepoWriter`,
  stores each post's result in ``backup_items`` and the counts in ``backups``, and returns
  the progress messages for the browser. The pipeline calls it for one repository at a
  time (a stateful DoFn in streaming, a GroupByKey in batch), so commits to a repository
  never race each other inside a job, and a backup's counts are only ever updated by one
  writer.

Documents::

    publications {_id: publicationId, ownerId, members: [userId, ...]}  (the platform's)
    backups      {_id: backupId, userId, publicationId, total, done, failed, status,
                  error, startedAt, updatedAt, finishedAt}
    backup_items {_id: "<backupId>:<postId>", backupId, postId, status, path, commitSha,
                  error, retryable, at}

``retryable`` is true for a ``failed`` item that a later try may write with nothing
mended (GitHub still failing, throttling or refusing the commit after the retries);
:func:`resumable_backups` lists the backups ``blogflow backups resume`` sends again.

Delivery: at least once, effects exactly once. A replayed request of a ``done`` backup is
dropped; one of a ``running`` or ``failed`` backup resumes it: posts already
``committed`` or ``unchanged`` are skipped, ``failed`` ones are tried again, and a post
whose file is already in the repository makes no commit. Tokens are read from ``users``
by the writer; they never travel through the pipeline, and no error text carries them.
Both DoFns decrypt them with the key of the :class:`~blogflow.tokens.KeySource` they were
given (loaded in ``setup``: a file or a Secret Manager version on the worker, or the
launcher's memory for in-process workers), never ``BLOGFLOW_SECRET_KEY`` of the worker;
without one (built by hand) they fall back to that variable.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics import Metrics
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from blogflow.events import make_event, reject_event
from blogflow.io import mongo, users
from blogflow.io.github import GitHubError, RepoAccessError, RepoWriter
from blogflow.tokens import KeySource, TokenError
from blogflow.transforms.backups import (
    FAILED,
    FINAL_ITEM_STATUSES,
    RUNNING,
    BackupChunk,
    BackupFile,
    BackupPost,
    Publication,
    backup_status,
    may_export,
    plan_backup,
    progress_message,
    should_resume,
)

__all__ = [
    "BACKUPS",
    "ITEMS",
    "POSTS",
    "PUBLICATIONS",
    "BackupWriter",
    "PlanBackupsFn",
    "WriteBackups",
    "REJECTED",
    "load_backup",
    "load_items",
    "load_publication",
    "resumable_backups",
    "resume_request",
    "store_publication",
]

_LOGGER = logging.getLogger(__name__)

BACKUPS, ITEMS, POSTS = "backups", "backup_items", "posts"
PUBLICATIONS = "publications"
#: Tag of PlanBackupsFn's output of requests that are not backups (no userId, or the id
#: of another user's or another publication's backup).
REJECTED = "rejected"
_WRITERS_KEPT = 16


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _replace(db: Any, backup: dict[str, Any]) -> None:
    # The whole document, not a $set: nx-27017 stores a datetime $set into an existing
    # document as text. Only the writer of the backup's repository and the request's
    # planner ever write it.
    db[BACKUPS].replace_one({"_id": backup["_id"]}, backup, upsert=True)


def load_backup(db: Any, backup_id: str) -> dict[str, Any] | None:
    """The ``backups`` document of ``backup_id``, or None."""
    return db[BACKUPS].find_one({"_id": backup_id})  # type: ignore[no-any-return]


def load_publication(db: Any, publication_id: str) -> Publication | None:
    """Who owns ``publication_id`` and who is a member, from ``publications``; None when
    the platform has no document of it."""
    doc = db[PUBLICATIONS].find_one({"_id": publication_id})
    return Publication.from_document(doc) if doc else None


def store_publication(
    db: Any, publication_id: str, owner_id: str, members: Iterable[str] = ()
) -> None:
    """Stores (or replaces) a ``publications`` document, as the platform keeps them: for
    the demo and for setting up tests.

    Raises:
        ValueError: for an empty publication or owner id.
    """
    if not publication_id or not owner_id:
        raise ValueError("a publication needs an id and an owner")
    db[PUBLICATIONS].replace_one(
        {"_id": publication_id},
        {"_id": publication_id, "ownerId": owner_id, "members": sorted(set(members))},
        upsert=True,
    )


def resumable_backups(db: Any, idle: float, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The backups ``blogflow backups resume`` sends again (see
    :func:`~blogflow.transforms.backups.should_resume`): ``running`` ones nothing updated
    for ``idle`` seconds (their job stopped after planning them; in a batch run the request
    is acknowledged by then), and ``failed`` ones with posts a later try may write."""
    cutoff = (now or _now()) - dt.timedelta(seconds=idle)
    found = []
    for backup in db[BACKUPS].find({"status": {"$in": [RUNNING, FAILED]}}):
        retryable = 0
        if backup["status"] == FAILED and not backup.get("error") and backup.get("failed"):
            retryable = db[ITEMS].count_documents(
                {"backupId": backup["_id"], "status": FAILED, "retryable": True}
            )
        if should_resume(backup, retryable, cutoff):
            found.append(backup)
    return sorted(found, key=lambda b: b["_id"])


def resume_request(backup: dict[str, Any]) -> bytes:
    """A fresh ``backup_requested`` event for a stored backup: sending it resumes it."""
    return make_event(
        "backup_requested",
        {"backupId": backup["_id"], "publicationId": backup["publicationId"]},
        user_id=backup["userId"],
    ).to_json()


def load_items(db: Any, backup_id: str) -> list[dict[str, Any]]:
    """The ``backup_items`` of ``backup_id``, by post id."""
    return sorted(db[ITEMS].find({"backupId": backup_id}), key=lambda item: item["postId"])


def _rejected(event: Any, reason: str) -> beam.pvalue.TaggedOutput:
    """The request as a dead letter: its raw message and source id when ParseEvents kept
    them (``keep_source=True``)."""
    return beam.pvalue.TaggedOutput(REJECTED, reject_event(event, "plan", reason))


class PlanBackupsFn(beam.DoFn):
    """``BackupRequested`` → ``(repository, BackupChunk)`` per commit; ``(userId,
    message)`` progress on the ``progress`` output; requests without a user, or naming a
    backup of another user or publication, to ``rejected``."""

    PROGRESS = "progress"

    def __init__(
        self,
        uri: str | None,
        database: str,
        *,
        posts_per_commit: int,
        max_post_bytes: int,
        secret_key: KeySource | None = None,
    ) -> None:
        self._uri = uri
        self._secret_key = secret_key
        self._key: str | None = None
        self._database = database
        self._posts_per_commit = posts_per_commit
        self._max_post_bytes = max_post_bytes
        self._planned = Metrics.counter("blogflow", "backups_planned")
        self._refused = Metrics.counter("blogflow", "backups_refused")
        self._replays = Metrics.counter("blogflow", "backup_replays_dropped")

    def setup(self) -> None:
        self._key = self._secret_key.load() if self._secret_key is not None else None
        self._client, self._db = mongo.connect(self._uri, self._database)

    def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

    def process(self, event: Any) -> Iterator[Any]:
        backup_id, publication_id = event.data.backupId, event.data.publicationId
        if not event.userId:
            yield _rejected(event, "backup_requested has no userId: whose repository is unknown")
            return
        user_id = event.userId
        existing = load_backup(self._db, backup_id)
        if existing is not None and existing.get("userId") != user_id:
            yield _rejected(event, f"backup {backup_id!r} belongs to another user")
            return
        if existing is not None and existing.get("publicationId") != publication_id:
            yield _rejected(
                event,
                f"backup {backup_id!r} is of publication {existing.get('publicationId')!r}, "
                f"not {publication_id!r}: a backup id names one backup; request a new id",
            )
            return
        if existing is not None and existing.get("status") not in (RUNNING, FAILED):
            self._replays.inc()
            _LOGGER.info("backup %s is %s already; request dropped", backup_id, existing["status"])
            return
        error = self._refusal(user_id, publication_id)
        posts = []
        if error is None:
            posts = [
                BackupPost.from_document(doc)
                for doc in self._db[POSTS].find({"publicationId": publication_id})
            ]
        total = len(posts)
        repo = ""
        if error is None and not posts:
            error = f"publication {publication_id!r} has no posts"
        elif error is None:
            try:
                repo = users.load_link(self._db, user_id, secret_key=self._key).repo
            except (users.UserNotLinkedError, TokenError) as refused:
                error = str(refused)
        now = _now()
        stored = {
            "done": 0,
            "failed": 0,
            "startedAt": now,
            **(existing or {}),
            "_id": backup_id,
            "userId": user_id,
            "publicationId": publication_id,
            # a refused request reads no post: it learns nothing of the publication
            "total": int((existing or {}).get("total", 0)) if error else total,
            "status": FAILED if error else RUNNING,
            "error": error,
            "updatedAt": now,
            "finishedAt": now if error else None,
        }
        _replace(self._db, stored)
        if error:
            self._refused.inc()
            _LOGGER.info("backup %s refused: %s", backup_id, error)
            yield beam.pvalue.TaggedOutput(
                self.PROGRESS,
                (user_id, progress_message(backup_id, None, FAILED, 0, stored["total"])),
            )
            return
        self._planned.inc()
        yield beam.pvalue.TaggedOutput(
            self.PROGRESS,
            (user_id, progress_message(backup_id, None, RUNNING, stored["done"], total)),
        )
        for chunk in plan_backup(
            backup_id,
            user_id,
            repo,
            posts,
            posts_per_commit=self._posts_per_commit,
            max_post_bytes=self._max_post_bytes,
        ):
            yield repo.lower(), chunk

    def _refusal(self, user_id: str, publication_id: str) -> str | None:
        """Why ``user_id`` may not back up ``publication_id``, or None when they may."""
        publication = load_publication(self._db, publication_id)
        if publication is None:
            return (
                f"publication {publication_id!r} is unknown: it has no 'publications' "
                "document naming its owner and members"
            )
        if not may_export(user_id, publication):
            return f"user {user_id!r} may not back up publication {publication_id!r}"
        return None


class BackupWriter:
    """Writes chunks of one repository after another, recording every post's result.

    Owns a MongoDB client and a few :class:`RepoWriter` s; not thread-safe (the pipeline
    gives each repository to one caller at a time).
    """

    def __init__(
        self,
        uri: str | None,
        database: str,
        *,
        api_url: str | None,
        write_interval: float,
        max_attempts: int = 5,
        secret_key: KeySource | None = None,
    ) -> None:
        self._key = secret_key.load() if secret_key is not None else None
        self._client, self._db = mongo.connect(uri, database)
        self._api_url = api_url
        self._write_interval = write_interval
        self._max_attempts = max_attempts
        self._writers: OrderedDict[tuple[str, str], RepoWriter] = OrderedDict()
        #: The commit the latest :meth:`write` made, if it made one.
        self.last_commit: str | None = None
        self.committed = Metrics.counter("blogflow", "backup_posts_committed")
        self.unchanged = Metrics.counter("blogflow", "backup_posts_unchanged")
        self.failed = Metrics.counter("blogflow", "backup_posts_failed")
        self.commits = Metrics.counter("blogflow", "backup_commits")

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._client.close()

    def _writer(self, repo: str, user_id: str) -> RepoWriter:
        # every chunk: a relinked token is used
        link = users.load_link(self._db, user_id, secret_key=self._key)
        key = (repo, link.token.digest())
        writer = self._writers.pop(key, None)
        if writer is None:
            writer = RepoWriter(
                repo,
                link.token,
                api_url=self._api_url,
                max_attempts=self._max_attempts,
                write_interval=self._write_interval,
            )
        self._writers[key] = writer
        while len(self._writers) > _WRITERS_KEPT:
            self._writers.popitem(last=False)[1].close()
        return writer

    def write(self, chunk: BackupChunk) -> list[tuple[str, dict[str, Any]]]:
        """Writes what of ``chunk`` has not ended yet; returns ``(userId, message)`` per
        post that ended now."""
        self.last_commit = None
        ended = {
            item["postId"]
            for item in self._db[ITEMS].find(
                {"_id": {"$in": [f"{chunk.backup_id}:{f.post_id}" for f in chunk.files]}}
            )
            if item.get("status") in FINAL_ITEM_STATUSES
        }
        pending = [f for f in chunk.files if f.post_id not in ended]
        if not pending:
            return []
        results = self._commit(chunk, [f for f in pending if f.error is None])
        now = _now()
        items = []
        for file in pending:
            status, sha, error, retryable = results.get(
                file.post_id, (FAILED, None, file.error, False)
            )
            items.append(
                {
                    "_id": f"{chunk.backup_id}:{file.post_id}",
                    "backupId": chunk.backup_id,
                    "postId": file.post_id,
                    "status": status,
                    "path": file.path,
                    "commitSha": sha,
                    "error": error,
                    "retryable": retryable,
                    "at": now,
                }
            )
        self._db[ITEMS].bulk_write(
            [mongo.ReplaceOne({"_id": i["_id"]}, i, upsert=True) for i in items]
        )
        return self._progress(chunk, items, now)

    def _commit(
        self, chunk: BackupChunk, files: list[BackupFile]
    ) -> dict[str, tuple[str, str | None, str | None, bool]]:
        """``postId → (status, commitSha, error, retryable)`` of the files written as one
        commit. A failure is retryable when GitHub kept failing, throttling or refusing
        the commit; a refused token, a repository it cannot see, no link or an
        undecryptable token need a person first."""
        if not files:
            return {}
        try:
            writer = self._writer(chunk.repo, chunk.user_id)
            result = writer.write(
                [(f.path or "", f.content) for f in files],
                f"Back up {len(files)} post(s) (backup {chunk.backup_id}, part {chunk.part + 1})",
            )
        except (users.UserNotLinkedError, TokenError, GitHubError) as error:
            _LOGGER.warning("backup %s: %d post(s) failed: %s", chunk.backup_id, len(files), error)
            retryable = isinstance(error, GitHubError) and not isinstance(error, RepoAccessError)
            return {f.post_id: (FAILED, None, str(error), retryable) for f in files}
        if result.commit_sha:
            self.commits.inc()
            self.last_commit = result.commit_sha
        written = set(result.written)
        return {
            f.post_id: ("committed", result.commit_sha, None, False)
            if f.path in written
            else ("unchanged", None, None, False)
            for f in files
        }

    def _progress(
        self, chunk: BackupChunk, items: list[dict[str, Any]], now: dt.datetime
    ) -> list[tuple[str, dict[str, Any]]]:
        backup = load_backup(self._db, chunk.backup_id) or {}
        total = int(backup.get("total", 0))
        done = self._db[ITEMS].count_documents(
            {"backupId": chunk.backup_id, "status": {"$in": sorted(FINAL_ITEM_STATUSES)}}
        )
        failed = self._db[ITEMS].count_documents({"backupId": chunk.backup_id, "status": FAILED})
        status = backup_status(total, done, failed)
        finished = now if status != RUNNING else None
        _replace(
            self._db,
            {
                **backup,
                "done": done,
                "failed": failed,
                "status": status,
                "updatedAt": now,
                "finishedAt": finished,
            },
        )
        messages = []
        done_before = done - sum(1 for i in items if i["status"] in FINAL_ITEM_STATUSES)
        for item in items:
            counter = {"committed": self.committed, "unchanged": self.unchanged}
            counter.get(item["status"], self.failed).inc()
            if item["status"] in FINAL_ITEM_STATUSES:
                done_before += 1
            messages.append(
                (
                    chunk.user_id,
                    progress_message(
                        chunk.backup_id, item["postId"], item["status"], done_before, total
                    ),
                )
            )
        return messages


class _WriterFn(beam.DoFn):
    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings

    def setup(self) -> None:
        self._writer = BackupWriter(**self._settings)

    def teardown(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()

    def display_data(self) -> dict[str, Any]:
        source = self._settings.get("secret_key")
        return {
            "api_url": self._settings["api_url"] or "GITHUB_API_URL",
            "secret_key": repr(source) if source is not None else "BLOGFLOW_SECRET_KEY",
        }


class _WriteGroupedFn(_WriterFn):
    """Batch: one repository's chunks, grouped, written one after another."""

    def process(self, group: tuple[str, Iterable[BackupChunk]]) -> Iterator[Any]:
        for chunk in sorted(group[1], key=lambda c: (c.backup_id, c.part)):
            yield from self._writer.write(chunk)


class _WriteStatefulFn(_WriterFn):
    """Streaming: Beam runs a stateful DoFn one element at a time per key, so the
    repository's chunks are written one after another as they arrive. The state keeps
    the last commit this job made to the repository (shown in the logs when the next
    one lands)."""

    LAST_COMMIT = ReadModifyWriteStateSpec("last_commit", StrUtf8Coder())

    def process(
        self,
        element: tuple[str, BackupChunk],
        last_commit: Any = beam.DoFn.StateParam(LAST_COMMIT),
    ) -> Iterator[Any]:
        repo, chunk = element
        messages = self._writer.write(chunk)
        if self._writer.last_commit:
            _LOGGER.info(
                "%s: commit %s follows %s", repo, self._writer.last_commit, last_commit.read()
            )
            last_commit.write(self._writer.last_commit)
        yield from messages


class WriteBackups(beam.PTransform):
    """Writes planned chunks to GitHub, serialised per repository, and records results.

    Input: ``(repository, BackupChunk)`` from :class:`PlanBackupsFn`. Output: ``(userId,
    progress message)`` per post, for :class:`~blogflow.io.notify.NotifyProgress`.

    Args:
        streaming: a stateful DoFn per repository (streaming) or a GroupByKey (batch).
        mongo_uri, database: where ``backups``, ``backup_items`` and ``users`` live.
        api_url: the GitHub API; ``GITHUB_API_URL`` or api.github.com by default.
        write_interval: seconds between content-creating requests of one token.
        secret_key: where the workers read the key of the stored tokens; None:
            ``BLOGFLOW_SECRET_KEY`` where they run.
    """

    def __init__(
        self,
        *,
        streaming: bool,
        mongo_uri: str | None,
        database: str,
        api_url: str | None = None,
        write_interval: float = 1.0,
        secret_key: KeySource | None = None,
    ) -> None:
        super().__init__()
        if write_interval < 0:
            raise ValueError(f"write_interval must not be negative, got {write_interval}")
        self._streaming = streaming
        self._settings = {
            "uri": mongo_uri,
            "database": database,
            "api_url": api_url,
            "write_interval": write_interval,
            "secret_key": secret_key,
        }

    def expand(self, chunks: beam.PCollection) -> beam.PCollection:
        if self._streaming:
            # keys are repository names: str, so encoded deterministically for the state
            return chunks | "WritePerRepo" >> beam.ParDo(
                _WriteStatefulFn(self._settings)
            ).with_input_types(tuple[str, Any])
        return (
            chunks
            | "GroupByRepo" >> beam.GroupByKey()
            | "WritePerRepo" >> beam.ParDo(_WriteGroupedFn(self._settings))
        )
