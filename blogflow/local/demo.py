"""``blogflow demo``: the summing job end to end on the local stack, narrated.

Starts the local stack (or reuses the running one), sends two arrays to an SQS queue as
packets, adds a redelivered packet and two bad messages, drains the queue with the summing
pipeline on FnApiRunner, and prints the sums stored in MongoDB and Redis and the dead
letters. It leaves the stack running so the results can be explored; ``blogflow local
down`` stops it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

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

    stack = LocalStack(state_dir=state_dir, services=("redis", "mongo", "moto")).up()
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
    echo(
        "The stack is still running: try `blogflow result ARRAY_ID` or "
        "`blogflow deadletters list`; stop it with `blogflow local down`."
    )
    return right
