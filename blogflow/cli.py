"""The ``blogflow`` command line: run pipelines, produce events, read results.

    blogflow local up                                  start Redis, MongoDB, SQS... locally
    blogflow sum 3 1 4 1 5 --queue sums                send an array as packets; prints arrayId
    blogflow run summing --source sqs://sums --drain   sum what is on the queue, then stop
    blogflow result ARRAY_ID                           print a stored sum
    blogflow deadletters list                          what was rejected, and why

Clients honour the standard variables ``REDIS_URL``, ``MONGODB_URI``, ``AWS_ENDPOINT_URL``,
``AWS_*`` and ``PUBSUB_EMULATOR_HOST``; ``blogflow local up`` writes them to
``.blogflow/local.env`` and every command reads that file when the variables are unset.
``blogflow run`` resolves them once, at launch, into the job's options (a flag such as
``--mongo-uri`` wins): its workers read no variable (:mod:`blogflow.options`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from blogflow.local.cli import local

__all__ = ["cli", "main"]

_LOGGER = logging.getLogger(__name__)

#: Pipelines ``blogflow run`` knows, by name: module path with a ``JOB`` (a ``Job``).
PIPELINES = {
    "summing": "blogflow.pipelines.summing",
    "feed": "blogflow.pipelines.feed",
    "backup": "blogflow.pipelines.backup",
}

_DEFAULT_ENV_FILE = Path(".blogflow/local.env")


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Beam warns at import about Google Cloud clients blogflow does not use.
    logging.getLogger("apache_beam.io.filesystems").setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda record: "apitools not found" not in record.getMessage())


def _load_local_env(env_file: Path) -> None:
    """Fills unset variables from the local stack's env file, when there is one."""
    if not env_file.is_file():
        return
    from blogflow.local.stack import load_env

    for key, value in load_env(env_file).items():
        os.environ.setdefault(key, value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=_DEFAULT_ENV_FILE,
    show_default=True,
    help="KEY=VALUE file whose values fill unset variables (written by `blogflow local up`).",
)
def cli(verbose: int, env_file: Path) -> None:
    """blogflow: Beam pipelines that keep a blogging platform's sums, feeds and backups current."""
    _configure_logging(verbose)
    _load_local_env(env_file)


cli.add_command(local)


@cli.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.argument("pipeline", type=click.Choice(sorted(PIPELINES)), required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, pipeline: str | None, args: tuple[str, ...]) -> None:
    """Run a pipeline: blogflow run PIPELINE --source URI [--drain] [options].

    `blogflow run PIPELINE --help` lists the pipeline's options. Connection settings
    (--mongo-uri, --redis-url, --github-api-url, --aws-endpoint-url, --aws-region,
    --pubsub-emulator-host, ...) are resolved at launch from the flag, else the
    environment (and the env file), else the default, and carried by the job to its
    workers; the secret key reaches them as --secret-key-file or --secret-key-secret.
    """
    if pipeline is None:
        click.echo(ctx.get_help())
        click.echo("\nPipelines: " + ", ".join(sorted(PIPELINES)))
        ctx.exit(0 if "--help" in args or "-h" in args or not args else 2)
    from blogflow.pipelines.job import JobStopped

    module = importlib.import_module(PIPELINES[pipeline])
    try:
        result = module.JOB.run(list(args))
    except JobStopped as stopped:
        click.echo(str(stopped), err=True)
        ctx.exit(stopped.exit_code)
    _echo_metrics(result)


def _echo_metrics(result: Any) -> None:
    """Prints the run's blogflow counters, e.g. ``events_parsed: 5``."""
    try:
        counters = result.metrics().query()["counters"]
    except Exception:  # noqa: BLE001 - some runners do not report metrics
        return
    totals: dict[str, int] = {}
    for counter in counters:
        if counter.key.metric.namespace == "blogflow":
            name = counter.key.metric.name
            totals[name] = totals.get(name, 0) + (counter.committed or counter.attempted or 0)
    for name in sorted(totals):
        click.echo(f"{name}: {totals[name]}")


@cli.command("sum", context_settings={"ignore_unknown_options": True}, no_args_is_help=True)
@click.argument("values", nargs=-1, type=int, required=True)
@click.option("--queue", required=True, help="SQS queue name or URL to send the packets to.")
@click.option("--create-queue", is_flag=True, help="Create the queue first if it does not exist.")
@click.option("--array-id", default=None, help="Use this arrayId instead of a fresh UUID.")
@click.option("--user-id", default=None, help="userId of the request's envelopes.")
def sum_command(
    values: tuple[int, ...],
    queue: str,
    create_queue: bool,
    array_id: str | None,
    user_id: str | None,
) -> None:
    """Split VALUES into sum_packet events, send them to SQS, print the arrayId.

    Each element becomes one packet (arrayId, packetId, packetValue, arrayLength), sent
    with SQS batch calls. The stored sum, once complete, is twice the sum of VALUES.
    """
    from blogflow.events import EventRejected
    from blogflow.io import sqs
    from blogflow.transforms.summing import split_array

    try:
        array_id, events = split_array(list(values), array_id=array_id, user_id=user_id)
    except EventRejected as error:
        raise click.BadParameter(error.reason, param_hint="VALUES") from None
    try:
        if create_queue:
            sqs.create_queue(queue)
        sent = sqs.send_messages(queue, [event.to_json() for event in events])
    except Exception as error:  # noqa: BLE001 - any client error, said plainly
        raise click.ClickException(f"sending to queue {queue!r} failed: {error}") from None
    _LOGGER.info("sent %d packets of array %s to %s", sent, array_id, queue)
    click.echo(array_id)


@cli.command(no_args_is_help=True)
@click.argument("file", type=click.File("rb"))
@click.option(
    "--to",
    "target",
    required=True,
    help="Where to send the events: kinesis://STREAM, pubsub://TOPIC or sqs://QUEUE.",
)
@click.option("--create", is_flag=True, help="Create the stream, topic or queue if missing.")
@click.option(
    "--shards",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Shards of a Kinesis stream --create makes.",
)
def publish(file: Any, target: str, create: bool, shards: int) -> None:
    """Send the events of a JSON-lines FILE ('-' for stdin), one per line, as they are.

    Lines are not validated here: a bad one reaches the pipeline, which dead-letters it.
    """
    from blogflow.io import publish as publishing

    try:
        if create:
            publishing.create_target(target, shards=shards)
        sent = 0
        for sent in publishing.publish(target, publishing.read_lines(file)):
            click.echo(f"\rsent {sent}", nl=False, err=True)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--to") from None
    except Exception as error:  # noqa: BLE001 - any client error, said plainly
        raise click.ClickException(f"publishing to {target} failed: {error}") from None
    click.echo("", err=True)
    click.echo(f"published {sent} events to {target}")


_MONGO_OPTIONS = [
    click.option(
        "--mongo-uri", default=None, help="MongoDB URI.  [default: $MONGODB_URI or localhost]"
    ),
    click.option("--mongo-db", default="blogflow", show_default=True, help="MongoDB database."),
]


def _mongo_options(function: Any) -> Any:
    for option in reversed(_MONGO_OPTIONS):
        function = option(function)
    return function


def _database(mongo_uri: str | None, mongo_db: str) -> Any:
    from blogflow.io import mongo

    _, db = mongo.connect(mongo_uri, mongo_db)
    return db


@cli.command(no_args_is_help=True)
@click.argument("array_id")
@_mongo_options
@click.option("--json", "as_json", is_flag=True, help="Print the stored document as JSON.")
def result(array_id: str, mongo_uri: str | None, mongo_db: str, as_json: bool) -> None:
    """Print the stored sum of ARRAY_ID (exit status 1 when there is none yet)."""
    from blogflow.io.sums import COLLECTION

    doc = _database(mongo_uri, mongo_db)[COLLECTION].find_one(
        {"_id": array_id}, {"seen": False, "rev": False}
    )
    if doc is None:
        raise click.ClickException(f"no sum stored for array {array_id!r}")
    if as_json:
        click.echo(json.dumps(doc, default=str))
        return
    click.echo(
        f"array {doc['_id']}: sum={doc['sum']} status={doc['status']} "
        f"packets={doc['packetsSeen']}/{doc['arrayLength']} updatedAt={doc['updatedAt']}"
    )


@cli.group()
def backups() -> None:
    """Inspect backups to GitHub (MongoDB 'backups' and 'backup_items')."""


@backups.command("show", no_args_is_help=True)
@click.argument("backup_id")
@_mongo_options
@click.option("--json", "as_json", is_flag=True, help="Print the backup and its items as JSON.")
def backups_show(backup_id: str, mongo_uri: str | None, mongo_db: str, as_json: bool) -> None:
    """Print BACKUP_ID's status and every post's result (exit status 1 when unknown)."""
    from blogflow.io.backups import load_backup, load_items

    db = _database(mongo_uri, mongo_db)
    doc = load_backup(db, backup_id)
    if doc is None:
        raise click.ClickException(f"no backup {backup_id!r} is stored")
    items = load_items(db, backup_id)
    if as_json:
        click.echo(json.dumps({**doc, "items": items}, default=str))
        return
    click.echo(
        f"backup {doc['_id']} of {doc.get('publicationId')} for {doc.get('userId')}: "
        f"{doc.get('status')}, {doc.get('done')}/{doc.get('total')} posts backed up, "
        f"{doc.get('failed')} failed; started {doc.get('startedAt')}, "
        f"finished {doc.get('finishedAt') or '-'}"
    )
    if doc.get("error"):
        click.echo(f"error: {doc['error']}")
    for item in items:
        sha = (item.get("commitSha") or "")[:12]
        detail = item.get("error") or item.get("path") or ""
        click.echo(f"  {item['status']:<9} {item['postId']}  {detail}  {sha}".rstrip())


@backups.command("resume", no_args_is_help=True)
@click.option(
    "--to",
    "target",
    required=True,
    help="Where the backup job reads requests: sqs://QUEUE, kinesis://STREAM or pubsub://TOPIC.",
)
@click.option(
    "--idle",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Resume 'running' backups nothing has updated for this many seconds.",
)
@click.option("--dry-run", is_flag=True, help="List the backups, send nothing.")
@_mongo_options
def backups_resume(
    target: str, idle: float, dry_run: bool, mongo_uri: str | None, mongo_db: str
) -> None:
    """Send again the request of every backup a new try can finish; the backup job
    then writes only the posts that did not end well.

    Sent: 'running' backups nothing updated for --idle seconds (their job stopped after
    planning them), and 'failed' backups with posts that GitHub kept failing, throttling
    or refusing after the retries (sent at once, whatever --idle says).

    Not sent: backups refused as a whole (unknown publication, a user who is neither its
    owner nor a member, no posts, no linked repository), and posts that failed for a
    refused token, a missing repository, an unsafe id or their size: mend the cause, then
    request the backup again.
    """
    from blogflow.io import publish as publishing
    from blogflow.io.backups import resumable_backups, resume_request

    stalled = resumable_backups(_database(mongo_uri, mongo_db), idle)
    for doc in stalled:
        click.echo(
            f"backup {doc['_id']} of {doc.get('publicationId')} for {doc.get('userId')}: "
            f"{doc.get('status')}, {doc.get('done')}/{doc.get('total')} done, "
            f"{doc.get('failed')} failed, last updated {doc.get('updatedAt')}"
        )
    if dry_run or not stalled:
        click.echo(f"{len(stalled)} backup(s) to resume; nothing sent")
        return
    try:
        requests = [resume_request(doc) for doc in stalled]
        sent = max(publishing.publish(target, requests), default=0)  # running totals
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--to") from None
    except Exception as error:  # noqa: BLE001 - any client error, said plainly
        raise click.ClickException(f"sending to {target} failed: {error}") from None
    click.echo(f"sent {sent} request(s) to {target}")


@cli.group()
def deadletters() -> None:
    """Inspect the messages pipelines rejected (MongoDB 'deadletters')."""


_PIPELINE_FILTER = click.option(
    "--pipeline", default=None, help="Only dead letters of this pipeline, e.g. summing."
)


def _dead_letter_filter(pipeline: str | None) -> dict[str, str]:
    return {"pipeline": pipeline} if pipeline else {}


@deadletters.command("count")
@_PIPELINE_FILTER
@_mongo_options
def deadletters_count(pipeline: str | None, mongo_uri: str | None, mongo_db: str) -> None:
    """Print how many dead letters are stored."""
    from blogflow.io.deadletter import COLLECTION

    click.echo(
        _database(mongo_uri, mongo_db)[COLLECTION].count_documents(_dead_letter_filter(pipeline))
    )


@deadletters.command("list")
@_PIPELINE_FILTER
@_mongo_options
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="One JSON document per line.")
def deadletters_list(
    pipeline: str | None, mongo_uri: str | None, mongo_db: str, limit: int, as_json: bool
) -> None:
    """List the newest dead letters: when, pipeline, stage, error and payload."""
    from blogflow.io.deadletter import COLLECTION

    cursor = (
        _database(mongo_uri, mongo_db)[COLLECTION]
        .find(_dead_letter_filter(pipeline))
        .sort("receivedAt", -1)
        .limit(limit)
    )
    for doc in cursor:
        payload = doc["payload"]
        if isinstance(payload, bytes):
            payload = payload.decode("utf-8", "replace")
        if as_json:
            click.echo(json.dumps({**doc, "payload": payload}, default=str))
            continue
        shown = payload if len(payload) <= 80 else payload[:77] + "..."
        click.echo(
            f"{doc['receivedAt']:%Y-%m-%d %H:%M:%S} {doc['pipeline']}/{doc['stage']}: "
            f"{doc['error']}\n    payload: {shown!r}"
        )


@cli.group()
def users() -> None:
    """Link users to the GitHub repositories their posts are backed up to."""


@users.command("link", no_args_is_help=True)
@click.argument("user_id")
@click.option("--repo", required=True, help="The repository to back up to, OWNER/NAME.")
@click.option(
    "--token-stdin",
    is_flag=True,
    required=True,
    help="Read the GitHub token from standard input (never from the command line, where "
    "it would show in the shell history and the process list).",
)
@_mongo_options
def users_link(
    user_id: str, repo: str, token_stdin: bool, mongo_uri: str | None, mongo_db: str
) -> None:
    """Store USER_ID's repository and GitHub token, the token encrypted with
    $BLOGFLOW_SECRET_KEY."""
    from blogflow.io.users import link_user
    from blogflow.tokens import Secret, TokenError

    token = sys.stdin.readline().strip()
    if not token:
        raise click.UsageError("no token on standard input")
    try:
        link_user(_database(mongo_uri, mongo_db), user_id, repo, Secret(token))
    except (ValueError, TokenError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"linked {user_id} to {repo} (token stored encrypted)")


@cli.group()
def feed() -> None:
    """Read or purge the personal feeds in Redis ('feed:{userId}')."""


_REDIS_OPTIONS = [
    click.option("--redis-url", default=None, help="Redis URL.  [default: $REDIS_URL]"),
    click.option("--redis-prefix", default="", help="Prefix of the keys, as the job wrote them."),
]


def _redis_options(function: Any) -> Any:
    for option in reversed(_REDIS_OPTIONS):
        function = option(function)
    return function


@feed.command("show", no_args_is_help=True)
@click.argument("user_id")
@_redis_options
@click.option("--json", "as_json", is_flag=True, help="Print the feed as a JSON array.")
def feed_show(user_id: str, redis_url: str | None, redis_prefix: str, as_json: bool) -> None:
    """Print USER_ID's feed, best post first, and when and from which window it was
    computed (exit status 1 when there is none)."""
    from blogflow.io import redis
    from blogflow.io.feeds import feed_key, read_feed, read_feedmeta

    client = redis.connect(redis_url)
    try:
        posts = read_feed(client, user_id, redis_prefix)
        ttl = client.ttl(feed_key(user_id, redis_prefix))
        meta = read_feedmeta(client, user_id, redis_prefix)
    finally:
        client.close()
    if not posts:
        raise click.ClickException(f"no feed stored for user {user_id!r}")
    if as_json:
        click.echo(json.dumps([{"postId": p, "score": s} for p, s in posts]))
        return
    click.echo(f"feed of {user_id}: {len(posts)} posts, expires in {ttl} s")
    if meta:
        click.echo(
            f"computed {meta.get('computedAt', '?')} ({meta.get('reason', '?')}) "
            f"from the engagement window {meta.get('window') or '?'}"
        )
    for rank, (post_id, score) in enumerate(posts, 1):
        click.echo(f"{rank:>4}. {post_id}  {score:.4f}")


@feed.command("purge")
@_redis_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def feed_purge(redis_url: str | None, redis_prefix: str, yes: bool) -> None:
    """Delete every feed (SCAN and UNLINK in batches, never KEYS)."""
    from blogflow.io import redis
    from blogflow.io.feeds import purge_feeds

    if not yes:
        click.confirm(f"Delete every '{redis_prefix}feed:*' key?", abort=True)
    client = redis.connect(redis_url)
    deleted = 0
    try:
        for deleted in purge_feeds(client, redis_prefix):
            click.echo(f"\rdeleted {deleted} feeds", nl=False, err=True)
    finally:
        client.close()
    click.echo("", err=True)
    click.echo(f"purged {deleted} feeds")


@cli.group()
def notifier() -> None:
    """The WebSocket notifier that pushes backup progress to browsers."""


@notifier.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@_redis_options
def notifier_serve(host: str, port: int, redis_url: str | None, redis_prefix: str) -> None:
    """Serve ws://HOST:PORT/ws?token=... and the progress pages /backups/BACKUP_ID?token=...
    until interrupted (needs $BLOGFLOW_SECRET_KEY)."""
    import asyncio

    from blogflow.notifier.server import Notifier
    from blogflow.tokens import SECRET_KEY_VARIABLE

    if not os.environ.get(SECRET_KEY_VARIABLE):
        raise click.ClickException(f"{SECRET_KEY_VARIABLE} is not set")

    async def serve() -> None:
        server = Notifier(redis_url=redis_url, prefix=redis_prefix)
        bound = await server.start(host, port)
        click.echo(
            f"notifier listening on ws://{host}:{bound}/ws; progress pages at "
            f"http://{host}:{bound}/backups/BACKUP_ID?token=TOKEN",
            err=True,
        )
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    from blogflow.io.redis import RedisError, redact_url

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except RedisError as error:
        where = redact_url(redis_url) if redis_url else "$REDIS_URL"
        raise click.ClickException(f"cannot reach Redis at {where}: {error}") from None


@cli.command("sample-events")
@click.argument("file", type=click.File("wb"), default="-")
def sample_events(file: Any) -> None:
    """Write a day of a small site's events (the demo's) as JSON lines to FILE (stdout).

    Posts, follows, views, likes and comments up to 2026-11-21T12:00:00Z, one redelivered:
    input for `blogflow publish` and `blogflow run feed --as-of 2026-11-21T12:00:00Z`.
    """
    from blogflow.local.demo import demo_events

    for event in demo_events():
        file.write(event.to_json() + b"\n")


@cli.command()
def demo() -> None:
    """Run the summing and feed jobs end to end on the local stack, printing what they did."""
    from blogflow.local.demo import run_demo

    if not run_demo(click.echo):
        raise click.ClickException("the demo's sums came out wrong")


def main() -> None:
    """Console entry point."""
    cli(prog_name="blogflow")


if __name__ == "__main__":
    main()
