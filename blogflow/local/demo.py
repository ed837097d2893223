"""``blogflow demo``: the summing and feed jobs end to end on the local stack, narrated.

Starts the local stack (or reuses the running one), sends two arrays to an SQS queue as
packets, adds a redelivered packet and two bad messages, drains the queue with the summing
pipeline on FnApiRunner, and prints the sums stored in MongoDB and Redis and the dead
letters. Then it puts a day of a small site's events (posts, follows, views, likes,
comments, one redelivered) on a two-shard Kinesis stream, drains it with the feed job
and prints a sample user's feed from Redis. Last, it links a user to a repository on the
GitHub stand-in, stores a publication they own (MongoDB ``publications``) and its posts,
asks for a backup of it over SQS, runs the backup job and prints each post's result and
the address of the live progress page. It leaves the stack running so the results can be
explored; ``blogflow local down`` stops it.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blogflow.local.stack import DEFAULT_STATE_DIR, LocalStack

__all__ = ["run_demo"]

DEMO_ARRAYS = ([3, 1, 4, 1, 5], [10, 20, 30, 40])


def run_demo(
    echo: Callable[[str], None] = print, state_dir: str | Path = DEFAULT_STATE_DIR
) -> bool:
    """Runs the demo; returns True when every sum came out right."""
    from blogflow.io import mongo, redis, sqs
    from blogflow.io.sums import COLLECTION, redis_key
    from blogflow.pipelines import summing
    from blogflow.transforms.summing import split_array

    stack = LocalStack(
        state_dir=state_dir, services=("redis", "mongo", "moto", "github", "notifier")
    ).up()
    os.environ.update(stack.env)
    echo("local stack: " + ", ".join(f"{k} {v}" for k, v in sorted(stack.addresses.items())))

    queue = f"blogflow-demo-{uuid.uuid4().hex[:8]}"
    database = mongo.DEFAULT_DATABASE
    client, db = mongo.connect(None, database)
    letters_before = {d["_id"] for d in db["deadletters"].find({}, {"_id": True})}
    sqs.create_queue(queue)
    expected = {}
    bodies: list[bytes] = []
    for values in DEMO_ARRAYS:
        array_id, events = split_array(values)
        expected[array_id] = 2 * sum(values)
        bodies.extend(event.to_json() for event in events)
        echo(f"sum {' '.join(map(str, values))}  -> array {array_id} ({len(events)} packets)")
    bodies.append(bodies[0])  # a redelivered packet: must count once
    bodies.append(b'{"id": "bad-1", "type": "sum_packet"')  # truncated JSON
    bodies.append(
        b'{"id":"bad-2","type":"sum_packet","v":1,"occurredAt":"2026-11-21T10:00:00Z",'
        b'"data":{"arrayId":"x","packetId":0,"packetValue":1,"arrayLength":0}}'
    )
    sent = sqs.send_messages(queue, bodies)
    echo(f"sent {sent} messages to SQS queue {queue} (1 duplicate packet, 2 malformed)")

    echo(f"running: blogflow run summing --source sqs://{queue} --drain --mongo-db {database}")
    summing.run(
        [f"--source=sqs://{queue}", "--drain", "--idle-timeout=2", f"--mongo-db={database}"]
    )

    cache = redis.connect()
    right = True
    for array_id, want in expected.items():
        doc = db[COLLECTION].find_one({"_id": array_id}) or {}
        cached: dict[str, str] = cache.hgetall(redis_key(array_id))  # type: ignore[assignment]
        ok = doc.get("sum") == want and doc.get("status") == "complete"
        ok = ok and cached.get("sum") == str(want)
        right = right and ok
        echo(
            f"array {array_id}: MongoDB sum={doc.get('sum')} status={doc.get('status')} "
            f"packets={doc.get('packetsSeen')}/{doc.get('arrayLength')}; "
            f"Redis sum={cached.get('sum')}; expected {want} {'OK' if ok else 'WRONG'}"
        )
    for letter in db["deadletters"].find({"pipeline": "summing"}):
        if letter["_id"] not in letters_before:
            echo(f"dead letter ({letter['stage']}): {letter['error']}")
    client.close()
    cache.close()
    right = _feed_demo(echo) and right
    right = _backup_demo(echo, stack.env["NOTIFIER_URL"]) and right
    echo(
        "The stack is still running: try `blogflow result ARRAY_ID`, "
        f"`blogflow feed show {DEMO_READER}`, `blogflow backups show BACKUP_ID` or "
        "`blogflow deadletters list`; stop it with `blogflow local down`."
    )
    return right


DEMO_READER = "demo-reader"
DEMO_AS_OF = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)
_DEMO_POSTS = (
    ("post-beam-windows", "ada", ["beam", "streaming"]),
    ("post-redis-feeds", "grace", ["redis"]),
    ("post-sqs-exactly-once", "ada", ["aws"]),
    ("post-python-typing", "linus", ["python"]),
    ("post-kinesis-shards", "grace", ["aws", "streaming"]),
    ("post-mongo-upserts", "linus", ["mongodb"]),
)


def demo_events() -> list[Any]:
    """A day of a small site, seeded: posts, follows and engagement before the as-of time."""
    from blogflow.events import make_event

    rng = random.Random(2026)
    hours_ago = lambda h: DEMO_AS_OF - dt.timedelta(hours=h)  # noqa: E731
    events = []
    for n, (post_id, author, tags) in enumerate(_DEMO_POSTS):
        published = hours_ago(30 - 4 * n)
        data = {
            "postId": post_id,
            "authorId": author,
            "publicationId": f"pub-{author}",
            "title": post_id.replace("-", " ").title(),
            "slug": post_id,
            "tags": tags,
            "publishedAt": published.isoformat(),
        }
        events.append(make_event("post_published", data, user_id=author, occurred_at=published))
    events.append(
        make_event(
            "user_followed", {"authorId": "ada"}, user_id=DEMO_READER, occurred_at=hours_ago(9)
        )
    )
    events.append(
        make_event("tag_followed", {"tag": "redis"}, user_id=DEMO_READER, occurred_at=hours_ago(8))
    )
    kinds = ("post_viewed",) * 8 + ("post_liked",) * 3 + ("comment_added",)
    popularity = (5, 9, 2, 6, 4, 1)
    for _ in range(400):
        (post_id, _, _) = rng.choices(_DEMO_POSTS, weights=popularity)[0]
        user = rng.choice([DEMO_READER] + [f"reader-{i}" for i in range(12)])
        at = hours_ago(rng.uniform(0.1, 20))
        events.append(
            make_event(rng.choice(kinds), {"postId": post_id}, user_id=user, occurred_at=at)
        )
    events.append(events[-1])  # redelivered: counted once
    return events


def _feed_demo(echo: Callable[[str], None]) -> bool:
    from blogflow.io import kinesis, redis
    from blogflow.io.feeds import read_feed
    from blogflow.pipelines import feed

    stream = f"blogflow-demo-{uuid.uuid4().hex[:8]}"
    events = demo_events()
    kinesis.create_stream(stream, shard_count=2)
    put = kinesis.put_records(stream, [event.to_json() for event in events])
    echo(f"put {put} events on Kinesis stream {stream} (2 shards; 1 redelivered)")
    args = [
        f"--source=kinesis://{stream}",
        "--drain",
        "--idle-timeout=2",
        f"--as-of={DEMO_AS_OF.isoformat()}",
    ]
    echo("running: blogflow run feed " + " ".join(args))
    feed.run(args)
    cache = redis.connect()
    try:
        posts = read_feed(cache, DEMO_READER, "")
    finally:
        cache.close()
    echo(f"feed of {DEMO_READER} (follows ada and #redis), as of {DEMO_AS_OF:%Y-%m-%d %H:%M} UTC:")
    for rank, (post_id, score) in enumerate(posts, 1):
        echo(f"  {rank}. {post_id}  {score:.3f}")
    return len(posts) == len(_DEMO_POSTS)


DEMO_WRITER = "demo-writer"


def _backup_demo(echo: Callable[[str], None], notifier_url: str) -> bool:
    from blogflow.events import make_event
    from blogflow.io import mongo, sqs
    from blogflow.io.backups import load_backup, load_items, store_publication
    from blogflow.io.github import create_repository
    from blogflow.io.users import link_user
    from blogflow.pipelines import backup
    from blogflow.tokens import Secret, sign_user

    suffix = uuid.uuid4().hex[:8]
    token = Secret(f"ghp_demo_{uuid.uuid4().hex}")
    repo = create_repository(f"blog-backup-{suffix}", token)
    client, db = mongo.connect(None, mongo.DEFAULT_DATABASE)
    try:
        link_user(db, DEMO_WRITER, repo, token)
        publication = f"pub-demo-{suffix}"
        store_publication(db, publication, DEMO_WRITER)  # only its owner may back it up
        db["posts"].insert_many(
            [
                {
                    "_id": f"p{n}-{suffix}",
                    "publicationId": publication,
                    "authorId": DEMO_WRITER,
                    "title": post_id.replace("-", " ").title(),
                    "slug": post_id,
                    "tags": tags,
                    "contentMarkdown": f"# {post_id}\n\nWritten by {author}.\n",
                    "updatedAt": DEMO_AS_OF,
                }
                for n, (post_id, author, tags) in enumerate(_DEMO_POSTS, 1)
            ]
        )
        echo(f"linked {DEMO_WRITER} to {repo} on the GitHub stand-in (token stored encrypted)")
        echo(f"publication {publication}: {len(_DEMO_POSTS)} posts, owned by {DEMO_WRITER}")
        backup_id = f"backup-{suffix}"
        queue = f"blogflow-demo-backups-{suffix}"
        sqs.create_queue(queue)
        request = make_event(
            "backup_requested",
            {"backupId": backup_id, "publicationId": publication},
            user_id=DEMO_WRITER,
        )
        sqs.send_messages(queue, [request.to_json()])
        args = [f"--source=sqs://{queue}", "--drain", "--idle-timeout=2"]
        echo("running: blogflow run backup " + " ".join(args))
        backup.run(args)
        stored = load_backup(db, backup_id) or {}
        items = load_items(db, backup_id)
    finally:
        client.close()
    echo(
        f"backup {backup_id}: {stored.get('status')}, {stored.get('done')}/{stored.get('total')} "
        f"posts backed up, {stored.get('failed')} failed"
    )
    for item in items:
        sha = (item.get("commitSha") or "")[:10]
        echo(f"  {item['status']:<9} {item['path']}  {sha}")
    page = f"{notifier_url}/backups/{backup_id}?token={sign_user(DEMO_WRITER)}"
    echo(f"progress page (valid for an hour): {page}")
    return stored.get("status") == "done" and len(items) == len(_DEMO_POSTS)
