"""Amazon SQS: a native Splittable-DoFn source and a batching producer.

:class:`ReadFromSQS` long-polls a queue and emits one :class:`~blogflow.events.SourceRecord`
per message. **Delivery guarantee: at-least-once.** A message is deleted from the queue
only in a bundle-finalization callback, i.e. after the runner has committed the bundle that
emitted it; a crash or a failed bundle before that leaves the message in the queue, and SQS
delivers it again once its visibility timeout expires. Downstream steps therefore see
redeliveries (same ``SourceRecord.id``, the SQS ``MessageId``) and must be idempotent,
which blogflow's sinks are: at-least-once delivery, exactly-once effect.

How the read is cut into bundles: the splittable DoFn checkpoints itself (``defer_remainder``)
after ``max_bundle_records`` messages or ``max_bundle_seconds``, so every bundle is small,
its deletes happen well within the queue's visibility timeout and downstream effects are
committed bundle by bundle. A read has ``readers`` readers, each one element of the
splittable DoFn after the elements are redistributed, so a runner spreads them over its
workers; SQS gives every message to one of them. The restriction of a reader is a
:class:`~blogflow.io._polling.CountRestriction` (shared with the Pub/Sub reader): how
many messages earlier parts emitted and which bound (``max_records``, ``max_read_time``,
``idle_timeout``) ends it. A read with no bound runs forever (streaming). The schedule,
the watermark estimator and the client's lifecycle are shared with the Kinesis source
(:mod:`blogflow.io._polling`).

The watermark never moves backwards: after a batch it advances to the batch's oldest
``SentTimestamp``; while the queue is idle, to the wall clock minus a few seconds (SQS
stamps ``SentTimestamp`` on its own clock, which may be a little behind this worker's).
SQS standard queues order messages on a best-effort basis only, so an older message can
still arrive later: it is late data, which downstream windows handle with allowed lateness.

Where the runner does not finalize bundles (portable Flink in batch, apache/beam#19526), a
bounded read is made with ``delete_when_stored=True``: it deletes nothing itself and emits
each message's receipt on the ``RECEIPTS`` output instead, and :func:`delete_when_stored`
adds :class:`DeleteWhenStored` to the pipeline, which deletes them once every other step of
the job has finished (a side input that is complete only then): never before the effects
are stored; a job that fails deletes nothing, and SQS delivers its messages again.

Metrics (namespace ``blogflow.io.sqs``): ``messages_received``, ``messages_redelivered``
(``ApproximateReceiveCount`` > 1), ``checkpoints``, ``messages_deleted`` and
``messages_delete_failed``. Beam reports a bundle's metrics before it finalizes the bundle,
so deletes are counted with the reader's next bundle: those of a read's very last bundle are
logged but not counted.

:func:`send_messages` is the matching producer: ``SendMessageBatch`` calls of at most 10
entries and 256 KiB, with bounded retries of the entries SQS reports as failed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.transforms.window import GlobalWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from blogflow.events import SourceRecord
from blogflow.io import aws
from blogflow.io._polling import (
    AWSClientFn,
    CountPosition,
    CountRestriction,
    CountRestrictionProvider,
    FinalizedTally,
    MonotonicWatermarkProvider,
    backoff,
    batches,
    check_positive,
    has_bound,
    next_step,
    split_evenly,
)

__all__ = [
    "RECEIPTS",
    "DeleteWhenStored",
    "ReadFromSQS",
    "SendMessagesError",
    "create_queue",
    "delete_when_stored",
    "send_messages",
]

_LOGGER = logging.getLogger(__name__)

#: Most entries SQS accepts in one batch call, and most messages one ReceiveMessage returns.
MAX_BATCH_ENTRIES = 10
#: Most payload bytes SQS accepts in one SendMessageBatch call (and in one message).
MAX_BATCH_BYTES = 256 * 1024
#: The longest long poll SQS allows, in seconds.
MAX_WAIT_TIME_SECONDS = 20

_METRICS_NAMESPACE = "blogflow.io.sqs"
#: The output of a read with ``delete_when_stored``: ``(queue URL, receipt handle)`` of
#: every message it emitted.
RECEIPTS = "sqs_receipts"
_SEND_ATTEMPTS = 5
_DELETE_ATTEMPTS = 3
_BACKOFF_SECONDS = 0.1
_MAX_BACKOFF_SECONDS = 2.0


class SendMessagesError(RuntimeError):
    """Some messages could not be sent to SQS after bounded retries."""


# ------------------------------------------------------------------------ the restriction


class _ReadSpec(NamedTuple):
    """The element a :class:`_ReadQueueFn` processes: one reader of a queue, and how it
    reads.

    Attributes:
        queue: the queue's name or URL.
        max_records: this reader's share of the read's ``max_records``, or None.
        max_read_time: the reader stops this many seconds after it started, or never.
        idle_timeout: the reader stops after this many seconds without a message.
        wait_time_seconds: the longest long poll of one ``ReceiveMessage``.
        max_bundle_records: the reader checkpoints after this many messages.
        max_bundle_seconds: the reader checkpoints after reading this long.
        reader: which of the read's readers this is, from 0.
        readers: how many readers the read has.
    """

    queue: str
    max_records: int | None
    max_read_time: float | None
    idle_timeout: float | None
    wait_time_seconds: int
    max_bundle_records: int
    max_bundle_seconds: float
    reader: int = 0
    readers: int = 1


def _reader_specs(spec: _ReadSpec, readers: int) -> list[_ReadSpec]:
    """The elements of a read with ``readers`` readers: ``spec.max_records`` split evenly
    over them (the first ``max_records % readers`` get one more); a reader whose share is
    0 is left out."""
    shares = split_evenly(spec.max_records, readers)
    return [
        spec._replace(max_records=share, reader=index, readers=readers)
        for index, share in enumerate(shares)
        if share != 0
    ]


# ------------------------------------------------------------------ the reading schedule


def _wait_seconds(budget: float, spec: _ReadSpec) -> int:
    """The long poll of a ``ReceiveMessage`` with ``budget`` seconds left.

    ``ReceiveMessage`` waits whole seconds: ``budget`` rounded up, from 1 to
    ``spec.wait_time_seconds``.
    """
    return max(1, min(spec.wait_time_seconds, math.ceil(budget)))


# ------------------------------------------------------------------------------ the DoFn

_RECEIVED = Metrics.counter(_METRICS_NAMESPACE, "messages_received")
_REDELIVERED = Metrics.counter(_METRICS_NAMESPACE, "messages_redelivered")
_DELETED = Metrics.counter(_METRICS_NAMESPACE, "messages_deleted")
_DELETE_FAILED = Metrics.counter(_METRICS_NAMESPACE, "messages_delete_failed")
_CHECKPOINTS = Metrics.counter(_METRICS_NAMESPACE, "checkpoints")


#: Deletes of finalized bundles, per queue URL, until a bundle reports them.
_UNREPORTED_DELETES = FinalizedTally()


def _sent_timestamp(message: dict[str, Any]) -> Timestamp:
    millis = message.get("Attributes", {}).get("SentTimestamp")
    if millis is None:
        return Timestamp.now()
    return Timestamp(micros=int(millis) * 1000)


def _backoff(attempt: int) -> float:
    """Seconds to sleep before retry ``attempt`` (1-based) of an SQS batch call."""
    return backoff(attempt, base=_BACKOFF_SECONDS, cap=_MAX_BACKOFF_SECONDS)


class _DeletesMessages(AWSClientFn):
    """Deletes messages by receipt handle, 10 to a call, with bounded retries."""

    service = "sqs"

    def _delete_all(self, url: str, handles: Sequence[str]) -> tuple[int, int]:
        """Deletes ``handles`` from the queue at ``url``; returns ``(deleted, failed)``.

        Never raises: a message that cannot be deleted is delivered again, which
        at-least-once delivery allows.
        """
        deleted = failed = 0
        for first in range(0, len(handles), MAX_BATCH_ENTRIES):
            ok, bad = self._delete_batch(url, handles[first : first + MAX_BATCH_ENTRIES])
            deleted += ok
            failed += bad
        _LOGGER.debug("Deleted %d messages from SQS queue %s (%d failed)", deleted, url, failed)
        return deleted, failed

    def _delete_batch(self, url: str, handles: Sequence[str]) -> tuple[int, int]:
        pending = {str(i): handle for i, handle in enumerate(handles)}
        reason = ""
        for attempt in range(1, _DELETE_ATTEMPTS + 1):
            entries = [{"Id": i, "ReceiptHandle": h} for i, h in pending.items()]
            try:
                response = self._client.delete_message_batch(QueueUrl=url, Entries=entries)
            except (aws.ClientError, aws.BotoCoreError) as error:
                reason = aws.error_code(error)
            else:
                failures = response.get("Failed", [])
                pending = {f["Id"]: pending[f["Id"]] for f in failures}
                if not pending:
                    break
                reason = ", ".join(sorted({f.get("Code", "Unknown") for f in failures}))
                if all(f.get("SenderFault") for f in failures):
                    break  # e.g. an expired receipt handle: retrying cannot help
            if attempt < _DELETE_ATTEMPTS:
                time.sleep(_backoff(attempt))
        if pending:
            _LOGGER.warning(
                "Could not delete %d messages from SQS queue %s (%s): they will be delivered again",
                len(pending),
                url,
                reason,
            )
        return len(handles) - len(pending), len(pending)


class _ReadQueueFn(_DeletesMessages):
    """Reads one queue per :class:`_ReadSpec` element, as a splittable DoFn (bounded)."""

    def __init__(self, aws_config: aws.AwsConfig | None = None) -> None:
        super().__init__(aws_config)
        self._urls: dict[str, str] = {}

    def setup(self) -> None:
        super().setup()
        self._urls = {}

    def _queue_url(self, spec: _ReadSpec) -> str:
        url = self._urls.get(spec.queue)
        if url is None:
            url = aws.get_queue_url(self._client, spec.queue)
            self._urls[spec.queue] = url
            self._check_visibility_timeout(url, spec)
        return url

    def _check_visibility_timeout(self, url: str, spec: _ReadSpec) -> None:
        """Warn if bundles may outlast the queue's visibility timeout (best effort)."""
        try:
            attributes = self._client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["VisibilityTimeout"]
            )["Attributes"]
        except (aws.ClientError, aws.BotoCoreError) as error:
            _LOGGER.debug("Cannot check the visibility timeout of %s: %s", url, error)
            return
        visibility = int(attributes.get("VisibilityTimeout", 30))
        if visibility <= spec.max_bundle_seconds + 1:
            _LOGGER.warning(
                "SQS queue %s has a visibility timeout of %ss, not above max_bundle_seconds=%s "
                "plus a poll: messages may be delivered again before their bundle deletes them",
                url,
                visibility,
                spec.max_bundle_seconds,
            )

    def process(
        self,
        spec: _ReadSpec,
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(CountRestrictionProvider("SQS queue")),
        watermark=beam.DoFn.WatermarkEstimatorParam(MonotonicWatermarkProvider()),
    ) -> Iterator[TimestampedValue]:
        yield from self._read(spec, finalizer, tracker, watermark)

    def _read(self, spec: _ReadSpec, finalizer: Any, tracker: Any, watermark: Any) -> Iterator[Any]:
        """Long-poll the queue until a bound stops the read or the bundle is full.

        Every batch is claimed before it is emitted; its receipt handles go to a
        finalization callback, registered once per call, that deletes them after the
        runner committed the bundle (a bundle that received nothing deletes nothing).
        With no ``finalizer`` each handle is emitted on :data:`RECEIPTS` instead.
        """
        url = self._queue_url(spec)
        self._report_deletes(url)
        restriction: CountRestriction = tracker.current_restriction()
        bounds = restriction.bounds(MAX_BATCH_ENTRIES, "queue")
        received = restriction.start
        idle = restriction.idle_seconds
        started = time.monotonic()
        in_bundle = 0
        handles: list[str] = []
        # Registered for every bundle, even one that receives nothing: Prism finalizes
        # every bundle of a stage that may ask for it, and the Python harness fails the
        # finalization of a bundle that registered no callback.
        if finalizer is not None:
            finalizer.register(lambda: self._delete(url, handles))
        while True:
            step = next_step(
                spec,
                bounds,
                emitted=received,
                idle_seconds=idle,
                bundle_records=in_bundle,
                bundle_seconds=time.monotonic() - started,
                now=time.time(),
            )
            if step.action == "stop":
                tracker.try_claim(CountPosition(received, idle, last=True))
                _LOGGER.info(
                    "Reader %d/%d stopped reading SQS queue %s after %d messages: %s",
                    spec.reader + 1,
                    spec.readers,
                    url,
                    received,
                    step.reason,
                )
                return
            if step.action == "checkpoint":
                # Record the idle time for the residual, then hand the rest of the read over.
                if tracker.try_claim(CountPosition(received, idle)):
                    tracker.defer_remainder()
                    _CHECKPOINTS.inc()
                return
            poll_started = time.monotonic()
            messages = self._receive(url, step.limit, _wait_seconds(step.budget, spec))
            if not messages:
                idle += time.monotonic() - poll_started
                watermark.advance_idle()
                continue
            if not tracker.try_claim(CountPosition(received + len(messages))):
                # The runner checkpointed this read during the poll: the batch is not ours.
                self._release(url, messages)
                return
            idle = 0.0
            oldest = None
            for message in messages:
                sent = _sent_timestamp(message)
                oldest = sent if oldest is None or sent < oldest else oldest
                if int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1)) > 1:
                    _REDELIVERED.inc()
                record = SourceRecord(message["Body"].encode("utf-8"), message["MessageId"])
                yield TimestampedValue(record, sent)
                if finalizer is None:
                    yield beam.pvalue.TaggedOutput(RECEIPTS, (url, message["ReceiptHandle"]))
                else:
                    handles.append(message["ReceiptHandle"])
            watermark.advance(oldest)
            received += len(messages)
            in_bundle += len(messages)
            _RECEIVED.inc(len(messages))

    @staticmethod
    def _report_deletes(url: str) -> None:
        """Count the deletes of earlier, finalized bundles of the queue at ``url``: the
        callback tallies them in :data:`_UNREPORTED_DELETES` (see
        :class:`~blogflow.io._polling.FinalizedTally`), the next bundle reports them."""
        counts = _UNREPORTED_DELETES.take(url)
        if counts.done:
            _DELETED.inc(counts.done)
        if counts.failed:
            _DELETE_FAILED.inc(counts.failed)

    def _receive(self, url: str, max_messages: int, wait_seconds: int) -> list[dict[str, Any]]:
        try:
            response = self._client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_seconds,
                MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            )
        except (aws.ClientError, aws.BotoCoreError) as error:
            raise aws.AWSError(f"ReceiveMessage on SQS queue {url} failed: {error}") from error
        return list(response.get("Messages", ()))

    def _release(self, url: str, messages: Sequence[dict[str, Any]]) -> None:
        """Make received messages visible again at once (best effort)."""
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        try:
            self._client.change_message_visibility_batch(QueueUrl=url, Entries=entries)
        except (aws.ClientError, aws.BotoCoreError) as error:
            _LOGGER.warning(
                "Could not release %d messages of SQS queue %s (%s): they become visible "
                "again after the visibility timeout",
                len(entries),
                url,
                aws.error_code(error),
            )

    def _delete(self, url: str, handles: Sequence[str]) -> None:
        """The bundle-finalization callback: delete the messages a committed bundle emitted,
        tallied for the reader's next bundle to count (never raises)."""
        deleted, failed = self._delete_all(url, handles)
        _UNREPORTED_DELETES.add(url, deleted, failed)


class _ReadQueueForeverFn(_ReadQueueFn):
    """:class:`_ReadQueueFn` for reads without a bound: its output is unbounded."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        spec: _ReadSpec,
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(CountRestrictionProvider("SQS queue")),
        watermark=beam.DoFn.WatermarkEstimatorParam(MonotonicWatermarkProvider()),
    ) -> Iterator[TimestampedValue]:
        yield from super().process(spec, finalizer, tracker, watermark)


class _ReadQueueThenReceiptsFn(_ReadQueueFn):
    """:class:`_ReadQueueFn` (bounded) that asks for no bundle finalization: it emits each
    message's receipt on :data:`RECEIPTS` for :class:`DeleteWhenStored` to delete."""

    def process(  # type: ignore[override]  # no BundleFinalizerParam: none is asked for
        self,
        spec: _ReadSpec,
        tracker=beam.DoFn.RestrictionParam(CountRestrictionProvider("SQS queue")),
        watermark=beam.DoFn.WatermarkEstimatorParam(MonotonicWatermarkProvider()),
    ) -> Iterator[Any]:
        yield from self._read(spec, None, tracker, watermark)


class _DeleteReceiptsFn(_DeletesMessages):
    """Deletes ``(queue URL, receipt handle)`` elements, 10 to a call per queue; its side
    input (what it waits for) is not looked at."""

    def start_bundle(self) -> None:
        self._pending: dict[str, list[str]] = {}

    def process(self, receipt: tuple[str, str], stored: Any) -> None:
        url, handle = receipt
        handles = self._pending.setdefault(url, [])
        handles.append(handle)
        if len(handles) >= MAX_BATCH_ENTRIES:
            self._flush(url)

    def finish_bundle(self) -> None:
        for url in list(self._pending):
            self._flush(url)

    def _flush(self, url: str) -> None:
        deleted, failed = self._delete_all(url, self._pending.pop(url))
        _DELETED.inc(deleted)
        if failed:
            _DELETE_FAILED.inc(failed)


def _nothing(_: Any) -> Iterator[Any]:
    return iter(())


class DeleteWhenStored(beam.PTransform):
    """Deletes SQS receipts (the :data:`RECEIPTS` output of a read with
    ``delete_when_stored``) once every PCollection of ``after`` is complete.

    Input: ``(queue URL, receipt handle)``. Output: nothing useful. ``after`` are the
    last PCollections of the job's writes: their completion is a side input of the deletes,
    so a runner runs the deletes only once it computed them all (in a batch job: once the
    steps that write have finished). A job that fails before deletes nothing.
    """

    def __init__(self, after: Sequence[beam.PCollection], aws: aws.AwsConfig | None = None) -> None:
        super().__init__()
        if not after:
            raise ValueError("DeleteWhenStored needs the PCollections to wait for")
        self._after = list(after)
        self._aws = aws

    def expand(self, receipts: beam.PCollection) -> beam.PCollection:
        signals = [
            pcoll
            | f"Nothing{i}" >> beam.FlatMap(_nothing)
            | f"Global{i}" >> beam.WindowInto(GlobalWindows())
            for i, pcoll in enumerate(self._after)
        ]
        stored = (
            signals | "AllWritten" >> beam.Flatten() | "Written" >> beam.combiners.Count.Globally()
        )
        return (
            receipts
            | "GlobalReceipts" >> beam.WindowInto(GlobalWindows())
            | "Delete"
            >> beam.ParDo(_DeleteReceiptsFn(self._aws), stored=beam.pvalue.AsSingleton(stored))
        )


# ------------------------------------------------------------------------ the transform


class ReadFromSQS(beam.PTransform):
    """Reads messages from an SQS queue as :class:`~blogflow.events.SourceRecord` elements.

    Input: the pipeline (``PBegin``). Output: one ``SourceRecord(payload=body bytes,
    id=MessageId)`` per message, timestamped with the message's ``SentTimestamp``.

    **At-least-once delivery**: messages are deleted only after the runner committed the
    bundle that emitted them (bundle finalization); a failure before that redelivers them
    after the queue's visibility timeout. Keep ``max_bundle_seconds`` (plus downstream time)
    well below the visibility timeout. "Committed" is the runner's notion: Dataflow and
    Flink persist a bundle's output before finalizing it; FnApiRunner keeps it in memory,
    so there a failure in a later stage (after a ``GroupByKey``) does not redeliver.

    With ``max_records``, ``max_read_time`` or ``idle_timeout`` the read is bounded (drains,
    tests, backfills) and stops at the first bound reached; with none it reads forever and
    its output is unbounded (streaming). Draining a streaming pipeline stops the read;
    unread messages stay in the queue.

    ``readers`` readers poll the queue at once, each its own element of the splittable
    read (redistributed by a ``Reshuffle`` after the ``Create`` of the elements), so a
    runner that runs N bundles at a time on its workers runs them side by side; a local
    runner may run them one after another in a bundle, each for a checkpoint at a time.
    SQS hands every message to one receiver at a time, so the readers need no
    coordination. The bounds hold for the whole read: ``max_records`` is split evenly
    over the readers (the first ``max_records % readers`` get one more, and ``readers``
    above ``max_records`` is cut to ``max_records``), so the read emits at most
    ``max_records`` messages, and exactly that many once the queue holds enough: the
    readers share one queue; ``max_read_time`` ends every reader that long after it
    started; ``idle_timeout`` ends each reader once it received nothing for that long,
    so a drain ends when every reader has found the queue empty for that long.

    The watermark follows the oldest ``SentTimestamp`` of each batch and, while the queue
    is idle, the wall clock minus a few seconds. SQS orders messages on a best-effort basis
    only, so give event-time windows downstream some allowed lateness.

    Example::

        records = p | "ReadEvents" >> ReadFromSQS("events", idle_timeout=30)
    """

    def __init__(
        self,
        queue: str,
        *,
        max_records: int | None = None,
        max_read_time: float | None = None,
        idle_timeout: float | None = None,
        wait_time_seconds: int = MAX_WAIT_TIME_SECONDS,
        max_bundle_records: int = 1000,
        max_bundle_seconds: float = 5.0,
        readers: int = 1,
        delete_when_stored: bool = False,
        aws: aws.AwsConfig | None = None,
    ) -> None:
        """
        Args:
            queue: the queue's name or URL, resolved with ``GetQueueUrl`` on the workers.
            max_records: stop after this many messages.
            max_read_time: stop after reading for this many seconds.
            idle_timeout: stop after this many seconds without a message (a drain).
            wait_time_seconds: the long-poll wait of one ``ReceiveMessage``, 1 to 20 s.
            max_bundle_records: checkpoint (end the bundle, delete its messages) after this
                many messages.
            max_bundle_seconds: checkpoint after reading for this many seconds.
            readers: how many readers poll the queue in parallel (see above).
            delete_when_stored: for a bounded read on a runner that does not finalize
                bundles: delete nothing in the read, emit each receipt on
                :data:`RECEIPTS` for :class:`DeleteWhenStored` (:func:`delete_when_stored`
                adds it to the pipeline).
            aws: the endpoint, region and credentials of the readers' SQS clients,
                pickled with them; None: boto3's chain where they run.

        Raises:
            ValueError: on an empty queue name or a bound that is not a positive number,
                or ``delete_when_stored`` on a read with no bound.
        """
        super().__init__()
        if not isinstance(queue, str) or not queue.strip():
            raise ValueError(f"queue must be a non-empty SQS queue name or URL, got {queue!r}")
        check_positive("max_records", max_records, integer=True)
        check_positive("max_read_time", max_read_time)
        check_positive("idle_timeout", idle_timeout)
        check_positive("max_bundle_records", max_bundle_records, integer=True)
        check_positive("max_bundle_seconds", max_bundle_seconds)
        check_positive("readers", readers, integer=True)
        if (
            isinstance(wait_time_seconds, bool)
            or not isinstance(wait_time_seconds, int)
            or not 1 <= wait_time_seconds <= MAX_WAIT_TIME_SECONDS
        ):
            raise ValueError(
                f"wait_time_seconds must be an integer from 1 to {MAX_WAIT_TIME_SECONDS}, "
                f"got {wait_time_seconds!r}"
            )
        self._spec = _ReadSpec(
            queue=queue.strip(),
            max_records=max_records,
            max_read_time=max_read_time,
            idle_timeout=idle_timeout,
            wait_time_seconds=wait_time_seconds,
            max_bundle_records=max_bundle_records,
            max_bundle_seconds=max_bundle_seconds,
        )
        self._readers = readers
        self._aws = aws
        if delete_when_stored and not self.bounded:
            raise ValueError(
                "delete_when_stored is for a bounded read: a streaming job finalizes bundles"
            )
        self._delete_when_stored = delete_when_stored
        self.receipts: beam.PCollection | None = None

    @property
    def bounded(self) -> bool:
        """Whether the read ends by itself (one of its bounds is set)."""
        return has_bound(self._spec)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[SourceRecord]:
        # beam.Create of more than one element redistributes them (a Reshuffle), so each
        # reader is an element of its own that a runner can give to any worker.
        specs = pbegin | "ReadSpec" >> beam.Create(_reader_specs(self._spec, self._readers))
        if self._delete_when_stored:
            reading = beam.ParDo(_ReadQueueThenReceiptsFn(self._aws))
            read = specs | "ReadQueue" >> reading.with_output_types(SourceRecord).with_outputs(
                RECEIPTS, main="records"
            )
            self.receipts = read[RECEIPTS]
            return read.records  # type: ignore[no-any-return]
        read_fn = _ReadQueueFn(self._aws) if self.bounded else _ReadQueueForeverFn(self._aws)
        return specs | "ReadQueue" >> beam.ParDo(read_fn).with_output_types(SourceRecord)

    @property
    def aws(self) -> aws.AwsConfig | None:
        """Where the readers' (and their deletes') SQS clients connect."""
        return self._aws

    @property
    def readers(self) -> int:
        """How many readers poll the queue: ``readers``, at most ``max_records``."""
        return len(_reader_specs(self._spec, self._readers))

    def display_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "queue": DisplayDataItem(self._spec.queue, label="SQS queue"),
            "wait_time_seconds": DisplayDataItem(
                self._spec.wait_time_seconds, label="Long-poll wait (s)"
            ),
            "max_bundle_records": DisplayDataItem(
                self._spec.max_bundle_records, label="Messages per bundle"
            ),
            "max_bundle_seconds": DisplayDataItem(
                self._spec.max_bundle_seconds, label="Seconds per bundle"
            ),
            "readers": DisplayDataItem(self.readers, label="Parallel readers"),
        }
        for name, label in (
            ("max_records", "Stop after messages"),
            ("max_read_time", "Stop after seconds"),
            ("idle_timeout", "Stop when idle for seconds"),
        ):
            value = getattr(self._spec, name)
            if value is not None:
                data[name] = DisplayDataItem(value, label=label)
        return data


class _Graph(beam.pipeline.PipelineVisitor):
    """What a built pipeline's primitive steps produce and consume, and its SQS reads
    whose deletes wait (``delete_when_stored``)."""

    def __init__(self) -> None:
        self.produced: list[beam.PCollection] = []
        self.consumed: set[int] = set()
        self.reads: list[ReadFromSQS] = []

    def enter_composite_transform(self, node: Any) -> None:
        transform = node.transform
        if isinstance(transform, ReadFromSQS) and transform.receipts is not None:
            self.reads.append(transform)

    def visit_transform(self, node: Any) -> None:
        self.produced += [o for o in node.outputs.values() if isinstance(o, beam.PCollection)]
        self.consumed |= {id(i) for i in node.inputs}
        self.consumed |= {id(side.pvalue) for side in node.side_inputs}


def delete_when_stored(pipeline: beam.Pipeline) -> int:
    """Adds a :class:`DeleteWhenStored` for every SQS read of the built ``pipeline`` made
    with ``delete_when_stored``, waiting for every PCollection no step consumes (the
    last of each write); returns how many it added."""
    graph = _Graph()
    pipeline.visit(graph)
    receipts = {id(read.receipts) for read in graph.reads}
    last = [p for p in graph.produced if id(p) not in graph.consumed | receipts]
    for index, read in enumerate(graph.reads):
        _ = read.receipts | f"DeleteWhenStored{index or ''}" >> DeleteWhenStored(last, aws=read.aws)
    return len(graph.reads)


# ------------------------------------------------------------------------- the producer


def _batches(bodies: Iterable[bytes | str]) -> Iterator[list[str]]:
    """Group message bodies into SendMessageBatch calls of <= 10 entries and <= 256 KiB."""
    return batches(_sized_bodies(bodies), max_items=MAX_BATCH_ENTRIES, max_bytes=MAX_BATCH_BYTES)


def _sized_bodies(bodies: Iterable[bytes | str]) -> Iterator[tuple[str, int]]:
    """Each message body as text, with its size in bytes, validated one by one."""
    for index, body in enumerate(bodies):
        if isinstance(body, bytes):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"message #{index} is not UTF-8 text: {error}") from None
            size = len(body)
        elif isinstance(body, str):
            text = body
            size = len(body.encode("utf-8"))
        else:
            raise ValueError(f"message #{index} must be bytes or str, got {type(body).__name__}")
        if not size:
            raise ValueError(f"message #{index} is empty: SQS needs at least one character")
        if size > MAX_BATCH_BYTES:
            raise ValueError(
                f"message #{index} is {size} bytes, over SQS's limit of {MAX_BATCH_BYTES} bytes"
            )
        yield text, size


def _send_batch(client: Any, url: str, batch: Sequence[str]) -> None:
    pending = {str(i): body for i, body in enumerate(batch)}
    failures: list[dict[str, Any]] = []
    for attempt in range(1, _SEND_ATTEMPTS + 1):
        entries = [{"Id": i, "MessageBody": body} for i, body in pending.items()]
        try:
            response = client.send_message_batch(QueueUrl=url, Entries=entries)
        except (aws.ClientError, aws.BotoCoreError) as error:
            raise aws.AWSError(f"SendMessageBatch to SQS queue {url} failed: {error}") from error
        failures = response.get("Failed", [])
        pending = {f["Id"]: pending[f["Id"]] for f in failures}
        if not pending:
            return
        if all(f.get("SenderFault") for f in failures):
            break  # the request itself is wrong: retrying cannot help
        if attempt < _SEND_ATTEMPTS:
            _LOGGER.info(
                "Retrying %d of %d messages for SQS queue %s", len(pending), len(batch), url
            )
            time.sleep(_backoff(attempt))
    first = failures[0]
    raise SendMessagesError(
        f"{len(pending)} of {len(batch)} messages could not be sent to SQS queue {url} "
        f"after {attempt} attempts: {first.get('Code', 'Unknown')}: {first.get('Message', '')}"
    )


def create_queue(queue: str, *, visibility_timeout: int | None = None) -> str:
    """Create a standard SQS queue, or find it if it exists with the same attributes.

    Args:
        queue: the queue's name.
        visibility_timeout: seconds a received message stays invisible (SQS default: 30).

    Returns:
        The queue's URL.

    Raises:
        ValueError: on an empty name or a negative visibility timeout.
        blogflow.io.aws.AWSError: if SQS refused, e.g. the queue exists with other
            attributes.
    """
    if not isinstance(queue, str) or not queue.strip():
        raise ValueError(f"queue must be a non-empty SQS queue name, got {queue!r}")
    attributes = {}
    if visibility_timeout is not None:
        if isinstance(visibility_timeout, bool) or not 0 <= visibility_timeout <= 43200:
            raise ValueError(
                f"visibility_timeout must be 0 to 43200 seconds, got {visibility_timeout!r}"
            )
        attributes["VisibilityTimeout"] = str(visibility_timeout)
    client = aws.make_client("sqs")
    try:
        response = client.create_queue(QueueName=queue.strip(), Attributes=attributes)
        return str(response["QueueUrl"])
    except (aws.ClientError, aws.BotoCoreError) as error:
        raise aws.AWSError(f"could not create SQS queue {queue!r}: {error}") from None
    finally:
        aws.close_client(client)


def send_messages(queue: str, bodies: Iterable[bytes | str]) -> int:
    """Send messages to an SQS queue, batching ``SendMessageBatch`` calls.

    Each call carries at most 10 messages and 256 KiB. Entries SQS reports as ``Failed``
    for a transient reason are retried a bounded number of times with backoff.

    Args:
        queue: the queue's name or URL.
        bodies: message bodies, UTF-8 ``bytes`` or ``str``, each 1 byte to 256 KiB.
            Consumed lazily: messages before an invalid body have been sent.

    Returns:
        The number of messages sent.

    Raises:
        ValueError: on an empty queue name or an empty, oversized or non-UTF-8 body.
        SendMessagesError: if some messages still failed after the retries.
        blogflow.io.aws.QueueNotFoundError: if the queue does not exist.
    """
    if not isinstance(queue, str) or not queue.strip():
        raise ValueError(f"queue must be a non-empty SQS queue name or URL, got {queue!r}")
    client = aws.make_client("sqs")
    try:
        url = aws.get_queue_url(client, queue.strip())
        sent = 0
        for batch in _batches(bodies):
            _send_batch(client, url, batch)
            sent += len(batch)
        return sent
    finally:
        aws.close_client(client)
