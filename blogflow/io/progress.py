"""Backup progress in Redis: the latest state of every backup, and its live channel.

The pipeline's sink calls :func:`publish_progress`; every notifier process listens on the
channels and forwards each message to the browsers of that user, and a browser that
connects late is sent :func:`latest_progress` at once. Connections are registered in
Redis (:func:`register`), so several notifier processes can serve one site.

Keys (``prefix`` first): ``notifier:latest:{userId}`` (hash backupId → message JSON, kept
a day), channel ``notifier:user:{userId}``, hash ``notifier:connections`` (connection id
→ userId).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "CHANNEL_PATTERN",
    "channel",
    "latest_progress",
    "publish_progress",
    "queue_progress",
    "register",
    "unregister",
    "user_of_channel",
]

#: How long the latest progress of a user's backups is kept.
LATEST_TTL = 24 * 3600
CHANNEL_PATTERN = "notifier:user:*"


def channel(user_id: str, prefix: str = "") -> str:
    """The channel a user's progress messages go through."""
    return f"{prefix}notifier:user:{user_id}"


def user_of_channel(name: str, prefix: str = "") -> str:
    """The user id of a :func:`channel` name."""
    return name.removeprefix(f"{prefix}notifier:user:")


def _latest_key(user_id: str, prefix: str) -> str:
    return f"{prefix}notifier:latest:{user_id}"


def queue_progress(pipe: Any, user_id: str, message: dict[str, Any], prefix: str = "") -> None:
    """Adds :func:`publish_progress`'s commands to a Redis pipeline (many messages, one
    round trip)."""
    body = json.dumps(message, separators=(",", ":"))
    pipe.hset(_latest_key(user_id, prefix), message["backupId"], body)
    pipe.expire(_latest_key(user_id, prefix), LATEST_TTL)
    pipe.publish(channel(user_id, prefix), body)


def publish_progress(client: Any, user_id: str, message: dict[str, Any], prefix: str = "") -> None:
    """Keeps ``message`` as the backup's latest progress and sends it to the user's
    browsers, in one round trip. ``message`` carries ``backupId``."""
    pipe = client.pipeline(transaction=True)
    queue_progress(pipe, user_id, message, prefix)
    pipe.execute()


async def latest_progress(aclient: Any, user_id: str, prefix: str = "") -> list[str]:
    """The latest progress message (JSON text) of each of the user's backups."""
    return list((await aclient.hgetall(_latest_key(user_id, prefix))).values())


async def register(aclient: Any, connection_id: str, user_id: str, prefix: str = "") -> None:
    """Records that ``connection_id`` belongs to ``user_id``."""
    await aclient.hset(f"{prefix}notifier:connections", connection_id, user_id)


async def unregister(aclient: Any, connection_id: str, prefix: str = "") -> None:
    """Forgets a closed connection."""
    await aclient.hdel(f"{prefix}notifier:connections", connection_id)
