"""The backup pipeline: every post of a publication to the user's GitHub repository.

    source ─► ParseEvents ─► PlanBackups ─► WriteBackups ─────────► NotifyProgress
                  │              │          (per repository:          (browser)
                  │              │           one commit per chunk)
                  │              └─ refused / started ──────────────►
                  └─ rejected ──────────────────────────────────────► WriteDeadLetters

``backup_requested {backupId, publicationId}`` (the envelope's ``userId`` is whose
repository; it must be the publication's owner or a member, as MongoDB ``publications``
says) → the publication's posts from MongoDB ``posts`` → chunks of
``--posts-per-commit`` posts → keyed by repository → written one chunk after another per
repository (a stateful DoFn when streaming, a GroupByKey in batch) → MongoDB ``backups``
and ``backup_items`` → progress messages to the user's browsers.

Run it with ``blogflow run backup --source sqs://QUEUE --drain`` or
``python -m blogflow.pipelines.backup --help``. GitHub tokens are read from MongoDB
``users`` (``blogflow users link``), decrypted on the workers with the key of
``--secret-key-file`` or ``--secret-key-secret`` (or, for workers in the launching
process, its ``BLOGFLOW_SECRET_KEY``; see :mod:`blogflow.options`).

Replays are safe: a backup that is ``done`` is not written again, and a resumed one
(``running`` or ``failed``) skips the posts that already ended well. In batch on
FnApiRunner the source's messages are acknowledged once the backup is planned (stored as
``running`` in MongoDB), before its commits: should the job stop between the two,
``blogflow backups resume`` sends the requests of such stalled backups again (and of
``failed`` ones whose posts GitHub kept failing), and the next run finishes them.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from blogflow.io.backups import REJECTED as PLAN_REJECTED
from blogflow.io.backups import PlanBackupsFn, WriteBackups
from blogflow.io.deadletter import WriteDeadLetters
from blogflow.io.github import GITHUB_API
from blogflow.io.notify import NotifyProgress
from blogflow.options import SourceOptions, StoreOptions, connections, read_source
from blogflow.pipelines.job import Job
from blogflow.tokens import KeySource
from blogflow.transforms.parsing import REJECTED, ParseEvents

__all__ = ["NAME", "BackUpPublications", "BackupOptions", "JOB", "build", "run"]

_LOGGER = logging.getLogger(__name__)

NAME = "backup"
NOTIFY_CHOICES = ("redis", "apigateway", "none")


class BackupOptions(PipelineOptions):
    """How backups are written to GitHub and where progress goes."""

    github_api_url: str | None  # a flag: read and resolved through PipelineOptions

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("backup")
        group.add_argument(
            "--posts-per-commit",
            "--posts_per_commit",
            dest="posts_per_commit",
            type=int,
            default=25,
            help="posts written by one commit (default: %(default)s)",
        )
        group.add_argument(
            "--max-post-bytes",
            "--max_post_bytes",
            dest="max_post_bytes",
            type=int,
            default=1 << 20,
            help="a post's file larger than this fails instead of being written "
            "(default: %(default)s)",
        )
        group.add_argument(
            "--github-api-url",
            "--github_api_url",
            dest="github_api_url",
            default=None,
            help="GitHub's REST API, resolved at launch (default: $GITHUB_API_URL, else "
            f"{GITHUB_API})",
        )
        group.add_argument(
            "--write-interval",
            "--write_interval",
            dest="write_interval",
            type=float,
            default=1.0,
            help="seconds between two content-creating GitHub requests of one token, as "
            "GitHub asks (default: %(default)s)",
        )
        group.add_argument(
            "--notify",
            choices=NOTIFY_CHOICES,
            default="redis",
            help="where progress goes: redis (the WebSocket notifier, `blogflow notifier "
            "serve`), apigateway (an API Gateway WebSocket API: --apigateway-endpoint and "
            "--connections-table) or none (default: %(default)s)",
        )
        group.add_argument(
            "--apigateway-endpoint",
            "--apigateway_endpoint",
            dest="apigateway_endpoint",
            default=None,
            help="with --notify apigateway: the WebSocket API stage's callback URL, "
            "https://ID.execute-api.REGION.amazonaws.com/STAGE",
        )
        group.add_argument(
            "--connections-table",
            "--connections_table",
            dest="connections_table",
            default=None,
            help="with --notify apigateway: the DynamoDB table of connectionId → userId "
            "(index byUserId)",
        )

    def resolve(self, environ: Mapping[str, str]) -> None:
        """At launch: ``--github-api-url``, else ``GITHUB_API_URL``, else GitHub's API."""
        self.github_api_url = self.github_api_url or environ.get("GITHUB_API_URL") or GITHUB_API


class BackUpPublications(beam.PTransform):
    """Backs up the publications of ``backup_requested`` events.

    Input: parsed ``BackupRequested`` events. Output: a dict with ``"progress"``,
    ``(userId, message)`` for the browser, and ``"rejected"``: requests that name no user
    or the id of another user's or another publication's backup, as
    :class:`~blogflow.events.Rejection` s (the raw message when ParseEvents kept it).
    """

    def __init__(
        self,
        *,
        streaming: bool,
        mongo_uri: str | None,
        database: str,
        api_url: str | None = None,
        posts_per_commit: int = 25,
        max_post_bytes: int = 1 << 20,
        write_interval: float = 1.0,
        secret_key: KeySource | None = None,
    ) -> None:
        super().__init__()
        if posts_per_commit < 1:
            raise ValueError(f"--posts-per-commit must be positive, got {posts_per_commit}")
        if max_post_bytes < 1:
            raise ValueError(f"--max-post-bytes must be positive, got {max_post_bytes}")
        self._streaming = streaming
        self._mongo_uri = mongo_uri
        self._database = database
        self._api_url = api_url
        self._posts_per_commit = posts_per_commit
        self._max_post_bytes = max_post_bytes
        self._write_interval = write_interval
        self._secret_key = secret_key

    def expand(self, events: beam.PCollection) -> dict[str, beam.PCollection]:
        planned = events | "PlanBackups" >> beam.ParDo(
            PlanBackupsFn(
                self._mongo_uri,
                self._database,
                posts_per_commit=self._posts_per_commit,
                max_post_bytes=self._max_post_bytes,
                secret_key=self._secret_key,
            )
        ).with_outputs(PlanBackupsFn.PROGRESS, PLAN_REJECTED, main="chunks")
        written = planned.chunks | "WriteBackups" >> WriteBackups(
            streaming=self._streaming,
            mongo_uri=self._mongo_uri,
            database=self._database,
            api_url=self._api_url,
            write_interval=self._write_interval,
            secret_key=self._secret_key,
        )
        progress = (planned[PlanBackupsFn.PROGRESS], written) | "AllProgress" >> beam.Flatten()
        return {"progress": progress, "rejected": planned[PLAN_REJECTED]}


def build(pipeline: beam.Pipeline, options: PipelineOptions, *, streaming: bool) -> None:
    """Adds the backup job to ``pipeline``."""
    stores = options.view_as(StoreOptions)
    backup = options.view_as(BackupOptions)
    settings = connections(options)
    records = pipeline | "ReadSource" >> read_source(options)
    # keep_source: a request PlanBackups rejects is dead-lettered as the message received
    parsed = records | "ParseEvents" >> ParseEvents(
        accept={"backup_requested"}, event_time=False, keep_source=True
    )
    backups = parsed.events | "BackUpPublications" >> BackUpPublications(
        streaming=streaming,
        mongo_uri=stores.mongo_uri,
        database=stores.mongo_db,
        api_url=backup.github_api_url,
        posts_per_commit=backup.posts_per_commit,
        max_post_bytes=backup.max_post_bytes,
        write_interval=backup.write_interval,
        secret_key=settings.secret_key,
    )
    if backup.notify == "redis":
        _ = backups["progress"] | "NotifyProgress" >> NotifyProgress(
            "redis", redis_url=stores.redis_url, prefix=stores.redis_prefix
        )
    elif backup.notify == "apigateway":
        _ = backups["progress"] | "NotifyProgress" >> NotifyProgress(
            "apigateway",
            endpoint_url=backup.apigateway_endpoint,
            table=backup.connections_table,
            aws=settings.aws,
        )
    _ = (parsed[REJECTED], backups["rejected"]) | "WriteDeadLetters" >> WriteDeadLetters(
        NAME, mongo_uri=stores.mongo_uri, database=stores.mongo_db
    )


JOB = Job(
    NAME,
    "Back up every post of the requested publications to the users' GitHub "
    "repositories (many posts per commit, one writer per repository), record each post's "
    "result in MongoDB 'backups' and 'backup_items', and push progress to the browser. "
    "Bad requests go to MongoDB 'deadletters'.",
    (
        SourceOptions,
        StoreOptions,
        BackupOptions,
    ),
    build,
    needs_secret_key=True,
)
run = JOB.run

if __name__ == "__main__":
    JOB.main()
