"""Backup progress in Redis: the latest state of every backup, and its live channel.

The pipeline's sink calls :func:`publish_progress`; every notifier process listens on the
channels and forwards each message to the browsers of that user, and a browser that
connects late is sent :func:`replay` at once: the latest message of each backup, then a
``backup_posts`` message with the last status of each of its other posts, so a late page
shows every post, not only the count. Connections are registered in Redis
(:func:`register`), so several notifier processes can serve one site.

Keys (``prefix`` first): ``notifier:latest:{userId}`` (hash backupId → message JSON, kept
a day), ``notifier:posts:{userId}`` (hash ``["backupId","postId"]`` → that post's last
message JSON, kept a day), channel ``notifier:user:{userId}``, hash
``notifier:connections`` (connection id → userId).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "CHANNEL_PATTERN",
    "channel",
    "publish_progress",
    "queue_progress",
    "register",
    "replay",
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


def _posts_key(user_id: str, prefix: str) -> str:
    return f"{prefix}notifier:posts:{user_id}"


def _post_field(backup_id: str, post_id: str) -> str:
    # JSON, not "backup:post": ids may hold any character and must not collide.
    return json.dumps([backup_id, post_id], separators=(",", ":"))


def queue_progress(pipe: Any, user_id: str, message: dict[str, Any], prefix: str = "") -> None:
    """Adds :func:`publish_progress`'s commands to a Redis pipeline (many messages, one
    round trip)."""
    body = json.dumps(message, separators=(",", ":"))
    pipe.hset(_latest_key(user_id, prefix), message["backupId"], body)
    pipe.expire(_latest_key(user_id, prefix), LATEST_TTL)
    if message.get("postId") is not None:
        field = _post_field(str(message["backupId"]), str(message["postId"]))
        pipe.hset(_posts_key(user_id, prefix), field, body)
        pipe.expire(_posts_key(user_id, prefix), LATEST_TTL)
    pipe.publish(channel(user_id, prefix), body)


def publish_progress(client: Any, user_id: str, message: dict[str, Any], prefix: str = "") -> None:
    """Keeps ``message`` as the backup's latest progress (and as its post's last status)
    and sends it to the user's browsers, in one round trip. ``message`` carries
    ``backupId`` (and ``postId``)."""
    pipe = client.pipeline(transaction=True)
    queue_progress(pipe, user_id, message, prefix)
    pipe.execute()


async def replay(aclient: Any, user_id: str, prefix: str = "") -> list[str]:
    """What a browser is sent when it connects (JSON texts), in one round trip.

    For each of the user's backups: its latest progress message, then, when the backup
    has other posts, one message
    ``{"type": "backup_posts", "backupId", "posts": [{"postId", "status", "done"}, ...]}``
    with the last message of each of those posts (its ``done`` then), in the order they
    were backed up (failed ones after the post whose ``done`` they share).
    """
    async with aclient.pipeline(transaction=False) as pipe:
        pipe.hgetall(_latest_key(user_id, prefix))
        pipe.hgetall(_posts_key(user_id, prefix))
        latest, posts = await pipe.execute()
    by_backup: dict[str, list[dict[str, Any]]] = {}
    for body in posts.values():
        try:
            message = json.loads(body)
            by_backup.setdefault(str(message["backupId"]), []).append(message)
        except (ValueError, KeyError, TypeError):
            continue  # not ours to fail a connection over
    replayed: list[str] = []
    for backup_id, body in latest.items():
        replayed.append(body)
        try:
            latest_post = json.loads(body).get("postId")
        except (ValueError, AttributeError):
            latest_post = None
        others = [m for m in by_backup.get(backup_id, ()) if m.get("postId") != latest_post]
        if not others:
            continue
        others.sort(key=_backed_up_order)
        snapshot = {
            "type": "backup_posts",
            "backupId": backup_id,
            "posts": [
                {"postId": m.get("postId"), "status": m.get("status"), "done": _done(m)}
                for m in others
            ],
        }
        replayed.append(json.dumps(snapshot, separators=(",", ":")))
    return replayed


def _done(message: dict[str, Any]) -> int:
    done = message.get("done")
    return done if isinstance(done, int) else 0


def _backed_up_order(message: dict[str, Any]) -> tuple[int, bool, str]:
    # A failed post leaves ``done`` as it was: it came after the post that made it so.
    return _done(message), message.get("status") == "failed", str(message.get("postId"))


async def register(aclient: Any, connection_id: str, user_id: str, prefix: str = "") -> None:
    """Records that ``connection_id`` belongs to ``user_id``."""
    await aclient.hset(f"{prefix}notifier:connections", connection_id, user_id)


async def unregister(aclient: Any, connection_id: str, prefix: str = "") -> None:
    """Forgets a closed connection."""
    await aclient.hdel(f"{prefix}notifier:connections", connection_id)
