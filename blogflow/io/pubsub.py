"""Google Cloud Pub/Sub: a source of :class:`~blogflow.events.SourceRecord` and a producer.

:class:`ReadPubSubEvents` is Beam's own :class:`~apache_beam.io.gcp.pubsub.ReadFromPubSub`
(``with_attributes=True``) followed by one ``Map`` that turns each message into a
``SourceRecord(payload=data, origin=<eventId attribute> or message_id)``. Every element is
timestamped with the message's ``occurredAt`` attribute (the event time), or its publish
time where the attribute is missing. Pub/Sub is read by streaming pipelines only:
Dataflow, or locally Beam's ``BundleBasedDirectRunner`` with ``--streaming``.

:func:`publish_events` is the matching producer. It publishes raw event bodies in batches
with two attributes, read from the body with :func:`blogflow.events.parse_event`:

* ``occurredAt``: the event's ``occurredAt`` in RFC 3339, UTC, ending in ``Z`` (the format
  Beam's ``timestamp_attribute`` reads);
* ``eventId``: the event's ``id``.

A body that is not a valid event is still published, without attributes: the pipeline's
``ParseEvents`` step dead-letters it with its raw payload, it is never dropped here.

**Delivery guarantee.** On Dataflow the read acknowledges messages once their bundle is
durably committed and drops redeliveries that carry an ``eventId`` it saw recently
(``id_label``). On Beam's Python DirectRunner the read acknowledges every pulled batch at
once (a crash loses what was pulled; it is for tests and local runs) and ``id_label`` is
not supported at all: Beam raises ``NotImplementedError`` when the pipeline starts
(apache/beam#18939), so :class:`ReadPubSubEvents` leaves ``id_label`` out on the
DirectRunner and says so in a warning. Duplicates then reach the pipeline, with the same
``SourceRecord.id``: blogflow's sinks are idempotent, so at-least-once delivery still has an
exactly-once effect.

Names and projects. Topics and subscriptions are given as full paths
(``projects/P/topics/T``, ``projects/P/subscriptions/S``) or as bare names, which are
resolved against the project named by ``PUBSUB_PROJECT_ID``, else ``GOOGLE_CLOUD_PROJECT``,
else ``"blogflow-local"`` (the local stack's project), when the call or the transform is
made. Every client honours ``PUBSUB_EMULATOR_HOST`` (google-cloud-pubsub switches to the
emulator, without credentials, whenever that variable is set).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Iterable
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, SwitchingDirectRunner
from apache_beam.transforms.display import DisplayDataItem
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher import exceptions as publisher_exceptions

from blogflow.events import EventRejected, SourceRecord, parse_event

__all__ = [
    "DEFAULT_PROJECT",
    "EVENT_ID_ATTRIBUTE",
    "OCCURRED_AT_ATTRIBUTE",
    "PubSubError",
    "PublishEventsError",
    "ReadPubSubEvents",
    "create_subscription",
    "create_topic",
    "default_project",
    "publish_events",
    "subscription_path",
    "topic_path",
]

_LOGGER = logging.getLogger(__name__)

#: The project bare names resolve against when neither variable below is set.
DEFAULT_PROJECT = "blogflow-local"
#: Environment variables naming the project of bare names, first match wins.
PROJECT_ENV_VARS = ("PUBSUB_PROJECT_ID", "GOOGLE_CLOUD_PROJECT")
#: The attribute carrying an event's ``occurredAt`` (RFC 3339, UTC, ``Z``).
OCCURRED_AT_ATTRIBUTE = "occurredAt"
#: The attribute carrying an event's ``id``.
EVENT_ID_ATTRIBUTE = "eventId"
#: Seconds :func:`publish_events` waits for the last message to be confirmed.
DEFAULT_PUBLISH_TIMEOUT = 60.0

# Pub/Sub's own rules: a project id as Beam checks it, and topic / subscription names of
# 3 to 255 letters, digits and - _ . ~ + %, starting with a letter, not with "goog".
_PROJECT_RE = re.compile(r"[a-z][-a-z0-9:.]{4,61}[a-z0-9]")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
_PATH_RE = re.compile(r"projects/([^/]+)/(topics|subscriptions)/([^/]+)")

# Batches of up to 100 messages or 1 MB, sent after at most 50 ms; at most 1,000 messages
# or 10 MB wait in the client at once (publish() blocks beyond that), so memory is bounded
# however many bodies the iterable yields.
_BATCH_SETTINGS = pubsub_v1.types.BatchSettings(
    max_messages=100, max_bytes=1_000_000, max_latency=0.05
)
_FLOW_CONTROL = pubsub_v1.types.PublishFlowControl(
    message_limit=1000,
    byte_limit=10_000_000,
    limit_exceeded_behavior=pubsub_v1.types.LimitExceededBehavior.BLOCK,
)


class PubSubError(RuntimeError):
    """A Pub/Sub administration call failed (after the client's own bounded retries)."""


class PublishEventsError(PubSubError):
    """Some messages were not confirmed by Pub/Sub: they failed or timed out."""


# --------------------------------------------------------------------------------- names


def default_project() -> str:
    """The project bare topic and subscription names belong to.

    Returns:
        ``$PUBSUB_PROJECT_ID``, else ``$GOOGLE_CLOUD_PROJECT``, else ``"blogflow-local"``.
    """
    for variable in PROJECT_ENV_VARS:
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return DEFAULT_PROJECT


def _resource_path(name: str, kind: str) -> str:
    """``projects/P/<kind>/N`` for a full path or a bare name; ValueError if invalid."""
    singular = kind[:-1]
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{singular} must be a non-empty Pub/Sub {singular} name, got {name!r}")
    name = name.strip()
    if name.startswith("projects/"):
        match = _PATH_RE.fullmatch(name)
        if match is None or match.group(2) != kind:
            raise ValueError(
                f"{singular} {name!r} must be a bare name or projects/<project>/{kind}/<name>"
            )
        project, short = match.group(1), match.group(3)
    elif "/" in name:
        raise ValueError(
            f"{singular} {name!r} must be a bare name or projects/<project>/{kind}/<name>"
        )
    else:
        project, short = default_project(), name
    if not _PROJECT_RE.fullmatch(project):
        raise ValueError(f"invalid Pub/Sub project id {project!r} in {singular} {name!r}")
    if not _NAME_RE.fullmatch(short) or short.lower().startswith("goog"):
        raise ValueError(
            f"invalid Pub/Sub {singular} name {short!r}: 3 to 255 letters, digits or "
            "- _ . ~ + %, starting with a letter and not with 'goog'"
        )
    return f"projects/{project}/{kind}/{short}"


def topic_path(topic: str) -> str:
    """The full path of a topic given as a bare name or as ``projects/P/topics/T``.

    Raises:
        ValueError: if the name or the project id is not valid for Pub/Sub.
    """
    return _resource_path(topic, "topics")


def subscription_path(subscription: str) -> str:
    """The full path of a subscription given as a bare name or ``projects/P/subscriptions/S``.

    Raises:
        ValueError: if the name or the project id is not valid for Pub/Sub.
    """
    return _resource_path(subscription, "subscriptions")


# ------------------------------------------------------------------------------- reading


def _honours_id_label(runner: Any) -> bool:
    """Whether ``runner`` accepts ``ReadFromPubSub(id_label=...)``.

    Beam's Python DirectRunner raises ``NotImplementedError`` for it when the pipeline
    starts (apache/beam#18939); the switching DirectRunner hands Pub/Sub reads to that
    same bundle-based runner where Prism cannot run them.
    """
    return not isinstance(runner, (BundleBasedDirectRunner, SwitchingDirectRunner))


def _to_source_record(message: PubsubMessage, id_label: str | None) -> SourceRecord:
    """The record of one message: its data, and its ``id_label`` attribute or message id."""
    attributes = message.attributes or {}
    origin = (attributes.get(id_label) if id_label else None) or message.message_id
    return SourceRecord(message.data or b"", str(origin))


class ReadPubSubEvents(beam.PTransform):
    """Reads a Pub/Sub subscription as :class:`~blogflow.events.SourceRecord` elements.

    Input: the pipeline (``PBegin``) of a streaming pipeline. Output: an unbounded
    ``PCollection`` of ``SourceRecord(payload=message data, origin=the message's
    ``id_label`` attribute, or its Pub/Sub message id where the attribute is missing)``,
    each timestamped with the message's ``timestamp_attribute`` (RFC 3339 or epoch
    milliseconds), or its publish time where that attribute is missing.

    Built on Beam's ``ReadFromPubSub(subscription, with_attributes=True,
    timestamp_attribute=..., id_label=...)``. On Dataflow ``id_label`` deduplicates
    redeliveries; Beam's Python DirectRunner does not support it (it raises
    ``NotImplementedError``), so there it is left out, a warning is logged, and a message
    delivered or published twice becomes two records with the same ``id``. The DirectRunner
    also acknowledges each pulled batch at once and holds its watermark at the wall-clock
    time of its last pull. See the module docstring for the delivery guarantee.

    Example::

        records = p | "ReadEvents" >> ReadPubSubEvents("events-sub")
    """

    def __init__(
        self,
        subscription: str,
        *,
        timestamp_attribute: str | None = OCCURRED_AT_ATTRIBUTE,
        id_label: str | None = EVENT_ID_ATTRIBUTE,
    ) -> None:
        """
        Args:
            subscription: ``projects/P/subscriptions/S``, or a bare name resolved now
                against :func:`default_project` (``PUBSUB_PROJECT_ID``, then
                ``GOOGLE_CLOUD_PROJECT``, then ``"blogflow-local"``).
            timestamp_attribute: the attribute holding each element's event time; None
                stamps every element with its publish time.
            id_label: the attribute holding each message's unique id: the record's
                ``origin`` and, where the runner supports it, the key Pub/Sub redeliveries
                are deduplicated on. None uses the Pub/Sub message id and no deduplication.

        Raises:
            ValueError: on an invalid subscription or an empty attribute name.
        """
        super().__init__()
        self._subscription = subscription_path(subscription)
        for name, value in (("timestamp_attribute", timestamp_attribute), ("id_label", id_label)):
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(
                    f"{name} must be a non-empty attribute name or None, got {value!r}"
                )
        self._timestamp_attribute = timestamp_attribute
        self._id_label = id_label

    @property
    def subscription(self) -> str:
        """The subscription's full path."""
        return self._subscription

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[SourceRecord]:
        beam_id_label = self._id_label
        if beam_id_label is not None and not _honours_id_label(pbegin.pipeline.runner):
            _LOGGER.warning(
                "%s does not support id_label for Pub/Sub reads: reading %s without "
                "deduplication on the %r attribute (records still carry it as their id)",
                type(pbegin.pipeline.runner).__name__,
                self._subscription,
                beam_id_label,
            )
            beam_id_label = None
        return (
            pbegin
            | "ReadFromPubSub"
            >> ReadFromPubSub(
                subscription=self._subscription,
                with_attributes=True,
                timestamp_attribute=self._timestamp_attribute,
                id_label=beam_id_label,
            )
            | "ToSourceRecords"
            >> beam.Map(_to_source_record, self._id_label).with_output_types(SourceRecord)
        )

    def display_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "subscription": DisplayDataItem(self._subscription, label="Pub/Sub subscription"),
        }
        if self._timestamp_attribute is not None:
            data["timestamp_attribute"] = DisplayDataItem(
                self._timestamp_attribute, label="Event-time attribute"
            )
        if self._id_label is not None:
            data["id_label"] = DisplayDataItem(self._id_label, label="Record id attribute")
        return data


# ---------------------------------------------------------------------------- producing


def _rfc3339(moment: dt.datetime) -> str:
    """``2026-11-21T10:00:00Z`` / ``2026-11-21T10:00:00.123456Z``: UTC, ``Z``, micros if any."""
    utc = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return utc.isoformat() + "Z"


def _event_attributes(body: bytes) -> dict[str, str]:
    """The message attributes of an event body; empty when it is not a valid event."""
    try:
        event = parse_event(body)
    except EventRejected as rejected:
        _LOGGER.debug("Publishing a body without attributes: %s", rejected.reason)
        return {}
    return {OCCURRED_AT_ATTRIBUTE: _rfc3339(event.occurredAt), EVENT_ID_ATTRIBUTE: event.id}


def _as_bytes(index: int, body: bytes | str) -> bytes:
    if isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        raise ValueError(f"message #{index} must be bytes or str, got {type(body).__name__}")
    if not data:
        raise ValueError(f"message #{index} is empty: Pub/Sub needs data or attributes")
    return data


def _close_publisher(publisher: Any) -> None:
    try:
        publisher.transport.close()
    except Exception:  # closing is best effort: never mask the real outcome
        _LOGGER.debug("Could not close a Pub/Sub publisher", exc_info=True)


def _settle(
    publisher: Any, futures: list[concurrent.futures.Future], timeout: float
) -> tuple[list[BaseException], int]:
    """Flush the publisher and wait for every future: (errors, futures still pending)."""
    publisher.stop()  # sends the open batches now instead of after max_latency
    done, pending = concurrent.futures.wait(futures, timeout=timeout)
    errors = [error for error in (f.exception() for f in done) if error is not None]
    return errors, len(pending)


def publish_events(
    topic: str,
    bodies: Iterable[bytes | str],
    *,
    timeout: float = DEFAULT_PUBLISH_TIMEOUT,
) -> int:
    """Publish raw event bodies to a topic, batched, with ``occurredAt`` and ``eventId``.

    Each body that :func:`~blogflow.events.parse_event` accepts gets the attributes
    ``occurredAt`` (RFC 3339, UTC, ``Z``) and ``eventId``; a body it rejects is published
    as it is, without attributes, so that the pipeline dead-letters it. The client sends
    batches of up to 100 messages and retries transient errors itself; this call then
    waits, at most ``timeout`` seconds, until Pub/Sub confirmed every message.

    Args:
        topic: ``projects/P/topics/T`` or a bare name (see :func:`topic_path`).
        bodies: message bodies, ``bytes`` or UTF-8 ``str``, each non-empty. Consumed
            lazily; on an invalid body the messages before it are still sent.
        timeout: seconds to wait for the confirmations once every body is handed over.

    Returns:
        The number of messages published.

    Raises:
        ValueError: on an invalid topic name, a non-positive timeout, or a body that is
            empty, not ``bytes``/``str``, or larger than one batch (1 MB).
        PublishEventsError: if some messages failed (e.g. the topic does not exist) or were
            not confirmed within ``timeout`` (they may still be published later).
    """
    path = topic_path(topic)
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    publisher = pubsub_v1.PublisherClient(
        batch_settings=_BATCH_SETTINGS,
        publisher_options=pubsub_v1.types.PublisherOptions(flow_control=_FLOW_CONTROL),
    )
    futures: list[concurrent.futures.Future] = []
    try:
        try:
            for index, body in enumerate(bodies):
                data = _as_bytes(index, body)
                try:
                    futures.append(publisher.publish(path, data, **_event_attributes(data)))
                except publisher_exceptions.MessageTooLargeError as error:
                    raise ValueError(f"message #{index} is too large: {error}") from None
        except BaseException:
            with contextlib.suppress(Exception):  # what was handed over still goes out
                _settle(publisher, futures, timeout)
            raise
        errors, pending = _settle(publisher, futures, timeout)
    finally:
        _close_publisher(publisher)
    if errors or pending:
        problems = []
        if errors:
            first = errors[0]
            problems.append(f"{len(errors)} failed ({type(first).__name__}: {first})")
        if pending:
            problems.append(f"{pending} not confirmed within {timeout:g}s")
        raise PublishEventsError(
            f"{len(errors) + pending} of {len(futures)} messages were not published to "
            f"Pub/Sub topic {path}: {'; '.join(problems)}"
        )
    _LOGGER.info("Published %d messages to Pub/Sub topic %s", len(futures), path)
    return len(futures)


# ------------------------------------------------------------------------ administration


def create_topic(topic: str) -> str:
    """Create a topic, or find it if it exists.

    Args:
        topic: ``projects/P/topics/T`` or a bare name (see :func:`topic_path`).

    Returns:
        The topic's full path.

    Raises:
        ValueError: on an invalid name.
        PubSubError: if Pub/Sub refused.
    """
    path = topic_path(topic)
    publisher = pubsub_v1.PublisherClient()
    try:
        publisher.create_topic(name=path)
        _LOGGER.info("Created Pub/Sub topic %s", path)
    except google_exceptions.AlreadyExists:
        _LOGGER.debug("Pub/Sub topic %s already exists", path)
    except google_exceptions.GoogleAPICallError as error:
        raise PubSubError(f"could not create Pub/Sub topic {path}: {error}") from error
    finally:
        _close_publisher(publisher)
    return path


def create_subscription(topic: str, subscription: str, *, ack_deadline: int = 60) -> str:
    """Create a pull subscription to a topic, or find it if it exists on that topic.

    Args:
        topic: ``projects/P/topics/T`` or a bare name (see :func:`topic_path`).
        subscription: ``projects/P/subscriptions/S`` or a bare name.
        ack_deadline: seconds a pulled message stays leased before Pub/Sub redelivers it,
            10 to 600. An existing subscription keeps its own deadline (a difference is
            logged).

    Returns:
        The subscription's full path.

    Raises:
        ValueError: on an invalid name or deadline.
        PubSubError: if Pub/Sub refused, or the subscription exists on another topic.
    """
    topic_full = topic_path(topic)
    path = subscription_path(subscription)
    if isinstance(ack_deadline, bool) or not isinstance(ack_deadline, int):
        raise ValueError(f"ack_deadline must be an integer, got {ack_deadline!r}")
    if not 10 <= ack_deadline <= 600:
        raise ValueError(f"ack_deadline must be 10 to 600 seconds, got {ack_deadline!r}")
    with pubsub_v1.SubscriberClient() as subscriber:
        try:
            subscriber.create_subscription(
                request={"name": path, "topic": topic_full, "ack_deadline_seconds": ack_deadline}
            )
            _LOGGER.info("Created Pub/Sub subscription %s on %s", path, topic_full)
            return path
        except google_exceptions.AlreadyExists:
            existing = _get_subscription(subscriber, path)
        except google_exceptions.GoogleAPICallError as error:
            raise PubSubError(f"could not create Pub/Sub subscription {path}: {error}") from error
    if existing.topic != topic_full:
        raise PubSubError(
            f"Pub/Sub subscription {path} already exists on topic {existing.topic}, "
            f"not on {topic_full}"
        )
    if existing.ack_deadline_seconds != ack_deadline:
        _LOGGER.warning(
            "Pub/Sub subscription %s already exists with an ack deadline of %ss (not %ss)",
            path,
            existing.ack_deadline_seconds,
            ack_deadline,
        )
    return path


def _get_subscription(subscriber: Any, path: str) -> Any:
    try:
        return subscriber.get_subscription(subscription=path)
    except google_exceptions.GoogleAPICallError as error:
        raise PubSubError(f"could not read Pub/Sub subscription {path}: {error}") from error
