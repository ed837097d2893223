"""Publishing raw events to any of blogflow's sources, by URI (``blogflow publish``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import IO

__all__ = ["TARGETS", "create_target", "publish", "read_lines"]

#: The ``--to`` schemes ``publish`` accepts.
TARGETS = ("sqs", "kinesis", "pubsub")


def _parse(uri: str) -> tuple[str, str]:
    from blogflow.io.sources import parse_source

    return parse_source(uri, TARGETS, "target")


def create_target(uri: str, *, shards: int = 1) -> None:
    """Creates the queue, stream (with ``shards`` shards) or topic if it does not exist."""
    scheme, name = _parse(uri)
    if scheme == "sqs":
        from blogflow.io import sqs

        sqs.create_queue(name)
    elif scheme == "kinesis":
        from blogflow.io import kinesis

        kinesis.create_stream(name, shard_count=shards)
    else:
        from blogflow.io import pubsub

        pubsub.create_topic(name)


def _sender(uri: str) -> Callable[[Iterable[bytes]], int]:
    scheme, name = _parse(uri)
    if scheme == "sqs":
        from blogflow.io import sqs

        return lambda bodies: sqs.send_messages(name, bodies)
    if scheme == "kinesis":
        from blogflow.io import kinesis

        return lambda bodies: kinesis.put_records(name, bodies)
    from blogflow.io import pubsub

    return lambda bodies: pubsub.publish_events(name, bodies)


def read_lines(handle: IO[bytes]) -> Iterator[bytes]:
    """The non-blank lines of a JSON-lines file, without their line ends."""
    for line in handle:
        line = line.rstrip(b"\r\n")
        if line.strip():
            yield line


def publish(uri: str, bodies: Iterable[bytes], *, chunk: int = 5000) -> Iterator[int]:
    """Sends raw event bodies, unparsed (the pipeline dead-letters bad ones), to ``uri``.

    Sends ``chunk`` bodies at a time with the target's batch calls and yields the running
    count after each chunk, for progress. Raises ValueError for an unknown scheme.
    """
    send = _sender(uri)
    sent = 0
    iterator = iter(bodies)
    while batch := list(itertools.islice(iterator, chunk)):
        sent += send(batch)
        yield sent
