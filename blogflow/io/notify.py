"""NotifyProgress: the sink that pushes backup progress to users' browsers.

Input: ``(userId, message)`` with ``message`` a dict ``{"type": "backup_progress",
"backupId", "postId", "status", "done", "total"}``. The ``redis`` backend keeps each
backup's latest message and publishes it on the user's channel
(:func:`blogflow.io.progress.publish_progress`); the WebSocket notifier
(``blogflow notifier serve``) forwards it to that user's connections only. Messages of a
bundle go out in one pipelined round trip, in the order they came.

Delivery: at least once. A replayed message sets the same latest state again; browsers
show the latest count, so a repeat changes nothing they show.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam

from blogflow.io import progress
from blogflow.io._redis_sink import RedisBatchFn

__all__ = ["BACKENDS", "NotifyProgress"]

BACKENDS = ("redis",)
_FIELDS = ("type", "backupId", "postId", "status", "done", "total")


class _NotifyRedisFn(RedisBatchFn):
    def __init__(self, redis_url: str | None, prefix: str, batch_size: int) -> None:
        super().__init__(redis_url, batch_size, "progress_messages_sent")
        self._prefix = prefix

    def prepare(self, element: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        user_id, message = element
        missing = [field for field in _FIELDS if field not in message]
        if missing:
            raise ValueError(f"progress message without {missing}")
        return user_id, {field: message[field] for field in _FIELDS}

    def write(self, pipe: Any, batch: list[tuple[str, dict[str, Any]]]) -> None:
        for user_id, message in batch:
            progress.queue_progress(pipe, user_id, message, self._prefix)


class NotifyProgress(beam.PTransform):
    """Sends ``(userId, progress message)`` to the user's browsers.

    Args:
        backend: ``"redis"`` (the WebSocket notifier). More backends plug in here.
        redis_url: the notifier's Redis; ``REDIS_URL`` by default.
        prefix: key prefix shared with the notifier.
        batch_size: messages per round trip.
    """

    def __init__(
        self,
        backend: str = "redis",
        *,
        redis_url: str | None = None,
        prefix: str = "",
        batch_size: int = 200,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown notifier backend {backend!r}; choose from {BACKENDS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._redis_url = redis_url
        self._prefix = prefix
        self._batch_size = batch_size

    def expand(self, messages: beam.PCollection) -> beam.pvalue.PDone:
        _ = messages | "PublishProgress" >> beam.ParDo(
            _NotifyRedisFn(self._redis_url, self._prefix, self._batch_size)
        )
        return beam.pvalue.PDone(messages.pipeline)
