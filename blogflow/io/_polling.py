"""What the polling SQS and Kinesis sources, and their producers, have in common.

The sources of :mod:`blogflow.io.sqs` and :mod:`blogflow.io.kinesis` read one element (a
queue, a shard) with a splittable DoFn that polls the service in a loop, checkpoints itself
after ``max_bundle_records`` items or ``max_bundle_seconds`` and stops at the first of its
bounds (``max_records``, ``max_read_time``, ``idle_timeout``). This module holds the parts
that are the same for both:

- :func:`next_step`, the reading schedule: stop, checkpoint or poll, and how much;
- :class:`MonotonicWatermarkEstimator` and its provider: a watermark the reader advances
  to the oldest service timestamp of each batch, and to the wall clock while idle;
- :class:`AWSClientFn`, a DoFn that owns one boto3 client;
- :func:`backoff` and :func:`check_positive`, for retries and argument checks;
- :func:`batches`, which cuts a producer's items into batch calls limited in count and
  bytes.

What a timestamp means, how a claim looks and how the service is called stay in each
source's module.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import apache_beam as beam
from apache_beam.io.iobase import WatermarkEstimator
from apache_beam.transforms.core import WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from blogflow.io import aws

__all__ = [
    "IDLE_WATERMARK_LAG",
    "AWSClientFn",
    "Bounds",
    "MonotonicWatermarkEstimator",
    "MonotonicWatermarkProvider",
    "ReadSettings",
    "Step",
    "backoff",
    "batches",
    "check_positive",
    "has_bound",
    "next_step",
]

#: How far behind the wall clock the watermark stays while a reader is idle: the service
#: stamps its timestamps on its own clock, which may differ a little from this worker's.
IDLE_WATERMARK_LAG = Duration(seconds=5)

_T = TypeVar("_T")


# --------------------------------------------------------------------- argument checks


def check_positive(name: str, value: float | None, *, integer: bool = False) -> None:
    """Check an optional argument that must be a positive, finite number.

    Args:
        name: the argument's name, for the error message.
        value: the argument; None passes.
        integer: whether the value must be an ``int`` (a ``bool`` never passes).

    Raises:
        ValueError: if ``value`` is not a number (an integer), not positive or not finite.
    """
    if value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to sleep before retry ``attempt`` (1-based): exponential, capped, jittered.

    Args:
        attempt: the retry, 1 for the first.
        base: the nominal delay of the first retry, in seconds.
        cap: the longest nominal delay, in seconds.

    Returns:
        ``min(cap, base * 2 ** (attempt - 1))`` times a random factor from 0.5 to 1.
    """
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def batches(
    sized_items: Iterable[tuple[_T, int]], *, max_items: int, max_bytes: int
) -> Iterator[list[_T]]:
    """Group items, in order, into batches of at most ``max_items`` items and ``max_bytes``.

    Consumed lazily: a batch is yielded once the next item does not fit in it.

    Args:
        sized_items: ``(item, size in bytes)`` pairs; each size at most ``max_bytes``.
        max_items: the most items of one batch.
        max_bytes: the most bytes of one batch.

    Yields:
        Non-empty lists of items.
    """
    batch: list[_T] = []
    batch_bytes = 0
    for item, size in sized_items:
        if batch and (len(batch) == max_items or batch_bytes + size > max_bytes):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(item)
        batch_bytes += size
    if batch:
        yield batch


# --------------------------------------------------------------------- the read's settings


class ReadSettings(Protocol):
    """The settings every polling read has (each source's ``_ReadSpec``)."""

    @property
    def max_records(self) -> int | None: ...

    @property
    def max_read_time(self) -> float | None: ...

    @property
    def idle_timeout(self) -> float | None: ...

    @property
    def max_bundle_records(self) -> int: ...

    @property
    def max_bundle_seconds(self) -> float: ...


def has_bound(settings: ReadSettings) -> bool:
    """Whether a read ends by itself: one of its bounds is set."""
    return (
        settings.max_records is not None
        or settings.max_read_time is not None
        or settings.idle_timeout is not None
    )


# ------------------------------------------------------------------ the reading schedule


class Bounds(NamedTuple):
    """Where one reader must stop, and how much one poll may return.

    Attributes:
        max_records: the reader stops once it emitted this many items, or never.
        deadline: the reader stops at this wall-clock time (epoch seconds), or never.
        idle_timeout: the reader stops after this many seconds without an item, or never.
        max_batch: the most items one poll of the service returns.
        reader: what the reader reads (``"queue"``, ``"shard"``), for the reasons.
    """

    max_records: int | None
    deadline: float | None
    idle_timeout: float | None
    max_batch: int
    reader: str


class Step(NamedTuple):
    """What a reader does next: ``"stop"``, ``"checkpoint"`` or ``"poll"``.

    A poll asks for at most ``limit`` items and may wait at most ``budget`` seconds.
    """

    action: str
    reason: str = ""
    limit: int = 0
    budget: float = 0.0


def next_step(
    settings: ReadSettings,
    bounds: Bounds,
    *,
    emitted: int,
    idle_seconds: float,
    bundle_records: int,
    bundle_seconds: float,
    now: float,
) -> Step:
    """Decide whether a reader stops, checkpoints or polls, and for how many items.

    The reader's bounds come first (``max_records``, then the deadline, then
    ``idle_timeout``), then the bundle's; a poll gets the time left before the nearest.

    Args:
        settings: the read's settings.
        bounds: the reader's bounds, from its restriction.
        emitted: items the reader emitted over the whole read so far.
        idle_seconds: seconds read without an item since the last one.
        bundle_records: items emitted in the current bundle.
        bundle_seconds: seconds the current bundle has been reading.
        now: the wall-clock time, epoch seconds.

    Returns:
        The step, with a ``reason`` for a stop or a checkpoint, and for a poll a ``limit``
        and a ``budget`` (seconds, at least 0).
    """
    max_records, deadline, idle_timeout, max_batch, reader = bounds
    if max_records is not None and emitted >= max_records:
        return Step("stop", f"max_records={max_records} reached for the {reader}")
    if deadline is not None and now >= deadline:
        return Step("stop", f"max_read_time={settings.max_read_time}s reached")
    if idle_timeout is not None and idle_seconds >= idle_timeout:
        return Step("stop", f"{reader} idle for {idle_seconds:.1f}s")
    if bundle_records >= settings.max_bundle_records:
        return Step("checkpoint", f"max_bundle_records={settings.max_bundle_records} reached")
    if bundle_seconds >= settings.max_bundle_seconds:
        return Step("checkpoint", f"max_bundle_seconds={settings.max_bundle_seconds} reached")
    limit = min(max_batch, settings.max_bundle_records - bundle_records)
    if max_records is not None:
        limit = min(limit, max_records - emitted)
    budgets = [settings.max_bundle_seconds - bundle_seconds]
    if deadline is not None:
        budgets.append(deadline - now)
    if idle_timeout is not None:
        budgets.append(idle_timeout - idle_seconds)
    return Step("poll", limit=limit, budget=max(0.0, min(budgets)))


# --------------------------------------------------------------------------- the watermark


class MonotonicWatermarkEstimator(WatermarkEstimator):
    """A watermark the reader sets from service timestamps, that never moves backwards.

    After a batch the reader advances it to the batch's oldest timestamp; while the reader
    is idle, to the wall clock minus :data:`IDLE_WATERMARK_LAG`. Timestamps the DoFn
    outputs are not observed: an item older than the watermark is late data.
    """

    def __init__(self, state: Timestamp | None) -> None:
        self._watermark = MIN_TIMESTAMP if state is None else state

    def observe_timestamp(self, timestamp: Timestamp) -> None:
        pass

    def current_watermark(self) -> Timestamp:
        return self._watermark

    def get_estimator_state(self) -> Timestamp:
        return self._watermark

    def advance(self, timestamp: Timestamp) -> None:
        """Move the watermark to ``timestamp`` unless it is already further."""
        if timestamp > self._watermark:
            self._watermark = timestamp

    def advance_idle(self) -> None:
        """Move the watermark to the wall clock minus :data:`IDLE_WATERMARK_LAG`."""
        self.advance(Timestamp.now() - IDLE_WATERMARK_LAG)


class MonotonicWatermarkProvider(WatermarkEstimatorProvider):
    """Makes a :class:`MonotonicWatermarkEstimator`, starting at ``MIN_TIMESTAMP``."""

    def initial_estimator_state(self, element: Any, restriction: Any) -> None:
        return None

    def create_watermark_estimator(
        self, estimator_state: Timestamp | None
    ) -> MonotonicWatermarkEstimator:
        return MonotonicWatermarkEstimator(estimator_state)


# ------------------------------------------------------------------------------ the DoFn


class AWSClientFn(beam.DoFn):
    """A DoFn that owns one boto3 client: made in ``setup()``, closed in ``teardown()``.

    Subclasses name the client's service in :attr:`service` and use ``self._client``.
    """

    #: The boto3 service name of the client, e.g. ``"sqs"``.
    service: ClassVar[str]

    def __init__(self) -> None:
        self._client: Any = None

    def setup(self) -> None:
        self._client = aws.make_client(self.service)

    def teardown(self) -> None:
        if self._client is not None:
            aws.close_client(self._client)
            self._client = None
