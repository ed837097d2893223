"""ReadSource: one transform for every ``--source`` URI a pipeline accepts."""

from __future__ import annotations

from collections.abc import Sequence

import apache_beam as beam

from blogflow.io.aws import AwsConfig
from blogflow.io.files import ReadFromJSONL
from blogflow.io.kinesis import ReadFromKinesis
from blogflow.io.pubsub import ReadPubSubEvents
from blogflow.io.sqs import ReadFromSQS

__all__ = ["SCHEMES", "ReadSource", "is_unbounded", "parse_source"]

SCHEMES = ("sqs", "kinesis", "pubsub", "file")
#: Sources that are unbounded whatever the bounds: read by streaming pipelines only.
_ALWAYS_UNBOUNDED = ("pubsub",)
#: Sources that are unbounded unless a bound (drain, max_records, max_read_time) ends them.
_UNBOUNDED_UNLESS_BOUNDED = ("sqs", "kinesis")


def parse_source(
    uri: str, schemes: Sequence[str] = SCHEMES, what: str = "source"
) -> tuple[str, str]:
    """Splits ``scheme://rest``; raises ValueError naming the accepted ``schemes``."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in schemes or not rest:
        accepted = ", ".join(f"{s}://..." for s in schemes)
        raise ValueError(f"unsupported {what} {uri!r}: expected one of {accepted}")
    return scheme, rest


def is_unbounded(
    uri: str,
    *,
    drain: bool = False,
    max_records: int | None = None,
    max_read_time: float | None = None,
) -> bool:
    """Whether reading ``uri`` with these bounds never ends, i.e. makes a streaming job.

    ``pubsub://`` always; ``sqs://`` and ``kinesis://`` unless ``drain``, ``max_records`` or
    ``max_read_time`` ends the read; ``file://`` never.

    Raises:
        ValueError: ``uri`` is no source blogflow reads (see :func:`parse_source`).
    """
    scheme, _ = parse_source(uri)
    if scheme in _ALWAYS_UNBOUNDED:
        return True
    if scheme in _UNBOUNDED_UNLESS_BOUNDED:
        return not (drain or max_records or max_read_time)
    return False


class ReadSource(beam.PTransform):
    """Reads :class:`~blogflow.events.SourceRecord` from an ``sqs://``, ``kinesis://``,
    ``pubsub://`` or ``file://`` URI.

    Args:
        uri: ``sqs://QUEUE`` (name or URL), ``kinesis://STREAM`` (a stream name, read from
            its oldest record), ``pubsub://SUBSCRIPTION`` (a name or
            ``projects/P/subscriptions/S``; streaming only, events stamped with their
            ``occurredAt`` attribute) or ``file://GLOB`` of JSON-lines files.
        drain: for queues and streams, stop after ``idle_timeout`` seconds without a
            message (for a stream: each shard stops after that long without a record).
        idle_timeout: see ``drain``.
        max_records: stop after this many messages (queues, streams: split evenly over
            the stream's shards).
        max_read_time: stop reading after this many seconds (queues, streams).
        sqs_readers: readers polling an ``sqs://`` queue in parallel (see
            :class:`~blogflow.io.sqs.ReadFromSQS`); ``max_records`` is split over them.
        sqs_delete_when_stored: a bounded ``sqs://`` read on a runner that does not
            finalize bundles: its messages are deleted once the job's writes finished
            (:func:`~blogflow.io.sqs.delete_when_stored`), not by the read. Ignored for an
            unbounded read (streaming finalizes) and other sources.
        aws: the AWS endpoint, region and credentials of the ``sqs://`` and
            ``kinesis://`` readers, resolved at launch and pickled with them; None leaves
            them to boto3's chain where they run.
        pubsub_project: the project of a bare ``pubsub://`` subscription name.
        pubsub_emulator_host: ``HOST:PORT`` of a Pub/Sub emulator, for the pull reader.
    """

    def __init__(
        self,
        uri: str,
        *,
        drain: bool = False,
        idle_timeout: float = 5.0,
        max_records: int | None = None,
        max_read_time: float | None = None,
        sqs_readers: int = 1,
        sqs_delete_when_stored: bool = False,
        aws: AwsConfig | None = None,
        pubsub_project: str | None = None,
        pubsub_emulator_host: str | None = None,
    ) -> None:
        super().__init__()
        self._scheme, self._target = parse_source(uri)
        self._aws = aws
        self._pubsub_project = pubsub_project
        self._pubsub_emulator_host = pubsub_emulator_host
        self._drain = drain
        self._idle_timeout = idle_timeout
        self._max_records = max_records
        self._max_read_time = max_read_time
        self._sqs_readers = sqs_readers
        self._sqs_delete_when_stored = sqs_delete_when_stored

    @property
    def unbounded(self) -> bool:
        """Whether this read never ends by itself (see :func:`is_unbounded`)."""
        return is_unbounded(
            f"{self._scheme}://{self._target}",
            drain=self._drain,
            max_records=self._max_records,
            max_read_time=self._max_read_time,
        )

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        if self._scheme == "file":
            return pbegin | "ReadFromJSONL" >> ReadFromJSONL(self._target)
        if self._scheme == "pubsub":
            if self._drain or self._max_records or self._max_read_time:
                raise ValueError(
                    "a pubsub:// source is read by a streaming job: --drain, --max-records "
                    "and --max-read-time do not apply"
                )
            return pbegin | "ReadPubSubEvents" >> ReadPubSubEvents(
                self._target,
                project=self._pubsub_project,
                emulator_host=self._pubsub_emulator_host,
            )
        if self._scheme == "kinesis":
            return pbegin | "ReadFromKinesis" >> ReadFromKinesis(
                self._target,
                max_records=self._max_records,
                max_read_time=self._max_read_time,
                idle_timeout=self._idle_timeout if self._drain else None,
                aws=self._aws,
            )
        return pbegin | "ReadFromSQS" >> ReadFromSQS(
            self._target,
            max_records=self._max_records,
            max_read_time=self._max_read_time,
            idle_timeout=self._idle_timeout if self._drain else None,
            readers=self._sqs_readers,
            delete_when_stored=self._sqs_delete_when_stored and not self.unbounded,
            aws=self._aws,
        )
