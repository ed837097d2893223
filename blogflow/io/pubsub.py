"""Google Cloud Pub/Sub: a source of :class:`~blogflow.events.SourceRecord` and a producer.

:class:`ReadPubSubEvents` reads a subscription as
``SourceRecord(payload=data, origin=<eventId attribute> or message_id)`` elements, each
timestamped with the message's ``occurredAt`` attribute (the event time), or its publish
time where the attribute is missing. Pub/Sub is read by streaming pipelines only. How it
reads depends on the runner, what it emits does not:

* on Dataflow and on Beam's Python DirectRunners (``BundleBasedDirectRunner``,
  ``DirectRunner``) it is Beam's own :class:`~apache_beam.io.gcp.pubsub.ReadFromPubSub`
  (``with_attributes=True``) followed by one ``Map`` to records: these runners execute
  that read natively (``beam:transform:pubsub_read:v1``);
* on every other runner -- Prism (blogflow's default streaming runner), FnApiRunner,
  Flink -- which refuse that transform, it is :class:`PullFromPubSub`, blogflow's
  splittable-DoFn reader built like :mod:`blogflow.io.sqs`'s: a loop of synchronous
  ``Pull`` calls that checkpoints itself (``defer_remainder``) after ``max_bundle_records``
  messages or ``max_bundle_seconds``, with the schedule, watermark estimator and backoff of
  :mod:`blogflow.io._polling`. Its watermark never moves backwards: after a batch it
  advances to the batch's oldest element timestamp, while the subscription is idle to the
  wall clock minus a few seconds.

:func:`publish_events` is the matching producer. It publishes raw event bodies in batches
with two attributes, read from the body with :func:`blogflow.events.parse_event`:

* ``occurredAt``: the event's ``occurredAt`` in RFC 3339, UTC, ending in ``Z`` (the format
  Beam's ``timestamp_attribute`` reads);
* ``eventId``: the event's ``id``.

A body that is not a valid event is still published, without attributes: the pipeline's
``ParseEvents`` step dead-letters it with its raw payload, it is never dropped here.

**Delivery guarantee, per runner.**

* Dataflow acknowledges messages once their bundle is durably committed and drops
  redeliveries that carry an ``eventId`` it saw recently (``id_label``).
* Beam's Python DirectRunner acknowledges every pulled batch at once (a crash loses what
  was pulled; it is for tests and local runs) and does not support ``id_label`` at all:
  Beam raises ``NotImplementedError`` when the pipeline starts (apache/beam#18939), so
  :class:`ReadPubSubEvents` leaves ``id_label`` out there and says so in a warning.
* The pull reader (Prism and the others) is **at-least-once**: it acknowledges messages
  only in a bundle-finalization callback, i.e. after the runner committed the bundle that
  emitted them; a failed bundle, a crash or a cancelled job acknowledges nothing, and
  Pub/Sub delivers those messages again once the subscription's ack deadline expires.
  "Committed" is the runner's notion: Prism and FnApiRunner keep a committed bundle's
  output in memory, so a failure in a later stage (after a ``GroupByKey``) does not
  redeliver. The reader does not deduplicate. Keep ``max_bundle_seconds`` plus the
  bundle's downstream time well below the ack deadline (the reader warns when the
  subscription's is too short).

Wherever duplicates reach the pipeline they carry the same ``SourceRecord.id``: blogflow's
sinks are idempotent, so at-least-once delivery still has an exactly-once effect.

Metrics of the pull reader (namespace ``blogflow.io.pubsub``): ``messages_received``,
``checkpoints``, ``messages_acked`` and ``ack_failed``. Beam reports a bundle's metrics
before it finalizes the bundle, so acknowledgements are counted with the reader's next
bundle: those of a read's very last bundle are logged but not counted.

Names and projects. Topics and subscriptions are given as full paths
(``projects/P/topics/T``, ``projects/P/subscriptions/S``) or as bare names, which are
resolved against the project named by ``PUBSUB_PROJECT_ID``, else ``GOOGLE_CLOUD_PROJECT``,
else ``"blogflow-local"`` (the local stack's project), when the call or the transform is
made. Every client honours ``PUBSUB_EMULATOR_HOST`` (google-cloud-pubsub switches to the
emulator, without credentials, whenever that variable is set). A pipeline resolves both at
launch (``--pubsub-project``, ``--pubsub-emulator-host``, :mod:`blogflow.options`) and
passes them in: the project names the subscription before the job starts, and the pull
reader's DoFn carries the emulator's address, so its workers read no variable (Beam's own
``ReadFromPubSub``, on Dataflow and the DirectRunners, connects as Beam does).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub
from apache_beam.metrics import Metrics
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, SwitchingDirectRunner
from apache_beam.transforms.display import DisplayDataItem
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher import exceptions as publisher_exceptions

from blogflow.events import EventRejected, SourceRecord, parse_event
from blogflow.io._polling import (
    CountPosition,
    CountRestriction,
    CountRestrictionProvider,
    FinalizedTally,
    MonotonicWatermarkProvider,
    backoff,
    check_positive,
    has_bound,
    next_step,
)

__all__ = [
    "DEFAULT_PROJECT",
    "EVENT_ID_ATTRIBUTE",
    "MAX_PULL_MESSAGES",
    "OCCURRED_AT_ATTRIBUTE",
    "PubSubError",
    "PublishEventsError",
    "PullFromPubSub",
    "ReadPubSubEvents",
    "SubscriptionNotFoundError",
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
    """A Pub/Sub call failed for good, or still after bounded retries."""


class PublishEventsError(PubSubError):
    """Some messages were not confirmed by Pub/Sub: they failed or timed out."""


class SubscriptionNotFoundError(PubSubError, LookupError):
    """The subscription a reader pulls does not exist (in that project, on that server)."""


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


def _resource_path(name: str, kind: str, project: str | None = None) -> str:
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
        project, short = project or default_project(), name
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


def subscription_path(subscription: str, project: str | None = None) -> str:
    """The full path of a subscription given as a bare name or ``projects/P/subscriptions/S``.

    Args:
        project: the project of a bare name; None: :func:`default_project`.

    Raises:
        ValueError: if the name or the project id is not valid for Pub/Sub.
    """
    return _resource_path(subscription, "subscriptions", project)


def _subscriber(emulator_host: str | None) -> Any:
    """A ``SubscriberClient``: of the emulator at ``emulator_host`` (plain gRPC, no
    credentials) when given, else as google-cloud-pubsub makes it."""
    if not emulator_host:
        return pubsub_v1.SubscriberClient()
    import grpc
    from google.pubsub_v1.services.subscriber.transports.grpc import SubscriberGrpcTransport

    channel = grpc.insecure_channel(target=emulator_host)
    return pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=channel))


# ------------------------------------------------------------------------------- reading

#: Runners on which :class:`ReadPubSubEvents` uses Beam's ``ReadFromPubSub`` (matched by
#: class path along the runner's MRO, so Dataflow's module is never imported here).
_BEAM_READ_RUNNERS = frozenset({"apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"})


def _runs_beams_read(runner: Any) -> bool:
    """Whether ``runner`` executes Beam's ``ReadFromPubSub``: Dataflow (natively) and the
    Python DirectRunners (``BundleBasedDirectRunner``, and ``DirectRunner`` alias
    ``SwitchingDirectRunner``, which hands Pub/Sub reads to it). Every other runner
    (Prism, FnApiRunner, Flink, ...) gets blogflow's pull reader.
    """
    if isinstance(runner, (BundleBasedDirectRunner, SwitchingDirectRunner)):
        return True
    return any(
        f"{cls.__module__}.{cls.__qualname__}" in _BEAM_READ_RUNNERS for cls in type(runner).__mro__
    )


def _honours_id_label(runner: Any) -> bool:
    """Whether ``runner`` accepts ``ReadFromPubSub(id_label=...)``.

    Beam's Python DirectRunner raises ``NotImplementedError`` for it when the pipeline
    starts (apache/beam#18939); the switching DirectRunner hands Pub/Sub reads to that
    same bundle-based runner where Prism cannot run them.
    """
    return not isinstance(runner, (BundleBasedDirectRunner, SwitchingDirectRunner))


def _origin(attributes: Any, message_id: str, id_label: str | None) -> str:
    """A record's origin: the message's ``id_label`` attribute, else its message id."""
    return str((attributes.get(id_label) if id_label and attributes else None) or message_id)


def _to_source_record(message: PubsubMessage, id_label: str | None) -> SourceRecord:
    """The record of one message: its data, and its ``id_label`` attribute or message id."""
    return SourceRecord(
        message.data or b"", _origin(message.attributes, message.message_id, id_label)
    )


def _check_attribute(name: str, value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ValueError(f"{name} must be a non-empty attribute name or None, got {value!r}")


class ReadPubSubEvents(beam.PTransform):
    """Reads a Pub/Sub subscription as :class:`~blogflow.events.SourceRecord` elements.

    Input: the pipeline (``PBegin``) of a streaming pipeline. Output: an unbounded
    ``PCollection`` of ``SourceRecord(payload=message data, origin=the message's
    ``id_label`` attribute, or its Pub/Sub message id where the attribute is missing)``,
    each timestamped with the message's ``timestamp_attribute`` (RFC 3339 or epoch
    milliseconds), or its publish time where that attribute is missing.

    The reader depends on the runner, the output does not:

    * Dataflow and Beam's Python DirectRunners (``BundleBasedDirectRunner``,
      ``DirectRunner``): Beam's ``ReadFromPubSub(subscription, with_attributes=True,
      timestamp_attribute=..., id_label=...)`` and one ``Map`` to records. On Dataflow
      ``id_label`` deduplicates redeliveries; the DirectRunner does not support it (it
      raises ``NotImplementedError``), so there it is left out and a warning is logged. The
      DirectRunner acknowledges each pulled batch at once and holds its watermark at the
      wall-clock time of its last pull.
    * Every other runner (Prism, FnApiRunner, Flink, ...), which cannot run Beam's read:
      blogflow's own splittable-DoFn pull reader, :class:`PullFromPubSub`, unbounded. It
      acknowledges messages after the runner committed their bundle (at-least-once), does
      not deduplicate, and moves its watermark with the event times it reads.

    Either way a redelivered (or republished) event becomes a second record with the same
    ``id``. See the module docstring for the delivery guarantee per runner.

    Example::

        records = p | "ReadEvents" >> ReadPubSubEvents("events-sub")
    """

    def __init__(
        self,
        subscription: str,
        *,
        timestamp_attribute: str | None = OCCURRED_AT_ATTRIBUTE,
        id_label: str | None = EVENT_ID_ATTRIBUTE,
        project: str | None = None,
        emulator_host: str | None = None,
    ) -> None:
        """
        Args:
            subscription: ``projects/P/subscriptions/S``, or a bare name resolved now
                against ``project``, else :func:`default_project` (``PUBSUB_PROJECT_ID``,
                then ``GOOGLE_CLOUD_PROJECT``, then ``"blogflow-local"``).
            timestamp_attribute: the attribute holding each element's event time; None
                stamps every element with its publish time.
            id_label: the attribute holding each message's unique id: the record's
                ``origin`` and, where the runner supports it, the key Pub/Sub redeliveries
                are deduplicated on. None uses the Pub/Sub message id and no deduplication.
            project: the project of a bare ``subscription``.
            emulator_host: ``HOST:PORT`` of a Pub/Sub emulator the pull reader's workers
                use; None: Google's service (or ``PUBSUB_EMULATOR_HOST`` where they run).

        Raises:
            ValueError: on an invalid subscription or an empty attribute name.
        """
        super().__init__()
        self._subscription = subscription_path(subscription, project)
        self._emulator_host = emulator_host
        _check_attribute("timestamp_attribute", timestamp_attribute)
        _check_attribute("id_label", id_label)
        self._timestamp_attribute = timestamp_attribute
        self._id_label = id_label

    @property
    def subscription(self) -> str:
        """The subscription's full path."""
        return self._subscription

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[SourceRecord]:
        runner = pbegin.pipeline.runner
        if not _runs_beams_read(runner):
            return pbegin | "PullFromPubSub" >> PullFromPubSub(
                self._subscription,
                timestamp_attribute=self._timestamp_attribute,
                id_label=self._id_label,
                emulator_host=self._emulator_host,
            )
        beam_id_label = self._id_label
        if beam_id_label is not None and not _honours_id_label(runner):
            _LOGGER.warning(
                "%s does not support id_label for Pub/Sub reads: reading %s without "
                "deduplication on the %r attribute (records still carry it as their id)",
                type(runner).__name__,
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


# ----------------------------------------------------------------------- the pull reader

#: Most messages one ``Pull`` asks for (Pub/Sub's own limit).
MAX_PULL_MESSAGES = 1000

_METRICS_NAMESPACE = "blogflow.io.pubsub"
#: Most ack ids in one ``Acknowledge`` (or ``ModifyAckDeadline``) call.
_ACK_BATCH = 1000
#: Seconds a bundle's downstream work and its commit may take after its last pull: an ack
#: deadline not above ``max_bundle_seconds`` plus this is warned about.
_ACK_DEADLINE_MARGIN = 2.0
#: The shortest deadline one ``Pull`` gets, and the least time an empty one takes (no
#: busy loop where a server answers an empty pull at once).
_MIN_PULL_SECONDS = 0.5
_EMPTY_PULL_SECONDS = 0.2
#: Deadline of the administrative calls (GetSubscription, Acknowledge, ModifyAckDeadline).
_CALL_TIMEOUT = 30.0
_PULL_ATTEMPTS = 4
_ACK_ATTEMPTS = 3
_BACKOFF_SECONDS = 0.2
_MAX_BACKOFF_SECONDS = 2.0
#: Errors worth retrying: the service is busy, restarting or lost the call.
_TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    google_exceptions.Aborted,
    google_exceptions.InternalServerError,
    google_exceptions.ResourceExhausted,
    google_exceptions.ServiceUnavailable,
    google_exceptions.TooManyRequests,
    google_exceptions.Unknown,
)

_RECEIVED = Metrics.counter(_METRICS_NAMESPACE, "messages_received")
_ACKED = Metrics.counter(_METRICS_NAMESPACE, "messages_acked")
_ACK_FAILED = Metrics.counter(_METRICS_NAMESPACE, "ack_failed")
_CHECKPOINTS = Metrics.counter(_METRICS_NAMESPACE, "checkpoints")


class _PullSpec(NamedTuple):
    """The one element a :class:`_PullSubscriptionFn` processes: what to read, and how."""

    subscription: str
    timestamp_attribute: str | None
    id_label: str | None
    max_records: int | None
    max_read_time: float | None
    idle_timeout: float | None
    max_bundle_records: int
    max_bundle_seconds: float


#: Acknowledgements of finalized bundles, until a bundle reports them.
_UNREPORTED_ACKS = FinalizedTally()


def _parse_timestamp(value: str) -> Timestamp:
    """An attribute's event time, as Beam reads ``timestamp_attribute``: epoch milliseconds
    or RFC 3339, cut to microseconds.

    Raises:
        ValueError: if it is neither.
    """
    try:
        return Timestamp(micros=int(value) * 1000)
    except ValueError:
        pass
    timestamp = Timestamp.from_rfc3339(value)
    if timestamp.precision() > Timestamp.MICROS_PRECISION:
        timestamp = timestamp.to_precision(Timestamp.MICROS_PRECISION, allow_lossy_conversion=True)
    return timestamp


def _message_timestamp(message: Any, timestamp_attribute: str | None) -> Timestamp:
    """The element timestamp of a pulled message: its ``timestamp_attribute``, else (or if
    that attribute is not a time, which is logged) its publish time."""
    value = message.attributes.get(timestamp_attribute) if timestamp_attribute else None
    if value is not None:
        try:
            return _parse_timestamp(value)
        except ValueError as error:
            _LOGGER.warning(
                "Pub/Sub message %s has a %s attribute that is not a time (%s): stamped "
                "with its publish time",
                message.message_id,
                timestamp_attribute,
                error,
            )
    if not message.publish_time:
        return Timestamp.now()
    return Timestamp.from_utc_datetime(message.publish_time)


def _pulled_record(message: Any, id_label: str | None) -> SourceRecord:
    """The record of a pulled message, as :func:`_to_source_record` makes it for Beam's."""
    return SourceRecord(
        bytes(message.data), _origin(message.attributes, message.message_id, id_label)
    )


def _backoff(attempt: int) -> float:
    """Seconds to sleep before retry ``attempt`` (1-based) of a Pub/Sub call."""
    return backoff(attempt, base=_BACKOFF_SECONDS, cap=_MAX_BACKOFF_SECONDS)


class _ClientClosed(Exception):
    """The DoFn was torn down while one of its bundles was pulling."""


def _not_found(path: str, error: BaseException) -> SubscriptionNotFoundError:
    return SubscriptionNotFoundError(f"Pub/Sub subscription {path} does not exist ({error})")


class _PullSubscriptionFn(beam.DoFn):
    """Pulls one subscription per :class:`_PullSpec` element, as a splittable DoFn (bounded).

    Owns one ``SubscriberClient`` (``setup()`` / ``teardown()``); messages are acknowledged
    in the bundle-finalization callback of the bundle that emitted them.
    """

    def __init__(self, emulator_host: str | None = None) -> None:
        self._emulator_host = emulator_host
        self._client: Any = None
        self._checked: set[str] = set()
        self._closing = False

    def setup(self) -> None:
        self._client = _subscriber(self._emulator_host)
        self._checked = set()
        self._closing = False

    def teardown(self) -> None:
        # A worker that shuts down (a cancelled job) may tear the DoFn down while a bundle
        # still waits in a pull: that pull is then cancelled, and the bundle ends quietly.
        self._closing = True
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # closing is best effort
                _LOGGER.debug("Could not close a Pub/Sub subscriber", exc_info=True)
            self._client = None

    def process(
        self,
        spec: _PullSpec,
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(CountRestrictionProvider("Pub/Sub subscription")),
        watermark=beam.DoFn.WatermarkEstimatorParam(MonotonicWatermarkProvider()),
    ) -> Iterator[TimestampedValue]:
        """Pull the subscription until a bound stops the read or the bundle is full.

        Every batch is claimed before it is emitted; its ack ids go to a finalization
        callback, registered once per call, that acknowledges them after the runner
        committed the bundle (a bundle that pulled nothing acknowledges nothing).
        """
        path = spec.subscription
        self._report_acks(path)
        self._check_subscription(spec)
        restriction: CountRestriction = tracker.current_restriction()
        bounds = restriction.bounds(MAX_PULL_MESSAGES, "subscription")
        received = restriction.start
        idle = restriction.idle_seconds
        started = time.monotonic()
        in_bundle = 0
        ack_ids: list[str] = []
        # Registered for every bundle, even one that pulls nothing: Prism finalizes every
        # bundle of a stage that may ask for it, and the Python harness fails the
        # finalization of a bundle that registered no callback.
        finalizer.register(lambda: self._acknowledge(path, ack_ids))
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
                    "Stopped reading Pub/Sub subscription %s after %d messages: %s",
                    path,
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
            pull_started = time.monotonic()
            try:
                pulled = self._pull(path, step.limit, min(step.budget, spec.max_bundle_seconds))
            except _ClientClosed:
                _LOGGER.info("Stopped pulling Pub/Sub subscription %s: the worker shuts down", path)
                if tracker.try_claim(CountPosition(received, idle)):
                    tracker.defer_remainder()
                return
            if not pulled:
                idle += time.monotonic() - pull_started
                watermark.advance_idle()
                continue
            if not tracker.try_claim(CountPosition(received + len(pulled))):
                # The runner checkpointed this read during the pull: the batch is not ours.
                self._release(path, [m.ack_id for m in pulled])
                return
            idle = 0.0
            oldest = None
            for received_message in pulled:
                message = received_message.message
                timestamp = _message_timestamp(message, spec.timestamp_attribute)
                oldest = timestamp if oldest is None or timestamp < oldest else oldest
                ack_ids.append(received_message.ack_id)
                yield TimestampedValue(_pulled_record(message, spec.id_label), timestamp)
            watermark.advance(oldest)
            received += len(pulled)
            in_bundle += len(pulled)
            _RECEIVED.inc(len(pulled))

    def _check_subscription(self, spec: _PullSpec) -> None:
        """Fail clearly on a missing subscription; warn if bundles may outlast its ack
        deadline. Once per subscription and DoFn instance."""
        path = spec.subscription
        if path in self._checked:
            return
        try:
            subscription = self._client.get_subscription(
                request={"subscription": path}, timeout=_CALL_TIMEOUT
            )
        except google_exceptions.NotFound as error:
            raise _not_found(path, error) from error
        except google_exceptions.GoogleAPICallError as error:
            _LOGGER.debug("Cannot check the ack deadline of %s: %s", path, error)
            return  # the first pull tells whether it is reachable
        self._checked.add(path)
        deadline = subscription.ack_deadline_seconds
        if deadline <= spec.max_bundle_seconds + _ACK_DEADLINE_MARGIN:
            _LOGGER.warning(
                "Pub/Sub subscription %s has an ack deadline of %ss, not above "
                "max_bundle_seconds=%s plus %ss for the bundle's commit: messages may be "
                "delivered again before their bundle acknowledges them",
                path,
                deadline,
                spec.max_bundle_seconds,
                _ACK_DEADLINE_MARGIN,
            )

    def _pull(self, path: str, max_messages: int, budget: float) -> list[Any]:
        """One ``Pull`` of at most ``max_messages``, waiting about ``budget`` seconds (at
        least :data:`_MIN_PULL_SECONDS`); ``[]`` if none came. Transient errors are retried
        with backoff, a bounded number of times.

        Raises:
            SubscriptionNotFoundError: the subscription does not exist.
            PubSubError: the pull failed for good, or still after the retries.
        """
        wait = max(_MIN_PULL_SECONDS, budget)
        for attempt in range(1, _PULL_ATTEMPTS + 1):
            started = time.monotonic()
            try:
                response = self._client.pull(
                    request={"subscription": path, "max_messages": max_messages},
                    timeout=wait,
                    retry=None,
                )
            except google_exceptions.DeadlineExceeded:
                return []  # nothing came within the wait
            except google_exceptions.NotFound as error:
                raise _not_found(path, error) from error
            except google_exceptions.Cancelled as error:
                if self._closing:
                    raise _ClientClosed() from error
                raise PubSubError(f"pulling Pub/Sub subscription {path} failed: {error}") from error
            except _TRANSIENT_ERRORS as error:
                if attempt == _PULL_ATTEMPTS:
                    raise PubSubError(
                        f"pulling Pub/Sub subscription {path} failed {attempt} times: {error}"
                    ) from error
                _LOGGER.info("Retrying a pull of Pub/Sub subscription %s: %s", path, error)
                time.sleep(_backoff(attempt))
                continue
            except google_exceptions.GoogleAPICallError as error:
                raise PubSubError(f"pulling Pub/Sub subscription {path} failed: {error}") from error
            messages = list(response.received_messages)
            if not messages:
                time.sleep(max(0.0, _EMPTY_PULL_SECONDS - (time.monotonic() - started)))
            return messages
        return []  # not reached: the last attempt returns or raises

    def _call_in_batches(self, method: str, path: str, ack_ids: Sequence[str], **extra: Any) -> int:
        """Call ``Acknowledge`` or ``ModifyAckDeadline`` on ``ack_ids`` in batches, with
        bounded retries of transient errors; the number of ack ids that failed. Never raises
        (a closed client, too, only fails its ack ids).
        """
        failed = 0
        call = getattr(self._client, method)
        for first in range(0, len(ack_ids), _ACK_BATCH):
            batch = list(ack_ids[first : first + _ACK_BATCH])
            error: Exception | None = None
            for attempt in range(1, _ACK_ATTEMPTS + 1):
                try:
                    call(
                        request={"subscription": path, "ack_ids": batch, **extra},
                        timeout=_CALL_TIMEOUT,
                    )
                    error = None
                    break
                except _TRANSIENT_ERRORS as transient:
                    error = transient
                    if attempt < _ACK_ATTEMPTS:
                        time.sleep(_backoff(attempt))
                except Exception as permanent:  # e.g. NotFound: retrying cannot help
                    error = permanent
                    break
            if error is not None:
                failed += len(batch)
                _LOGGER.warning(
                    "%s of %d messages of Pub/Sub subscription %s failed (%s): they will be "
                    "delivered again",
                    method,
                    len(batch),
                    path,
                    error,
                )
        return failed

    def _acknowledge(self, path: str, ack_ids: Sequence[str]) -> None:
        """The bundle-finalization callback: acknowledge what a committed bundle emitted.

        Never raises: a message that is not acknowledged is delivered again, which
        at-least-once delivery allows.
        """
        failed = self._call_in_batches("acknowledge", path, ack_ids) if ack_ids else 0
        acked = len(ack_ids) - failed
        _UNREPORTED_ACKS.add(path, acked, failed)
        _LOGGER.debug(
            "Acknowledged %d messages of Pub/Sub subscription %s (%d failed)", acked, path, failed
        )

    def _release(self, path: str, ack_ids: Sequence[str]) -> None:
        """Hand pulled messages back at once (ack deadline 0), best effort."""
        self._call_in_batches("modify_ack_deadline", path, ack_ids, ack_deadline_seconds=0)

    @staticmethod
    def _report_acks(path: str) -> None:
        """Count the acknowledgements of earlier, finalized bundles of ``path``.

        Beam reports a bundle's metrics when the bundle is committed, before it is
        finalized: a counter incremented in a finalization callback would be dropped, so
        the callback tallies in :data:`_UNREPORTED_ACKS` and the next bundle reading that
        subscription in this process reports it.
        """
        counts = _UNREPORTED_ACKS.take(path)
        if counts.done:
            _ACKED.inc(counts.done)
        if counts.failed:
            _ACK_FAILED.inc(counts.failed)


class _PullSubscriptionForeverFn(_PullSubscriptionFn):
    """:class:`_PullSubscriptionFn` for reads without a bound: its output is unbounded."""

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        spec: _PullSpec,
        finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(CountRestrictionProvider("Pub/Sub subscription")),
        watermark=beam.DoFn.WatermarkEstimatorParam(MonotonicWatermarkProvider()),
    ) -> Iterator[TimestampedValue]:
        yield from super().process(spec, finalizer, tracker, watermark)


class PullFromPubSub(beam.PTransform):
    """Reads a Pub/Sub subscription with blogflow's splittable-DoFn pull reader.

    Input: the pipeline (``PBegin``). Output: the records :class:`ReadPubSubEvents`
    makes, ``SourceRecord(payload=data, origin=<id_label attribute> or message id)``,
    timestamped with the ``timestamp_attribute`` (RFC 3339 or epoch milliseconds) or the
    publish time. :class:`ReadPubSubEvents` uses it, unbounded, on every runner but
    Dataflow and the DirectRunners; it runs on any runner with splittable DoFns and bundle
    finalization (Prism, FnApiRunner, Flink).

    It calls the synchronous ``Pull`` in a loop and checkpoints itself (``defer_remainder``)
    after ``max_bundle_records`` messages or ``max_bundle_seconds``. **At-least-once
    delivery**: messages are acknowledged only in the bundle-finalization callback, after
    the runner committed the bundle that emitted them; a failure before that redelivers
    them once the subscription's ack deadline expires, as records with the same ``id``.
    Keep ``max_bundle_seconds`` (plus downstream time) well below the ack deadline.

    The watermark never moves backwards: after a batch it advances to the batch's oldest
    element timestamp, while the subscription is idle to the wall clock minus a few
    seconds. Pub/Sub does not order messages, so an older event can arrive later: it is
    late data, which downstream windows handle with allowed lateness; so is an event
    published more than a few seconds after its ``occurredAt`` into an idle subscription.

    With ``max_records``, ``max_read_time`` or ``idle_timeout`` the read is bounded and stops
    at the first bound reached; with none it reads forever and its output is unbounded.

    Example::

        records = p | "PullEvents" >> PullFromPubSub("events-sub", idle_timeout=30)
    """

    def __init__(
        self,
        subscription: str,
        *,
        timestamp_attribute: str | None = OCCURRED_AT_ATTRIBUTE,
        id_label: str | None = EVENT_ID_ATTRIBUTE,
        max_records: int | None = None,
        max_read_time: float | None = None,
        idle_timeout: float | None = None,
        max_bundle_records: int = 1000,
        max_bundle_seconds: float = 5.0,
        emulator_host: str | None = None,
    ) -> None:
        """
        Args:
            subscription: ``projects/P/subscriptions/S``, or a bare name resolved now
                against :func:`default_project`.
            timestamp_attribute: the attribute holding each element's event time; None
                stamps every element with its publish time.
            id_label: the attribute holding each record's ``origin``; None (or a message
                without it) uses the Pub/Sub message id.
            max_records: stop after this many messages.
            max_read_time: stop after reading for this many seconds.
            idle_timeout: stop after this many seconds without a message.
            max_bundle_records: checkpoint (end the bundle, acknowledge its messages) after
                this many messages.
            max_bundle_seconds: checkpoint after reading for this many seconds.
            emulator_host: ``HOST:PORT`` of a Pub/Sub emulator, carried by the DoFn to the
                workers; None: Google's service (or ``PUBSUB_EMULATOR_HOST`` where they run).

        Raises:
            ValueError: on an invalid subscription, an empty attribute name or a bound that
                is not a positive number.
        """
        self._emulator_host = emulator_host
        super().__init__()
        _check_attribute("timestamp_attribute", timestamp_attribute)
        _check_attribute("id_label", id_label)
        check_positive("max_records", max_records, integer=True)
        check_positive("max_read_time", max_read_time)
        check_positive("idle_timeout", idle_timeout)
        check_positive("max_bundle_records", max_bundle_records, integer=True)
        check_positive("max_bundle_seconds", max_bundle_seconds)
        self._spec = _PullSpec(
            subscription=subscription_path(subscription),
            timestamp_attribute=timestamp_attribute,
            id_label=id_label,
            max_records=max_records,
            max_read_time=max_read_time,
            idle_timeout=idle_timeout,
            max_bundle_records=max_bundle_records,
            max_bundle_seconds=max_bundle_seconds,
        )

    @property
    def subscription(self) -> str:
        """The subscription's full path."""
        return self._spec.subscription

    @property
    def bounded(self) -> bool:
        """Whether the read ends by itself (one of its bounds is set)."""
        return has_bound(self._spec)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[SourceRecord]:
        fn_class = _PullSubscriptionFn if self.bounded else _PullSubscriptionForeverFn
        pull_fn = fn_class(self._emulator_host)
        return (
            pbegin
            | "PullSpec" >> beam.Create([self._spec])
            | "PullSubscription" >> beam.ParDo(pull_fn).with_output_types(SourceRecord)
        )

    def display_data(self) -> dict[str, Any]:
        spec = self._spec
        data: dict[str, Any] = {
            "subscription": DisplayDataItem(spec.subscription, label="Pub/Sub subscription"),
            "max_bundle_records": DisplayDataItem(
                spec.max_bundle_records, label="Messages per bundle"
            ),
            "max_bundle_seconds": DisplayDataItem(
                spec.max_bundle_seconds, label="Seconds per bundle"
            ),
        }
        for name, label in (
            ("timestamp_attribute", "Event-time attribute"),
            ("id_label", "Record id attribute"),
            ("max_records", "Stop after messages"),
            ("max_read_time", "Stop after seconds"),
            ("idle_timeout", "Stop when idle for seconds"),
        ):
            value = getattr(spec, name)
            if value is not None:
                data[name] = DisplayDataItem(value, label=label)
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
