"""Amazon Kinesis Data Streams: a native Splittable-DoFn source and a batching producer.

Beam's own ``KinesisIO`` is a Java cross-language transform that needs a JVM and jars
from Maven; :class:`ReadFromKinesis` is plain Python and runs on every portable runner.

How a read works: a first step lists the stream's shards (``ListShards``, paginated) when
the pipeline runs, and emits one element per shard; a splittable DoFn reads each shard
with ``GetShardIterator`` / ``GetRecords``, following ``NextShardIterator``, and emits one
:class:`~blogflow.events.SourceRecord` per record, timestamped with the record's
``ApproximateArrivalTimestamp``. The restriction of a shard is a
:class:`_ShardRestriction`: where to resume (after a sequence number, from an arrival time,
or at the trim horizon) and the bookkeeping of the read's bounds. Every record is claimed
(``try_claim(sequence_number)``) before it is emitted; a checkpoint hands the rest of the
shard to a residual that starts *after* the last claimed record (an
``AFTER_SEQUENCE_NUMBER`` iterator), so a resumed read neither loses nor repeats records.
The DoFn checkpoints itself (``defer_remainder``) after ``max_bundle_records`` records or
``max_bundle_seconds``, so bundles stay small and downstream effects are committed bundle
by bundle. The schedule, the watermark estimator and the clients' lifecycle are shared
with the SQS source (:mod:`blogflow.io._polling`).

The watermark of a shard never moves backwards: after a batch it advances to the batch's
oldest ``ApproximateArrivalTimestamp`` (a shard delivers records in arrival order, so later
records arrived later); while the shard is caught up (no records and
``MillisBehindLatest`` 0), to the wall clock minus a few seconds (Kinesis stamps arrival
times on its own clock, which may differ from this worker's).

**Delivery guarantee: at-least-once**, exactly once per successful run. Kinesis keeps
records until its retention period ends; where a read resumes after a failure depends on
the runner's checkpoints, so downstream steps see a record again only after a failure
(same ``SourceRecord.id``: ``stream/shard/sequence number``) and must be idempotent, which
blogflow's sinks are.

Metrics (namespace ``blogflow.io.kinesis``): ``records_received``, ``throttled`` (read
calls still throttled after the client's own retries, each followed by a backoff) and
``checkpoints``.

:func:`put_records` is the matching producer (``PutRecords`` calls of at most 500 records
and 5 MiB, bounded retries of the records Kinesis reports as failed) and
:func:`create_stream` creates a stream and waits until it is usable.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from blogflow.events import SourceRecord
from blogflow.io import aws
from blogflow.io._polling import (
    AWSClientFn,
    Bounds,
    MonotonicWatermarkProvider,
    backoff,
    batches,
    check_positive,
    has_bound,
    next_step,
    split_evenly,
)

__all__ = [
    "START_POSITIONS",
    "PutRecordsError",
    "ReadFromKinesis",
    "StreamNotFoundError",
    "create_stream",
    "put_records",
]

_LOGGER = logging.getLogger(__name__)

#: The named start positions of :class:`ReadFromKinesis` (an aware datetime also works).
START_POSITIONS = ("TRIM_HORIZON", "LATEST")
#: Most records one ``GetRecords`` call returns.
MAX_GET_RECORDS = 10_000
#: Most records Kinesis accepts in one ``PutRecords`` call.
MAX_PUT_RECORDS = 500
#: Most bytes (data plus partition keys) Kinesis accepts in one ``PutRecords`` call.
MAX_PUT_BYTES = 5 * 1024 * 1024
#: Most bytes (data plus partition key) of one record.
MAX_RECORD_BYTES = 1024 * 1024
#: Longest partition key, in characters.
MAX_PARTITION_KEY_LENGTH = 256

_METRICS_NAMESPACE = "blogflow.io.kinesis"
#: Attempts of one control-plane call (ListShards, GetShardIterator, ...) when throttled.
_CALL_ATTEMPTS = 5
#: Attempts of one PutRecords batch (first try included).
_PUT_ATTEMPTS = 5
#: Fresh iterators tried in a row when GetRecords keeps answering ExpiredIteratorException.
_EXPIRED_ITERATOR_ATTEMPTS = 3
#: ListShards pages read at most (a guard against a service that never stops paginating).
_MAX_SHARD_PAGES = 1000
_SHARD_PAGE_SIZE = 1000
_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 5.0
#: Shortest time between two GetRecords calls on one shard: Kinesis allows 5 per second.
_MIN_GET_RECORDS_INTERVAL = 0.2
#: Longest wait of :func:`create_stream` for a stream to become ACTIVE, in seconds.
_CREATE_TIMEOUT_SECONDS = 120.0

_STREAM_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
_THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
        "RequestLimitExceeded",
    }
)
_MISSING_CODES = frozenset({"ResourceNotFoundException"})
_EXPIRED_ITERATOR_CODE = "ExpiredIteratorException"
#: Codes whose messages may quote request signatures or key ids: only the code is reported.
_CREDENTIAL_CODES = frozenset(
    {
        "IncompleteSignature",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)


class StreamNotFoundError(LookupError):
    """The named Kinesis stream (or one of its shards) does not exist."""


class PutRecordsError(aws.AWSError):
    """Some records could not be put to Kinesis after bounded retries."""


# ----------------------------------------------------------------------- AWS helpers


def _describe(error: aws.ClientError | aws.BotoCoreError) -> str:
    """An error's code and message, without anything that could quote a credential."""
    code = aws.error_code(error)
    if not isinstance(error, aws.ClientError):
        return f"{code}: {error}"
    if code in _CREDENTIAL_CODES:
        return f"{code} (check the AWS credentials, endpoint and region)"
    message = str(error.response.get("Error", {}).get("Message", "")).strip()
    return f"{code}: {message}" if message else code


def _missing(client: Any, stream: str, what: str = "") -> StreamNotFoundError:
    region = getattr(getattr(client, "meta", None), "region_name", None)
    suffix = f" ({what})" if what else ""
    return StreamNotFoundError(
        f"Kinesis stream {stream!r}{suffix} does not exist in region {region!r}"
    )


def _backoff(attempt: int) -> float:
    """Seconds to sleep before retry ``attempt`` (1-based) of a throttled Kinesis call."""
    return backoff(attempt, base=_BACKOFF_SECONDS, cap=_MAX_BACKOFF_SECONDS)


def _call(
    client: Any,
    operation: str,
    stream: str,
    *,
    passthrough: frozenset[str] = frozenset(),
    **kwargs: Any,
) -> dict[str, Any]:
    """Call ``client.<operation>(**kwargs)``, retrying throttling a bounded number of times.

    Raises:
        StreamNotFoundError: on ``ResourceNotFoundException``.
        botocore.exceptions.ClientError: unchanged, for the codes in ``passthrough``.
        blogflow.io.aws.AWSError: on any other error, or throttling after the retries.
    """
    name = "".join(part.title() for part in operation.split("_"))
    for attempt in range(1, _CALL_ATTEMPTS + 1):
        try:
            response: dict[str, Any] = getattr(client, operation)(**kwargs)
            return response
        except aws.ClientError as error:
            code = aws.error_code(error)
            if code in passthrough:
                raise
            if code in _MISSING_CODES:
                raise _missing(client, stream, kwargs.get("ShardId", "")) from None
            if code in _THROTTLING_CODES and attempt < _CALL_ATTEMPTS:
                time.sleep(_backoff(attempt))
                continue
            raise aws.AWSError(
                f"{name} on Kinesis stream {stream!r} failed: {_describe(error)}"
            ) from None
        except aws.BotoCoreError as error:
            raise aws.AWSError(
                f"{name} on Kinesis stream {stream!r} failed: {_describe(error)}"
            ) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _list_shards(client: Any, stream: str, page_size: int = _SHARD_PAGE_SIZE) -> list[dict]:
    """Every shard of a stream that ``ListShards`` returns, following ``NextToken``.

    Kinesis wants follow-up pages requested with the ``NextToken`` alone; moto wants the
    stream name again. A follow-up page the service refuses is asked for once more with
    the stream name.
    """
    shards: list[dict] = []
    token: str | None = None
    for _ in range(_MAX_SHARD_PAGES):
        if token is None:
            response = _call(client, "list_shards", stream, StreamName=stream, MaxResults=page_size)
        else:
            try:
                response = _call(
                    client,
                    "list_shards",
                    stream,
                    passthrough=frozenset({"InvalidArgumentException", "InvalidToken"}),
                    NextToken=token,
                    MaxResults=page_size,
                )
            except aws.ClientError:
                response = _call(
                    client,
                    "list_shards",
                    stream,
                    StreamName=stream,
                    NextToken=token,
                    MaxResults=page_size,
                )
        shards.extend(response.get("Shards", ()))
        token = response.get("NextToken")
        if not token:
            return shards
    raise aws.AWSError(
        f"ListShards on Kinesis stream {stream!r} returned more than {_MAX_SHARD_PAGES} pages"
    )


def _is_closed(shard: dict[str, Any]) -> bool:
    return "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})


def _arrival_timestamp(record: dict[str, Any]) -> Timestamp:
    arrival = record.get("ApproximateArrivalTimestamp")
    if isinstance(arrival, dt.datetime):
        return Timestamp(micros=round(arrival.timestamp() * 1_000_000))
    if isinstance(arrival, (int, float)):
        return Timestamp(micros=round(arrival * 1_000_000))
    return Timestamp.now()


# ------------------------------------------------------------------------ the restriction


class _ReadSpec(NamedTuple):
    """The settings of one read of a stream (the element the shard lister processes).

    ``start_position`` is ``"TRIM_HORIZON"``, ``"LATEST"`` or ``"AT_TIMESTAMP"`` (then
    ``start_timestamp`` is the arrival time to start at, epoch seconds).
    """

    stream: str
    max_records: int | None
    max_read_time: float | None
    idle_timeout: float | None
    start_position: str
    start_timestamp: float | None
    max_bundle_records: int
    max_bundle_seconds: float
    poll_interval: float


class _ShardSpec(NamedTuple):
    """The element a :class:`_ReadShardFn` processes: one shard of a read.

    Attributes:
        read: the read's settings.
        shard_id: the shard to read.
        max_records: this shard's share of the read's ``max_records``, or None.
        deadline: the read ends at this wall-clock time (epoch seconds), or never.
        at_timestamp: start at records that arrived at this time (epoch seconds); None
            starts at the trim horizon.
    """

    read: _ReadSpec
    shard_id: str
    max_records: int | None
    deadline: float | None
    at_timestamp: float | None


class _ShardRestriction(NamedTuple):
    """What is left of the read of one shard. Pickles and encodes as a plain tuple.

    Where it starts: after ``after_sequence_number`` if set, else at the records that
    arrived at ``at_timestamp`` if set, else at the shard's trim horizon.

    Attributes:
        after_sequence_number: resume after this record (the last one claimed earlier).
        at_timestamp: start at records that arrived at this time, epoch seconds.
        emitted: records emitted by earlier parts of this shard's read (before checkpoints).
        max_records: the shard's read ends once this many records were emitted, or never.
        deadline: the read ends at this wall-clock time (epoch seconds), or never.
        idle_timeout: the read ends after this many seconds without a record.
        idle_seconds: seconds already read without a record at the end of earlier parts.
        closed: no record can be claimed any more: a bound or the shard's end was reached,
            or this is the primary of a checkpoint.
        end_sequence_number: for a closed restriction, the last record it claimed (None:
            it claimed none).
    """

    after_sequence_number: str | None = None
    at_timestamp: float | None = None
    emitted: int = 0
    max_records: int | None = None
    deadline: float | None = None
    idle_timeout: float | None = None
    idle_seconds: float = 0.0
    closed: bool = False
    end_sequence_number: str | None = None


class _ShardPosition(NamedTuple):
    """A claim on a shard read. A plain sequence number string claims that record.

    Attributes:
        sequence_number: the record to claim, or None for bookkeeping only (recording the
            idle time before a checkpoint, or closing the read).
        idle_seconds: seconds read without a record up to this claim.
        last: the read ends here (a bound was reached, or the shard is closed): the claim
            fails and closes the restriction.
    """

    sequence_number: str | None = None
    idle_seconds: float = 0.0
    last: bool = False


class _ShardTracker(RestrictionTracker):
    """Tracks the read of one shard: records claimed in sequence-number order, until a
    bound, the shard's end or a checkpoint closes it.

    ``try_claim("49590...")`` claims one record: sequence numbers (decimal strings) must
    increase. ``try_claim(_ShardPosition(None, idle))`` records the idle time before a
    checkpoint; ``try_claim(_ShardPosition(None, idle, last=True))`` ends the read: it
    returns ``False`` and closes the restriction, so :meth:`check_done` passes. A
    checkpoint (``try_split(0)``) closes the primary after the last claimed record and hands
    the rest to a residual that starts after it. Splits with a non-zero fraction are
    refused: the end of an open shard is unknown, so there is nothing to divide.
    """

    def __init__(self, restriction: _ShardRestriction) -> None:
        self._restriction = restriction
        self._emitted = restriction.emitted
        self._idle_seconds = restriction.idle_seconds
        self._last_claimed: str | None = None

    def _finished(self) -> bool:
        r = self._restriction
        return r.closed or (r.max_records is not None and self._emitted >= r.max_records)

    def _close(self) -> None:
        self._restriction = self._restriction._replace(
            closed=True, end_sequence_number=self._last_claimed
        )

    def current_restriction(self) -> _ShardRestriction:
        return self._restriction

    def current_progress(self) -> RestrictionProgress:
        completed = self._emitted - self._restriction.emitted
        if self._finished():
            remaining = 0
        elif self._restriction.max_records is not None:
            remaining = self._restriction.max_records - self._emitted
        else:
            remaining = 1  # unknown: an open shard does not say what is left
        return RestrictionProgress(completed=completed, remaining=remaining)

    def try_claim(self, position: _ShardPosition | str) -> bool:
        if isinstance(position, str):
            position = _ShardPosition(position)
        if self._finished():
            return False
        if position.last:
            self._idle_seconds = position.idle_seconds
            self._close()
            return False
        sequence_number = position.sequence_number
        if sequence_number is not None:
            previous = self._last_claimed or self._restriction.after_sequence_number
            if previous is not None and int(sequence_number) <= int(previous):
                raise ValueError(
                    f"claims on a Kinesis shard must advance: sequence number "
                    f"{sequence_number} claimed after {previous}"
                )
            self._last_claimed = sequence_number
            self._emitted += 1
        self._idle_seconds = position.idle_seconds
        return True

    def try_split(
        self, fraction_of_remainder: float
    ) -> tuple[_ShardRestriction, _ShardRestriction] | None:
        if fraction_of_remainder > 0 or self._finished():
            return None
        start = self._restriction
        if self._last_claimed is None:
            residual = start._replace(idle_seconds=self._idle_seconds)
        else:
            residual = start._replace(
                after_sequence_number=self._last_claimed,
                at_timestamp=None,
                emitted=self._emitted,
                idle_seconds=self._idle_seconds,
            )
        self._close()
        return self._restriction, residual

    def check_done(self) -> None:
        if not self._finished():
            raise ValueError(
                f"the read of a Kinesis shard returned after {self._emitted} records without "
                f"reaching a bound, the shard's end or a checkpoint: {self._restriction}"
            )

    def is_bounded(self) -> bool:
        r = self._restriction
        return r.max_records is not None or r.deadline is not None or r.idle_timeout is not None


class _ShardRestrictionProvider(RestrictionProvider):
    """Makes the initial restriction of a shard's read from its :class:`_ShardSpec`."""

    def initial_restriction(self, element: _ShardSpec) -> _ShardRestriction:
        return _ShardRestriction(
            at_timestamp=element.at_timestamp,
            max_records=element.max_records,
            deadline=element.deadline,
            idle_timeout=element.read.idle_timeout,
        )

    def create_tracker(self, restriction: _ShardRestriction) -> _ShardTracker:
        return _ShardTracker(restriction)

    def split(self, element: _ShardSpec, restriction: _ShardRestriction):
        yield restriction  # one reader per shard: no initial splits

    def restriction_size(self, element: _ShardSpec, restriction: _ShardRestriction) -> int:
        if restriction.closed:
            return 0
        if restriction.max_records is not None:
            return max(0, restriction.max_records - restriction.emitted)
        return 1

    def truncate(self, element: _ShardSpec, restriction: _ShardRestriction) -> None:
        # Draining a pipeline stops reading: unread records simply stay in the stream.
        return None


# ------------------------------------------------------------------ the reading schedule


def _bounds(restriction: _ShardRestriction) -> Bounds:
    """The bounds of a shard reader, for :func:`~blogflow.io._polling.next_step`."""
    return Bounds(
        restriction.max_records,
        restriction.deadline,
        restriction.idle_timeout,
        MAX_GET_RECORDS,
        "shard",
    )


# ------------------------------------------------------------------------------ the DoFns

_RECEIVED = Metrics.counter(_METRICS_NAMESPACE, "records_received")
_THROTTLED = Metrics.counter(_METRICS_NAMESPACE, "throttled")
_CHECKPOINTS = Metrics.counter(_METRICS_NAMESPACE, "checkpoints")


class _ListShardsFn(AWSClientFn):
    """Lists the shards of a stream at run time: one :class:`_ShardSpec` per shard to read.

    ``max_records`` is split evenly over the shards read (the first ``max_records % n``
    get one more); a shard whose share is 0 is not read.
    """

    service = "kinesis"

    def process(self, spec: _ReadSpec) -> Iterator[_ShardSpec]:
        now = time.time()
        shards = _list_shards(self._client, spec.stream)
        at_timestamp = spec.start_timestamp
        if spec.start_position == "LATEST":
            # LATEST is pinned to the listing time, so a shard read that checkpoints before
            # its first record resumes at the same place instead of at a later LATEST.
            shards = [shard for shard in shards if not _is_closed(shard)]
            at_timestamp = now
        if not shards:
            _LOGGER.warning("Kinesis stream %s has no shards to read", spec.stream)
            return
        deadline = None if spec.max_read_time is None else now + spec.max_read_time
        shares = split_evenly(spec.max_records, len(shards))
        _LOGGER.info("Reading %d shards of Kinesis stream %s", len(shards), spec.stream)
        for shard, share in zip(shards, shares, strict=True):
            if share == 0:
                continue
            yield _ShardSpec(spec, str(shard["ShardId"]), share, deadline, at_timestamp)


class _ReadShardFn(AWSClientFn):
    """Reads one shard per :class:`_ShardSpec` element, as a splittable DoFn (bounded)."""

    service = "kinesis"

    def _shard_iterator(
        self, shard: _ShardSpec, restriction: _ShardRestriction, last_claimed: str | None
    ) -> str:
        """An iterator at the first record this reader has not claimed yet."""
        after = last_claimed or restriction.after_sequence_number
        kwargs: dict[str, Any] = {"StreamName": shard.read.stream, "ShardId": shard.shard_id}
        if after is not None:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after)
        elif restriction.at_timestamp is not None:
            kwargs.update(
                ShardIteratorType="AT_TIMESTAMP",
                Timestamp=dt.datetime.fromtimestamp(restriction.at_timestamp, dt.timezone.utc),
            )
        else:
            kwargs.update(ShardIteratorType="TRIM_HORIZON")
        response = _call(
            self._client,
            "get_shard_iterator",
            shard.read.stream,
            passthrough=_THROTTLING_CODES,
            **kwargs,
        )
        return str(response["ShardIterator"])

    def process(
        self,
        shard: _ShardSpec,
        tracker=beam.DoFn.RestrictionParam(_ShardRestrictionProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(MonotonicWatermarkProvider()),
    ) -> Iterator[TimestampedValue]:
        """Read the shard until a bound stops the read, the shard ends or the bundle is full.

        Every record is claimed before it is emitted. Throttling backs off (bounded by the
        bundle's and the read's time budget) and counts as time without records; an expired
        iterator is replaced by one after the last claimed record.
        """
        spec = shard.read
        restriction: _ShardRestriction = tracker.current_restriction()
        bounds = _bounds(restriction)
        emitted = restriction.emitted
        idle = restriction.idle_seconds
        started = time.monotonic()
        in_bundle = 0
        iterator: str | None = None
        last_claimed: str | None = None
        throttled = expired = 0
        last_call = -math.inf
        while True:
            step = next_step(
                spec,
                bounds,
                emitted=emitted,
                idle_seconds=idle,
                bundle_records=in_bundle,
                bundle_seconds=time.monotonic() - started,
                now=time.time(),
            )
            if step.action == "stop":
                tracker.try_claim(_ShardPosition(None, idle, last=True))
                _LOGGER.info(
                    "Stopped reading Kinesis shard %s/%s after %d records: %s",
                    spec.stream,
                    shard.shard_id,
                    emitted,
                    step.reason,
                )
                return
            if step.action == "checkpoint":
                # Record the idle time for the residual, then hand the rest of the shard over.
                if tracker.try_claim(_ShardPosition(None, idle)):
                    tracker.defer_remainder()
                    _CHECKPOINTS.inc()
                return
            poll_started = time.monotonic()
            wait = last_call + _MIN_GET_RECORDS_INTERVAL - poll_started
            if wait > 0:
                time.sleep(min(wait, step.budget))
                if wait > step.budget:  # a bound or the bundle's end comes first
                    idle += time.monotonic() - poll_started
                    continue
            last_call = time.monotonic()
            try:
                if iterator is None:
                    iterator = self._shard_iterator(shard, restriction, last_claimed)
                response = self._client.get_records(ShardIterator=iterator, Limit=step.limit)
            except aws.ClientError as error:
                code = aws.error_code(error)
                if code in _THROTTLING_CODES:
                    throttled += 1
                    _THROTTLED.inc()
                    time.sleep(min(_backoff(throttled), step.budget))
                    idle += time.monotonic() - poll_started
                    continue
                if code == _EXPIRED_ITERATOR_CODE and expired < _EXPIRED_ITERATOR_ATTEMPTS:
                    expired += 1
                    _LOGGER.info(
                        "Shard iterator of Kinesis shard %s/%s expired: getting a new one",
                        spec.stream,
                        shard.shard_id,
                    )
                    iterator = None
                    continue
                if code in _MISSING_CODES:
                    raise _missing(self._client, spec.stream, shard.shard_id) from None
                raise aws.AWSError(
                    f"GetRecords on Kinesis shard {spec.stream}/{shard.shard_id} failed: "
                    f"{_describe(error)}"
                ) from None
            except aws.BotoCoreError as error:
                raise aws.AWSError(
                    f"GetRecords on Kinesis shard {spec.stream}/{shard.shard_id} failed: "
                    f"{_describe(error)}"
                ) from None
            throttled = expired = 0
            records = response.get("Records") or []
            iterator = response.get("NextShardIterator")
            if records:
                idle = 0.0
                oldest: Timestamp | None = None
                for record in records:
                    sequence_number = str(record["SequenceNumber"])
                    if not tracker.try_claim(sequence_number):
                        # The runner split the read during the call: the rest is not ours.
                        return
                    last_claimed = sequence_number
                    arrival = _arrival_timestamp(record)
                    oldest = arrival if oldest is None or arrival < oldest else oldest
                    origin = f"{spec.stream}/{shard.shard_id}/{sequence_number}"
                    emitted += 1
                    in_bundle += 1
                    _RECEIVED.inc()
                    yield TimestampedValue(SourceRecord(bytes(record["Data"]), origin), arrival)
                if oldest is not None:
                    watermark.advance(oldest)
            else:
                caught_up = int(response.get("MillisBehindLatest", 0) or 0) == 0
                if iterator is not None and caught_up:
                    watermark.advance_idle()
                    time.sleep(min(spec.poll_interval, step.budget))
                idle += time.monotonic() - poll_started
            if iterator is None:
                tracker.try_claim(_ShardPosition(None, idle, last=True))
                _LOGGER.info(
                    "Kinesis shard %s/%s is closed and read to its end (%d records)",
                    spec.stream,
                    shard.shard_id,
                    emitted,
                )
                return


class _ReadShardForeverFn(_ReadShardFn):
    """:class:`_ReadShardFn` for reads without a bound: its output is unbounded."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        shard: _ShardSpec,
        tracker=beam.DoFn.RestrictionParam(_ShardRestrictionProvider()),
        watermark=beam.DoFn.WatermarkEstimatorParam(MonotonicWatermarkProvider()),
    ) -> Iterator[TimestampedValue]:
        yield from super().process(shard, tracker, watermark)


# ------------------------------------------------------------------------ the transform


def _check_stream(stream: object) -> str:
    if not isinstance(stream, str) or not _STREAM_NAME.fullmatch(stream.strip()):
        raise ValueError(
            "stream must be a Kinesis stream name (1 to 128 letters, digits, '_', '.' or "
            f"'-'), got {stream!r}"
        )
    return stream.strip()


def _start(start_position: str | dt.datetime) -> tuple[str, float | None]:
    if isinstance(start_position, dt.datetime):
        if start_position.tzinfo is None:
            raise ValueError(
                f"a start_position datetime must be timezone-aware, got {start_position!r}"
            )
        return "AT_TIMESTAMP", start_position.timestamp()
    if start_position not in START_POSITIONS:
        raise ValueError(
            f"start_position must be one of {', '.join(START_POSITIONS)} or an aware "
            f"datetime, got {start_position!r}"
        )
    return start_position, None


class ReadFromKinesis(beam.PTransform):
    """Reads the records of a Kinesis stream as :class:`~blogflow.events.SourceRecord` s.

    Input: the pipeline (``PBegin``). Output: one ``SourceRecord(payload=record data,
    origin="STREAM/SHARD_ID/SEQUENCE_NUMBER")`` per record, timestamped with the record's
    ``ApproximateArrivalTimestamp``. Each shard is read in order, shards in parallel.

    The shards are listed when the pipeline runs; shards created later by resharding are
    not read by this read, and a closed parent shard is read to its end independently of
    its children (no parent-before-child ordering).

    With ``max_records``, ``max_read_time`` or ``idle_timeout`` the read is bounded (drains,
    tests, backfills) and each shard stops at the first bound it reaches; with none it
    reads forever and its output is unbounded (streaming). The bounds work per shard:
    ``max_records`` is split evenly over the shards (the first ``max_records % shards``
    get one more, a shard whose share is 0 is not read), so the read returns at most
    ``max_records`` records, fewer when some shards hold less than their share;
    ``max_read_time`` is one deadline for every shard; ``idle_timeout`` ends each shard's
    read once it returned no record for that long (time spent throttled counts too).

    **At-least-once delivery**: every record is read once per successful run; after a
    failure the runner resumes each shard from its last committed checkpoint, so records
    after it may be emitted again (same ``id``).

    The watermark of a shard follows the oldest arrival time of each batch and, while the
    shard is caught up, the wall clock minus a few seconds; it never moves backwards.

    Example::

        records = p | "ReadEvents" >> ReadFromKinesis("events", idle_timeout=30)
    """

    def __init__(
        self,
        stream: str,
        *,
        max_records: int | None = None,
        max_read_time: float | None = None,
        idle_timeout: float | None = None,
        start_position: str | dt.datetime = "TRIM_HORIZON",
        max_bundle_records: int = 1000,
        max_bundle_seconds: float = 5.0,
        poll_interval: float = 1.0,
        aws: aws.AwsConfig | None = None,
    ) -> None:
        """
        Args:
            stream: the stream's name.
            max_records: stop after this many records in total (split evenly over shards).
            max_read_time: stop after reading for this many seconds.
            idle_timeout: stop reading a shard after this many seconds without a record (a
                drain).
            start_position: ``"TRIM_HORIZON"`` (the oldest record kept), ``"LATEST"`` (the
                records that arrive once the read has listed the shards) or a timezone-aware
                datetime (the records that arrived from then on).
            max_bundle_records: checkpoint (end the bundle) after this many records.
            max_bundle_seconds: checkpoint after reading for this many seconds.
            poll_interval: seconds to wait before asking a caught-up shard again (Kinesis
                allows 5 ``GetRecords`` calls per second and shard).
            aws: the endpoint, region and credentials of the lister's and the readers'
                Kinesis clients, pickled with them; None: boto3's chain where they run.

        Raises:
            ValueError: on a bad stream name or start position, or a bound that is not a
                positive number.
        """
        super().__init__()
        name = _check_stream(stream)
        check_positive("max_records", max_records, integer=True)
        check_positive("max_read_time", max_read_time)
        check_positive("idle_timeout", idle_timeout)
        check_positive("max_bundle_records", max_bundle_records, integer=True)
        check_positive("max_bundle_seconds", max_bundle_seconds)
        check_positive("poll_interval", poll_interval)
        position, timestamp = _start(start_position)
        self._spec = _ReadSpec(
            stream=name,
            max_records=max_records,
            max_read_time=max_read_time,
            idle_timeout=idle_timeout,
            start_position=position,
            start_timestamp=timestamp,
            max_bundle_records=max_bundle_records,
            max_bundle_seconds=max_bundle_seconds,
            poll_interval=poll_interval,
        )
        self._aws = aws

    @property
    def bounded(self) -> bool:
        """Whether the read ends by itself (one of its bounds is set)."""
        return has_bound(self._spec)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[SourceRecord]:
        read_fn = _ReadShardFn(self._aws) if self.bounded else _ReadShardForeverFn(self._aws)
        return (
            pbegin
            | "ReadSpec" >> beam.Create([self._spec])
            | "ListShards" >> beam.ParDo(_ListShardsFn(self._aws))
            | "SpreadShards" >> beam.Reshuffle()
            | "ReadShards" >> beam.ParDo(read_fn).with_output_types(SourceRecord)
        )

    def display_data(self) -> dict[str, Any]:
        s = self._spec
        start = s.start_position
        if s.start_timestamp is not None:
            start = dt.datetime.fromtimestamp(s.start_timestamp, dt.timezone.utc).isoformat()
        data: dict[str, Any] = {
            "stream": DisplayDataItem(s.stream, label="Kinesis stream"),
            "start_position": DisplayDataItem(start, label="Start position"),
            "max_bundle_records": DisplayDataItem(s.max_bundle_records, label="Records per bundle"),
            "max_bundle_seconds": DisplayDataItem(s.max_bundle_seconds, label="Seconds per bundle"),
            "poll_interval": DisplayDataItem(s.poll_interval, label="Idle poll interval (s)"),
        }
        for name, label in (
            ("max_records", "Stop after records"),
            ("max_read_time", "Stop after seconds"),
            ("idle_timeout", "Stop a shard when idle for seconds"),
        ):
            value = getattr(s, name)
            if value is not None:
                data[name] = DisplayDataItem(value, label=label)
        return data


# ------------------------------------------------------------------------- the producer

_PartitionKey = str | Callable[[bytes], str] | None


def _default_partition_key(data: bytes) -> str:
    """A hash of the record's data: equal records share a shard, others spread evenly."""
    return hashlib.sha256(data).hexdigest()


def _partition_key_function(partition_key: _PartitionKey) -> Callable[[bytes], str]:
    if partition_key is None:
        return _default_partition_key
    if isinstance(partition_key, str):
        key = partition_key

        def fixed(data: bytes) -> str:
            return key

        return fixed
    if callable(partition_key):
        return partition_key
    raise ValueError(f"partition_key must be a str, a callable or None, got {partition_key!r}")


def _entries(bodies: Iterable[bytes | str], partition_key: _PartitionKey) -> Iterator[dict]:
    """``PutRecords`` entries for ``bodies``, validated one by one."""
    key_for = _partition_key_function(partition_key)
    for index, body in enumerate(bodies):
        if isinstance(body, str):
            data = body.encode("utf-8")
        elif isinstance(body, bytes | bytearray | memoryview):
            data = bytes(body)
        else:
            raise ValueError(f"record #{index} must be bytes or str, got {type(body).__name__}")
        key = key_for(data)
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_PARTITION_KEY_LENGTH:
            raise ValueError(
                f"record #{index}: a partition key must be a str of 1 to "
                f"{MAX_PARTITION_KEY_LENGTH} characters, got {key!r}"
            )
        size = len(data) + len(key.encode("utf-8"))
        if size > MAX_RECORD_BYTES:
            raise ValueError(
                f"record #{index} is {size} bytes with its partition key, over Kinesis's "
                f"limit of {MAX_RECORD_BYTES} bytes"
            )
        yield {"Data": data, "PartitionKey": key}


def _entry_size(entry: dict[str, Any]) -> int:
    return len(entry["Data"]) + len(entry["PartitionKey"].encode("utf-8"))


def _put_batches(entries: Iterable[dict]) -> Iterator[list[dict]]:
    """Group entries into ``PutRecords`` calls of <= 500 records and <= 5 MiB."""
    sized = ((entry, _entry_size(entry)) for entry in entries)
    return batches(sized, max_items=MAX_PUT_RECORDS, max_bytes=MAX_PUT_BYTES)


def _put_batch(client: Any, stream: str, batch: Sequence[dict]) -> None:
    """Put one batch, retrying the records reported failed (and throttled calls)."""
    pending = list(batch)
    reason = "Unknown"
    for attempt in range(1, _PUT_ATTEMPTS + 1):
        try:
            response = client.put_records(StreamName=stream, Records=pending)
        except aws.ClientError as error:
            code = aws.error_code(error)
            if code in _MISSING_CODES:
                raise _missing(client, stream) from None
            if code not in _THROTTLING_CODES:
                raise aws.AWSError(
                    f"PutRecords to Kinesis stream {stream!r} failed: {_describe(error)}"
                ) from None
            reason = _describe(error)
        except aws.BotoCoreError as error:
            raise aws.AWSError(
                f"PutRecords to Kinesis stream {stream!r} failed: {_describe(error)}"
            ) from None
        else:
            results = response.get("Records", [])
            if len(results) != len(pending):
                raise aws.AWSError(
                    f"PutRecords to Kinesis stream {stream!r} answered {len(results)} results "
                    f"for {len(pending)} records"
                )
            failed = [
                (entry, result)
                for entry, result in zip(pending, results, strict=True)
                if result.get("ErrorCode")
            ]
            if not failed:
                return
            first = failed[0][1]
            reason = f"{first.get('ErrorCode')}: {first.get('ErrorMessage', '')}".rstrip(": ")
            pending = [entry for entry, _ in failed]
        if attempt < _PUT_ATTEMPTS:
            _LOGGER.info(
                "Retrying %d of %d records for Kinesis stream %s", len(pending), len(batch), stream
            )
            time.sleep(_backoff(attempt))
    raise PutRecordsError(
        f"{len(pending)} of {len(batch)} records could not be put to Kinesis stream "
        f"{stream!r} after {_PUT_ATTEMPTS} attempts: {reason}"
    )


def put_records(
    stream: str, bodies: Iterable[bytes | str], partition_key: _PartitionKey = None
) -> int:
    """Put records to a Kinesis stream, batching ``PutRecords`` calls.

    Each call carries at most 500 records and 5 MiB. Records Kinesis reports as failed
    (throttled, internal failure) are retried a bounded number of times with backoff;
    a retried record may land after records put later, so order within a partition key is
    not guaranteed.

    Args:
        stream: the stream's name.
        bodies: record data, ``bytes`` or ``str`` (UTF-8 encoded); each at most 1 MiB with
            its partition key. Consumed lazily: records before an invalid one have been put.
        partition_key: the partition key of every record, or a function of the record's
            data that returns it. Default: a SHA-256 hash of the data, which spreads
            records evenly over the shards.

    Returns:
        The number of records put.

    Raises:
        ValueError: on a bad stream name, an oversized body or a bad partition key.
        PutRecordsError: if some records still failed after the retries.
        StreamNotFoundError: if the stream does not exist.
        blogflow.io.aws.AWSError: if Kinesis refused a call for another reason.
    """
    name = _check_stream(stream)
    client = aws.make_client("kinesis")
    try:
        sent = 0
        for batch in _put_batches(_entries(bodies, partition_key)):
            _put_batch(client, name, batch)
            sent += len(batch)
        return sent
    finally:
        aws.close_client(client)


def create_stream(
    stream: str, shard_count: int = 1, *, timeout: float = _CREATE_TIMEOUT_SECONDS
) -> str:
    """Create a provisioned Kinesis stream, or find it if it exists; wait until it is usable.

    An existing stream is used as it is (its shard count is not changed).

    Args:
        stream: the stream's name.
        shard_count: the number of shards of a new stream.
        timeout: seconds to wait for the stream to become ``ACTIVE``.

    Returns:
        The stream's ARN.

    Raises:
        ValueError: on a bad name, shard count or timeout.
        blogflow.io.aws.AWSError: if Kinesis refused, the stream is being deleted, or it
            did not become ACTIVE within ``timeout`` seconds.
    """
    name = _check_stream(stream)
    check_positive("shard_count", shard_count, integer=True)
    check_positive("timeout", timeout)
    client = aws.make_client("kinesis")
    try:
        try:
            client.create_stream(StreamName=name, ShardCount=shard_count)
        except aws.ClientError as error:
            if aws.error_code(error) != "ResourceInUseException":
                raise aws.AWSError(
                    f"could not create Kinesis stream {name!r}: {_describe(error)}"
                ) from None
        except aws.BotoCoreError as error:
            raise aws.AWSError(
                f"could not create Kinesis stream {name!r}: {_describe(error)}"
            ) from None
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            summary = _call(client, "describe_stream_summary", name, StreamName=name)[
                "StreamDescriptionSummary"
            ]
            status = summary.get("StreamStatus")
            if status in ("ACTIVE", "UPDATING"):
                return str(summary["StreamARN"])
            if status == "DELETING":
                raise aws.AWSError(f"Kinesis stream {name!r} is being deleted")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise aws.AWSError(
                    f"Kinesis stream {name!r} is still {status} after {timeout}s, not ACTIVE"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
    finally:
        aws.close_client(client)
