"""What the polling SQS, Kinesis and Pub/Sub sources, and their producers, have in common.

The sources of :mod:`blogflow.io.sqs` and :mod:`blogflow.io.kinesis` read one element (a
queue, a shard) with a splittable DoFn that polls the service in a loop, checkpoints itself
after ``max_bundle_records`` items or ``max_bundle_seconds`` and stops at the first of its
bounds (``max_records``, ``max_read_time``, ``idle_timeout``). This module holds the parts
that are the same for both:

- :func:`next_step`, the reading schedule: stop, checkpoint or poll, and how much;
- :class:`MonotonicWatermarkEstimator` and its provider: a watermark the reader advances
  to the oldest service timestamp of each batch, and to the wall clock while idle;
- :class:`CountTracker` and :class:`CountRestrictionProvider`: the restriction of a read
  whose only position is how many items it emitted (a queue, a subscription), closed by a
  bound or a checkpoint (used by :mod:`blogflow.io.pubsub`);
- :class:`FinalizedTally`: what finalization callbacks did (deletes, acks), held until a
  later bundle can report it as metrics;
- :class:`AWSClientFn`, a DoFn that owns one boto3 client;
- :func:`backoff`, :func:`check_positive` and :func:`split_evenly`, for retries,
  argument checks and a bound shared by several readers;
- :func:`batches`, which cuts a producer's items into batch calls limited in count and
  bytes.

What a timestamp means, how a claim looks and how the service is called stay in each
source's module.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, NamedTuple, Protocol, TypeVar

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker, WatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from blogflow.io import aws

__all__ = [
    "IDLE_BUNDLE_SECONDS",
    "IDLE_WATERMARK_LAG",
    "AWSClientFn",
    "Bounds",
    "CountPosition",
    "CountRestriction",
    "CountRestrictionProvider",
    "CountTracker",
    "FinalizedCounts",
    "FinalizedTally",
    "MonotonicWatermarkEstimator",
    "MonotonicWatermarkProvider",
    "ReadSettings",
    "Step",
    "backoff",
    "batches",
    "check_positive",
    "has_bound",
    "next_step",
    "split_evenly",
]

#: How far behind the wall clock the watermark stays while a reader is idle: the service
#: stamps its timestamps on its own clock, which may differ a little from this worker's.
IDLE_WATERMARK_LAG = Duration(seconds=5)

#: A bundle that has read nothing for this long checkpoints, whatever ``max_bundle_seconds``
#: allows: a runner that gives one bundle several reads gets on to the next one soon.
#: Prism does (its dynamic splits are turned off, see blogflow.runners.profiles): the
#: shards of a Kinesis stream are read one after another in a bundle, and an idle shard
#: would otherwise hold the others back for ``max_bundle_seconds`` per bundle.
IDLE_BUNDLE_SECONDS = 1.0

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


def split_evenly(total: int | None, parts: int) -> list[int | None]:
    """``total`` spread over ``parts`` readers: the first ``total % parts`` get one more.

    A bound of None (no bound) gives every part None.
    """
    if total is None:
        return [None] * parts
    share, extra = divmod(total, parts)
    return [share + (1 if index < extra else 0) for index in range(parts)]


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
    ``idle_timeout``), then the bundle's (``max_bundle_records``, ``max_bundle_seconds``,
    and :data:`IDLE_BUNDLE_SECONDS` for a bundle that read nothing yet); a poll gets the
    time left before the nearest.

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
    if bundle_records == 0 and bundle_seconds >= IDLE_BUNDLE_SECONDS:
        return Step("checkpoint", f"nothing read for {bundle_seconds:.1f}s")
    limit = min(max_batch, settings.max_bundle_records - bundle_records)
    if max_records is not None:
        limit = min(limit, max_records - emitted)
    budgets = [settings.max_bundle_seconds - bundle_seconds]
    if bundle_records == 0:
        budgets.append(IDLE_BUNDLE_SECONDS - bundle_seconds)
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


# ------------------------------------------------------------- a restriction that counts


class CountRestriction(NamedTuple):
    """What is left of a read whose position is a count of items. Pickles as a plain tuple.

    Attributes:
        start: items emitted by earlier parts of the read (before checkpoints).
        stop: the read ends once this many items were emitted (``max_records``), or never.
        deadline: the read ends at this wall-clock time (epoch seconds), or never.
        idle_timeout: the read ends after this many seconds of polling without an item.
        idle_seconds: seconds already polled without an item at the end of earlier parts.
    """

    start: int = 0
    stop: int | None = None
    deadline: float | None = None
    idle_timeout: float | None = None
    idle_seconds: float = 0.0

    def bounds(self, max_batch: int, reader: str) -> Bounds:
        """The bounds of this read, for :func:`next_step`."""
        return Bounds(self.stop, self.deadline, self.idle_timeout, max_batch, reader)


class CountPosition(NamedTuple):
    """A claim on a :class:`CountRestriction`.

    Attributes:
        end: items emitted by the whole read once the claimed batch is out.
        idle_seconds: seconds polled without an item up to this claim.
        last: the read ends here (a bound was reached): the claim fails and closes the read.
    """

    end: int
    idle_seconds: float = 0.0
    last: bool = False


class CountTracker(RestrictionTracker):
    """Tracks a read whose position is a count of items that only grows, until a bound or
    a checkpoint closes it.

    ``try_claim(CountPosition(end, idle))`` claims the batch that brings the read to
    ``end`` items. ``try_claim(CountPosition(end, idle, last=True))`` stops the read early
    (a drain, a time limit): it returns ``False`` and shrinks the restriction to what was
    read, so :meth:`check_done` passes. A checkpoint (``try_split(0)``) hands the rest of
    the read, with its counters, to a residual. Splits with a non-zero fraction are
    refused: a queue or a subscription has no positions two readers could divide.
    """

    def __init__(self, restriction: CountRestriction, reader: str = "source") -> None:
        self._restriction = restriction
        self._position = CountPosition(restriction.start, restriction.idle_seconds)
        self._closed = False
        self._reader = reader

    def _finished(self) -> bool:
        stop = self._restriction.stop
        return self._closed or (stop is not None and self._position.end >= stop)

    def current_restriction(self) -> CountRestriction:
        return self._restriction

    def current_progress(self) -> RestrictionProgress:
        completed = self._position.end - self._restriction.start
        if self._finished():
            remaining = 0
        elif self._restriction.stop is not None:
            remaining = self._restriction.stop - self._position.end
        else:
            remaining = 1  # unknown: the service does not say what is left
        return RestrictionProgress(completed=completed, remaining=remaining)

    def try_claim(self, position: CountPosition) -> bool:
        if position.end < self._position.end:
            raise ValueError(
                f"claims on a {self._reader} read must not go backwards: {position.end} "
                f"items claimed after {self._position.end}"
            )
        if self._finished():
            return False
        if position.last:
            self._restriction = self._restriction._replace(stop=self._position.end)
            self._closed = True
            return False
        stop = self._restriction.stop
        if stop is not None and position.end > stop:
            raise ValueError(f"claimed {position.end} items of a read limited to {stop} items")
        self._position = position
        return True

    def try_split(
        self, fraction_of_remainder: float
    ) -> tuple[CountRestriction, CountRestriction] | None:
        if fraction_of_remainder > 0 or self._finished():
            return None
        end = self._position.end
        primary = self._restriction._replace(stop=end)
        residual = self._restriction._replace(start=end, idle_seconds=self._position.idle_seconds)
        self._restriction = primary
        self._closed = True
        return primary, residual

    def check_done(self) -> None:
        if not self._finished():
            raise ValueError(
                f"the read of a {self._reader} returned after {self._position.end} items "
                f"without reaching a bound or checkpointing: {self._restriction}"
            )

    def is_bounded(self) -> bool:
        r = self._restriction
        return r.stop is not None or r.deadline is not None or r.idle_timeout is not None


class CountRestrictionProvider(RestrictionProvider):
    """Makes the :class:`CountRestriction` of a read from its settings (a
    :class:`ReadSettings`): one reader per element, no initial splits.

    Args:
        reader: what is read (``"Pub/Sub subscription"``), for the tracker's errors.
    """

    def __init__(self, reader: str = "source") -> None:
        self._reader = reader

    def initial_restriction(self, element: ReadSettings) -> CountRestriction:
        deadline = None if element.max_read_time is None else time.time() + element.max_read_time
        return CountRestriction(
            stop=element.max_records, deadline=deadline, idle_timeout=element.idle_timeout
        )

    def create_tracker(self, restriction: CountRestriction) -> CountTracker:
        return CountTracker(restriction, self._reader)

    def split(self, element: Any, restriction: CountRestriction) -> Iterator[CountRestriction]:
        yield restriction

    def restriction_size(self, element: Any, restriction: CountRestriction) -> int:
        if restriction.stop is not None:
            return max(0, restriction.stop - restriction.start)
        return 1

    def truncate(self, element: Any, restriction: CountRestriction) -> None:
        # Draining a pipeline stops reading: unread items simply stay in the service.
        return None


# ------------------------------------------------------- what finalization callbacks did


class FinalizedCounts(NamedTuple):
    """Items a finalization callback settled (deleted, acknowledged) and failed to."""

    done: int = 0
    failed: int = 0


class FinalizedTally:
    """What finalization callbacks settled that no bundle has reported yet, per queue or
    subscription, in this worker process.

    Beam reports a bundle's metrics when the bundle is committed, before it is finalized:
    a counter incremented in a finalization callback would be dropped. So the callback
    adds here and the next bundle reading that queue reports it. The tally is the
    process's, not a DoFn instance's: Prism may finalize one bundle while the next runs on
    another instance of the DoFn, and an instance may then sit idle in the harness's cache
    with its tally for good.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, FinalizedCounts] = {}

    def add(self, key: str, done: int, failed: int) -> None:
        with self._lock:
            old = self._counts.get(key, FinalizedCounts())
            self._counts[key] = FinalizedCounts(old.done + done, old.failed + failed)

    def take(self, key: str) -> FinalizedCounts:
        """What was settled for ``key`` since the last take, and forget it."""
        with self._lock:
            return self._counts.pop(key, FinalizedCounts())


# ------------------------------------------------------------------------------ the DoFn


class AWSClientFn(beam.DoFn):
    """A DoFn that owns one boto3 client: made in ``setup()``, closed in ``teardown()``.

    Subclasses name the client's service in :attr:`service` and use ``self._client``.

    Args:
        aws_config: where the client connects, resolved at launch and pickled with the
            DoFn; None: boto3's chain where the DoFn runs.
    """

    #: The boto3 service name of the client, e.g. ``"sqs"``.
    service: ClassVar[str]

    def __init__(self, aws_config: aws.AwsConfig | None = None) -> None:
        self._aws = aws_config
        self._client: Any = None

    def setup(self) -> None:
        self._client = aws.make_client(self.service, aws=self._aws)

    def teardown(self) -> None:
        if self._client is not None:
            aws.close_client(self._client)
            self._client = None
