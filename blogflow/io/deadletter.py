"""The dead-letter sink shared by every pipeline: MongoDB collection ``deadletters``.

Every message a pipeline cannot use is stored with why, where and when::

    {_id, pipeline, stage, error, payload, payloadBytes, truncated, sourceId, receivedAt}

``_id`` is derived from the pipeline, the stage and the message's source id, so a message
redelivered after a crash is stored once (at-least-once delivery, exactly-once effect).
The payload is kept raw (text when it is UTF-8, else bytes), cut at 64 KiB.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from blogflow.events import Rejection
from blogflow.io import mongo

__all__ = ["COLLECTION", "MAX_PAYLOAD_BYTES", "WriteDeadLetters", "dead_letter_document"]

_LOGGER = logging.getLogger(__name__)

COLLECTION = "deadletters"
MAX_PAYLOAD_BYTES = 64 * 1024


def dead_letter_document(pipeline: str, rejection: Rejection, now: dt.datetime) -> dict[str, Any]:
    """The stored form of one rejection."""
    key = "\0".join((pipeline, rejection.stage, rejection.source_id)).encode()
    raw = rejection.payload[:MAX_PAYLOAD_BYTES]
    payload: str | bytes
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError:
        payload = raw
    return {
        "_id": hashlib.sha256(key).hexdigest()[:32],
        "pipeline": pipeline,
        "stage": rejection.stage,
        "error": rejection.error,
        "payload": payload,
        "payloadBytes": len(rejection.payload),
        "truncated": len(rejection.payload) > MAX_PAYLOAD_BYTES,
        "sourceId": rejection.source_id,
        "receivedAt": now,
    }


class _WriteDeadLettersFn(beam.DoFn):
    def __init__(self, pipeline: str, uri: str | None, database: str, batch_size: int) -> None:
        self._pipeline = pipeline
        self._uri = uri
        self._database = database
        self._batch_size = batch_size
        self._written = Metrics.counter("blogflow", "dead_letters_written")

    def setup(self) -> None:
        self._client, db = mongo.connect(self._uri, self._database)
        self._collection = db[COLLECTION]

    def start_bundle(self) -> None:
        self._batch: list[dict[str, Any]] = []

    def process(self, rejection: Rejection) -> None:
        self._batch.append(
            dead_letter_document(self._pipeline, rejection, dt.datetime.now(dt.timezone.utc))
        )
        if len(self._batch) >= self._batch_size:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        try:
            self._collection.insert_many(batch, ordered=False)
        except mongo.BulkWriteError as error:
            others = [
                e for e in error.details.get("writeErrors", []) if e["code"] != mongo.DUPLICATE_KEY
            ]
            if others:
                raise RuntimeError(f"writing dead letters failed: {others[0]['errmsg']}") from None
        self._written.inc(len(batch))
        _LOGGER.info("stored %d dead letters of pipeline %s", len(batch), self._pipeline)

    def teardown(self) -> None:
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()

    def display_data(self) -> dict[str, Any]:
        return {"pipeline": self._pipeline, "database": self._database}


class WriteDeadLetters(beam.PTransform):
    """Stores :class:`~blogflow.events.Rejection` records in MongoDB ``deadletters``.

    Input: one PCollection of rejections, or a tuple of them (a pipeline's several
    rejection outputs), which are flattened first.

    Writes are batched (one ``insert_many`` per batch) and idempotent: a rejection seen
    again (same pipeline, stage and source id) is not stored twice. A MongoDB error fails
    the bundle, so the source redelivers instead of losing the message.

    Args:
        pipeline: name of the pipeline the rejections come from, e.g. ``"summing"``.
        mongo_uri: MongoDB URI; ``MONGODB_URI`` when None.
        database: database name.
        batch_size: documents per round trip.
    """

    def __init__(
        self,
        pipeline: str,
        *,
        mongo_uri: str | None = None,
        database: str = mongo.DEFAULT_DATABASE,
        batch_size: int = 500,
    ) -> None:
        super().__init__()
        if not pipeline:
            raise ValueError("WriteDeadLetters needs the pipeline's name")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._fn = _WriteDeadLettersFn(pipeline, mongo_uri, database, batch_size)

    def expand(
        self, rejections: beam.PCollection | tuple[beam.PCollection, ...]
    ) -> beam.PCollection:
        if isinstance(rejections, tuple):
            rejections = rejections | "AllRejected" >> beam.Flatten()
        return rejections | "InsertDeadLetters" >> beam.ParDo(self._fn)
