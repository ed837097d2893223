"""WriteSums: merges partial sums into MongoDB ``sums`` and mirrors them to Redis.

MongoDB is the source of truth. Each array has one document::

    {_id: arrayId, sum, arrayLength, packetsSeen, status: "complete"|"partial",
     updatedAt, digests: <base64, one byte per packet: 0 or its value's digest>, rev}

and Redis a hash ``sum:{arrayId}`` with ``sum``, ``arrayLength``, ``packetsSeen``,
``status`` and ``updatedAt``. A document written before digests were kept has ``seen``,
a bitmap of the packets counted, read as digests that conflict with nothing. A batch
costs one ``find``, one ``bulk_write`` and one Redis pipeline. Writers on several
workers may race on one array: every replace is conditional on the ``rev`` it read, and
a lost race is re-read and merged again (bounded retries).

Delivery: at-least-once input, exactly-once effect. A packet already counted changes
nothing; a complete sum is written once and never again. Writes happen inside the bundle
that read the packets, so a MongoDB or Redis outage fails that bundle and the source
redelivers rather than losing or half-writing a sum.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from blogflow.io import mongo, redis
from blogflow.io.mongo import ReplaceOne
from blogflow.transforms.summing import (
    UNKNOWN_DIGEST,
    PartialSum,
    StoredSum,
    count_conflicts,
    merge_into_stored,
)

__all__ = ["COLLECTION", "WriteSums", "redis_key"]

_LOGGER = logging.getLogger(__name__)

COLLECTION = "sums"


def redis_key(array_id: str, prefix: str = "") -> str:
    """The Redis hash that mirrors one sum."""
    return f"{prefix}sum:{array_id}"


def _stored(doc: dict[str, Any] | None) -> StoredSum | None:
    if doc is None:
        return None
    # int(): pymongo reads a number of 2**31 or more as bson's Int64.
    return StoredSum(
        doc["_id"],
        int(doc["arrayLength"]),
        int(doc["sum"]),
        _digests(doc),
        int(doc["packetsSeen"]),
    )


def _digests(doc: dict[str, Any]) -> bytes:
    if "digests" in doc:
        return base64.b64decode(doc["digests"])
    bitmap = base64.b64decode(doc["seen"])
    return bytes(
        UNKNOWN_DIGEST if bitmap[i >> 3] & (1 << (i & 7)) else 0
        for i in range(int(doc["arrayLength"]))
    )


def _document(merged: StoredSum, rev: int, now: dt.datetime) -> dict[str, Any]:
    return {
        "_id": merged.array_id,
        "sum": merged.total,
        "arrayLength": merged.array_length,
        "packetsSeen": merged.packets_seen,
        "status": merged.status,
        "updatedAt": now,
        "digests": base64.b64encode(merged.seen).decode("ascii"),
        "rev": rev,
    }


class SumConflictError(RuntimeError):
    """Concurrent writers kept winning the race for the same arrays."""


class _WriteSumsFn(beam.DoFn):
    def __init__(
        self,
        mongo_uri: str | None,
        database: str,
        redis_url: str | None,
        redis_prefix: str,
        batch_size: int,
        max_attempts: int,
    ) -> None:
        self._mongo_uri = mongo_uri
        self._database = database
        self._redis_url = redis_url
        self._redis_prefix = redis_prefix
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._counted = Metrics.counter("blogflow", "sum_packets_counted")
        self._completed = Metrics.counter("blogflow", "sums_completed")
        self._conflicts = Metrics.counter("blogflow", "sum_packet_conflicts")
        self._races = Metrics.counter("blogflow", "sum_write_races")

    def setup(self) -> None:
        self._mongo, db = mongo.connect(self._mongo_uri, self._database)
        self._sums = db[COLLECTION]
        self._redis = redis.connect(self._redis_url)

    def start_bundle(self) -> None:
        self._pending: dict[str, PartialSum] = {}

    def process(self, element: tuple[str, PartialSum]) -> None:
        array_id, partial = element
        pending = self._pending.get(array_id)
        if pending is None:
            self._pending[array_id] = partial
        else:
            pending.merge(partial)
        if len(self._pending) >= self._batch_size:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        for partial in pending.values():
            if partial.conflicts:
                self._conflicts.inc(partial.conflicts)
        results: dict[str, tuple[StoredSum, dt.datetime]] = {}
        for attempt in range(1, self._max_attempts + 1):
            pending = self._merge_once(pending, results)
            if not pending:
                break
            self._races.inc(len(pending))
            _LOGGER.info(
                "lost the race for %d sums; re-reading (attempt %d)", len(pending), attempt
            )
        else:
            raise SumConflictError(
                f"{len(pending)} sums kept changing under concurrent writers "
                f"after {self._max_attempts} attempts"
            )
        self._mirror_to_redis(results)

    def _merge_once(
        self,
        pending: dict[str, PartialSum],
        results: dict[str, tuple[StoredSum, dt.datetime]],
    ) -> dict[str, PartialSum]:
        """Merges and writes once; returns the arrays whose conditional write lost a race."""
        ids = list(pending)
        docs = {doc["_id"]: doc for doc in self._sums.find({"_id": {"$in": ids}})}
        now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
        ops: list[ReplaceOne] = []
        writes: list[str] = []
        # (packets counted, sums completed, conflicts) per array, counted once its
        # write held: a write that lost a race is merged again from what won it.
        outcomes: dict[str, tuple[int, int, int]] = {}
        for array_id in ids:
            doc = docs.get(array_id)
            before = _stored(doc)
            conflicts = count_conflicts(before, pending[array_id])
            merged, changed = merge_into_stored(array_id, before, pending[array_id])
            if not changed:
                if doc is not None:
                    results[array_id] = (merged, doc["updatedAt"])
                outcomes[array_id] = (0, 0, conflicts)
                continue
            rev = doc["rev"] if doc else 0
            ops.append(
                ReplaceOne(
                    {"_id": array_id, "rev": rev}, _document(merged, rev + 1, now), upsert=True
                )
            )
            writes.append(array_id)
            results[array_id] = (merged, now)
            counted = merged.packets_seen - (before.packets_seen if before else 0)
            outcomes[array_id] = (counted, int(merged.complete), conflicts)
        lost: dict[str, PartialSum] = {}
        try:
            if ops:
                self._sums.bulk_write(ops, ordered=False)
        except mongo.BulkWriteError as error:
            for write_error in error.details.get("writeErrors", []):
                if write_error["code"] != mongo.DUPLICATE_KEY:
                    raise RuntimeError(f"writing sums failed: {write_error['errmsg']}") from None
                array_id = writes[write_error["index"]]
                lost[array_id] = pending[array_id]
                del results[array_id]
        for array_id, (counted, completed, conflicts) in outcomes.items():
            if array_id in lost:
                continue
            self._counted.inc(counted)
            self._completed.inc(completed)
            if conflicts:
                self._conflicts.inc(conflicts)
                _LOGGER.warning(
                    "array %s: %d packets contradict packets already counted; not summed",
                    array_id,
                    conflicts,
                )
        return lost

    def _mirror_to_redis(self, results: dict[str, tuple[StoredSum, dt.datetime]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for array_id, (merged, updated_at) in results.items():
            pipe.hset(
                redis_key(array_id, self._redis_prefix),
                mapping=redis.hash_fields(
                    {
                        "sum": merged.total,
                        "arrayLength": merged.array_length,
                        "packetsSeen": merged.packets_seen,
                        "status": merged.status,
                        "updatedAt": updated_at,
                    }
                ),
            )
        pipe.execute()

    def teardown(self) -> None:
        for client in (getattr(self, "_mongo", None), getattr(self, "_redis", None)):
            if client is not None:
                client.close()

    def display_data(self) -> dict[str, Any]:
        return {
            "mongo": mongo.redact_uri(self._mongo_uri) if self._mongo_uri else "MONGODB_URI",
            "database": self._database,
            "redis": redis.redact_url(self._redis_url) if self._redis_url else "REDIS_URL",
        }


class WriteSums(beam.PTransform):
    """Merges ``(arrayId, PartialSum)`` into MongoDB ``sums`` and Redis ``sum:{arrayId}``.

    Args:
        mongo_uri: MongoDB URI; ``MONGODB_URI`` when None.
        database: MongoDB database.
        redis_url: Redis URL; ``REDIS_URL`` when None.
        redis_prefix: prepended to every Redis key (tests use one per test).
        batch_size: arrays per round trip.
        max_attempts: how often a write that lost a race with another writer is retried.
    """

    def __init__(
        self,
        *,
        mongo_uri: str | None = None,
        database: str = mongo.DEFAULT_DATABASE,
        redis_url: str | None = None,
        redis_prefix: str = "",
        batch_size: int = 1000,
        max_attempts: int = 8,
    ) -> None:
        super().__init__()
        if batch_size < 1 or max_attempts < 1:
            raise ValueError("batch_size and max_attempts must be positive")
        self._fn = _WriteSumsFn(
            mongo_uri, database, redis_url, redis_prefix, batch_size, max_attempts
        )

    def expand(self, sums: beam.PCollection) -> beam.PCollection:
        return sums | "MergeSums" >> beam.ParDo(self._fn)
