"""ParseEvents: raw source records in, typed events stamped with their event time out."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from blogflow.events import EventRejected, Rejection, SourceRecord, parse_event

__all__ = ["REJECTED", "ParseEvents"]

#: Tag of the output that carries :class:`~blogflow.events.Rejection` records.
REJECTED = "rejected"


class _ParseEventsFn(beam.DoFn):
    def __init__(self, accept: frozenset[str] | None) -> None:
        self._accept = accept
        self._parsed = Metrics.counter("blogflow", "events_parsed")
        self._rejected = Metrics.counter("blogflow", "events_rejected")

    def process(self, record: SourceRecord) -> Iterable:
        try:
            event = parse_event(record.payload)
        except EventRejected as rejected:
            self._rejected.inc()
            return (beam.pvalue.TaggedOutput(REJECTED, _reject(record, rejected.reason)),)
        if self._accept is not None and event.type not in self._accept:
            self._rejected.inc()
            reason = f"event type {event.type!r} is not one this pipeline reads"
            return (beam.pvalue.TaggedOutput(REJECTED, _reject(record, reason)),)
        self._parsed.inc()
        return (TimestampedValue(event, event.event_time),)


def _reject(record: SourceRecord, reason: str) -> Rejection:
    return Rejection("parse", reason, record.payload, record.id)


class ParseEvents(beam.PTransform):
    """Parses and validates raw records; bad ones become rejections, never exceptions.

    Input: :class:`~blogflow.events.SourceRecord`.
    Output: a tuple-like result whose main output (``.events``, also ``[None]``) holds typed
    events stamped with their ``occurredAt``, and ``.rejected`` holds a
    :class:`~blogflow.events.Rejection` for every record that is not a valid event or, when
    ``accept`` is given, is of a type the pipeline does not read.
    """

    def __init__(self, accept: Iterable[str] | None = None) -> None:
        super().__init__()
        self._accept = frozenset(accept) if accept is not None else None

    def expand(self, records: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return records | "Parse" >> beam.ParDo(_ParseEventsFn(self._accept)).with_outputs(
            REJECTED, main="events"
        )
