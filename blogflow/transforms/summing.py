"""The distributed adder's business logic: split, map (x 2) and combine packets per array.

A request to sum an array is split into one packet per element (:func:`split_array`).
Each packet is mapped to twice its value (:func:`double_packet`) and the packets of one
array are combined by :class:`SumPacketsFn`. Queues deliver at least once, so the
combine is keyed by ``packetId``: a redelivered packet is never counted twice, and a sum
is complete only when the distinct packets seen equal ``arrayLength``.

The stored form of a sum (:class:`StoredSum`) keeps a one-byte digest of each packet
counted rather than its value, so a partial sum written by one run is completed exactly
by a later run (:func:`merge_into_stored`) whatever the split and the order, and a later
packet that contradicts one already counted is recognised (:func:`count_conflicts`).

Conflicts: the copy of a packet counted first wins. Queues such as SQS do not keep the
order of sending, so that need not be the copy sent first; every other copy with another
value is a conflict, counted and never summed, whether it meets the first in one bundle
or in a later run (then with probability 253/254: the digest is one byte).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
import zlib
from collections.abc import Iterable, Sequence

import apache_beam as beam

from blogflow.events import EventRejected, SumPacket, make_event
from blogflow.transforms.combining import CombinePerBundle

__all__ = [
    "UNKNOWN_DIGEST",
    "Packet",
    "PartialSum",
    "StoredSum",
    "SumPackets",
    "SumPacketsFn",
    "count_conflicts",
    "double_packet",
    "merge_into_stored",
    "packet_digest",
    "split_array",
]

_LOGGER = logging.getLogger(__name__)

#: ``(packetId, doubled value, arrayLength)``: a packet after the map step.
Packet = tuple[int, int, int]
#: The digest of a packet counted before digests were kept: it conflicts with nothing.
UNKNOWN_DIGEST = 255


def packet_digest(value: int) -> int:
    """A packet value's one-byte digest, 1-254 (0 means "not counted")."""
    return zlib.crc32(value.to_bytes(8, "little", signed=True)) % 254 + 1


def split_array(
    values: Sequence[int],
    *,
    array_id: str | None = None,
    user_id: str | None = None,
    occurred_at: dt.datetime | None = None,
) -> tuple[str, list[SumPacket]]:
    """Split an array into ``sum_packet`` events, one per element, as the sumArray API does.

    Args:
        values: the numbers to add.
        array_id: the request's id; a fresh UUID by default.
        user_id: who asked, copied to every envelope.
        occurred_at: the event time of every packet; now by default.

    Returns:
        ``(arrayId, events)`` with ``events[i]`` carrying ``packetId=i``, ``packetValue=values[i]``
        and ``arrayLength=len(values)``. Each event id is ``"<arrayId>:<packetId>"``, so a
        re-sent packet is recognisably the same event.

    Raises:
        blogflow.events.EventRejected: for an empty array or a value out of range.
    """
    array_id = array_id or uuid.uuid4().hex
    occurred_at = occurred_at or dt.datetime.now(dt.timezone.utc)
    if not values:
        raise EventRejected("cannot sum an empty array")
    events = [
        make_event(
            "sum_packet",
            {
                "arrayId": array_id,
                "packetId": index,
                "packetValue": value,
                "arrayLength": len(values),
            },
            user_id=user_id,
            occurred_at=occurred_at,
            event_id=f"{array_id}:{index}",
        )
        for index, value in enumerate(values)
    ]
    return array_id, events  # type: ignore[return-value]


def double_packet(event: SumPacket) -> tuple[str, Packet]:
    """The map step: key a packet by its array and double its value."""
    data = event.data
    return data.arrayId, (data.packetId, data.packetValue * 2, data.arrayLength)


@dataclasses.dataclass
class PartialSum:
    """The packets of one array seen so far: the accumulator of :class:`SumPacketsFn`.

    Attributes:
        array_length: the array's length as its packets declare it (0 before any packet).
        values: doubled value per distinct ``packetId``.
        conflicts: packets that contradicted earlier ones (another length, or another
            value for a ``packetId`` already seen) and were not counted. The first seen wins.
    """

    array_length: int = 0
    values: dict[int, int] = dataclasses.field(default_factory=dict)
    conflicts: int = 0

    def add(self, packet: Packet) -> None:
        packet_id, value, length = packet
        if not self.array_length:
            self.array_length = length
        elif length != self.array_length:
            self.conflicts += 1
            return
        seen = self.values.get(packet_id)
        if seen is None:
            self.values[packet_id] = value
        elif seen != value:
            self.conflicts += 1

    def merge(self, other: PartialSum) -> None:
        """Adds ``other``'s packets to this one; packets already here win."""
        if not other.array_length:
            return
        self.conflicts += other.conflicts
        if not self.array_length:
            self.array_length = other.array_length
        elif other.array_length != self.array_length:
            self.conflicts += len(other.values)
            return
        for packet_id, value in other.values.items():
            self.add((packet_id, value, other.array_length))

    @property
    def total(self) -> int:
        return sum(self.values.values())

    @property
    def complete(self) -> bool:
        return bool(self.array_length) and len(self.values) == self.array_length


class SumPacketsFn(beam.CombineFn):
    """Combines the doubled packets of one array; redelivered packets count once.

    Input: :data:`Packet` tuples of one arrayId. Output: the :class:`PartialSum`, whose
    ``total`` is the sum and ``complete`` says whether every packet has been seen.
    """

    def create_accumulator(self) -> PartialSum:
        return PartialSum()

    def add_input(self, accumulator: PartialSum, packet: Packet) -> PartialSum:
        # PartialSum.add inlined for the common case: this runs once per packet.
        packet_id, value, length = packet
        if length == accumulator.array_length and packet_id not in accumulator.values:
            accumulator.values[packet_id] = value
        else:
            accumulator.add(packet)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[PartialSum]) -> PartialSum:
        merged = PartialSum()
        for accumulator in accumulators:
            merged.merge(accumulator)
        return merged

    def extract_output(self, accumulator: PartialSum) -> PartialSum:
        return accumulator


@dataclasses.dataclass(frozen=True)
class StoredSum:
    """A sum as stored: its total so far and a bitmap of the packets already counted.

    Attributes:
        array_id: the request's id.
        array_length: the number of packets that make the array.
        total: sum of the doubled values of the packets counted so far.
        seen: one byte per packet: 0 while packet ``i`` is not counted, else the
            :func:`packet_digest` of the value counted (or :data:`UNKNOWN_DIGEST`).
        packets_seen: number of packets counted.
    """

    array_id: str
    array_length: int
    total: int
    seen: bytes
    packets_seen: int

    @property
    def complete(self) -> bool:
        return self.packets_seen == self.array_length

    @property
    def status(self) -> str:
        return "complete" if self.complete else "partial"


def merge_into_stored(
    array_id: str, stored: StoredSum | None, partial: PartialSum
) -> tuple[StoredSum, bool]:
    """Counts the packets of ``partial`` that ``stored`` has not counted yet.

    Args:
        array_id: the array both describe.
        stored: what is stored for the array, or None when nothing is.
        partial: packets seen since.

    Returns:
        ``(merged, changed)``; ``changed`` is False when ``partial`` added nothing, so
        the caller need not write (a replay or a redelivery after completion). Packets
        that declare another length than the stored one are not counted (logged).
    """
    if stored is None:
        empty = bytes(partial.array_length)
        stored = StoredSum(array_id, partial.array_length, 0, empty, 0)
    if partial.array_length != stored.array_length:
        _LOGGER.warning(
            "array %s: %d packets declare length %d but it is stored with length %d; ignored",
            array_id,
            len(partial.values),
            partial.array_length,
            stored.array_length,
        )
        return stored, False
    seen = bytearray(stored.seen)
    total, counted = stored.total, stored.packets_seen
    if not counted:  # nothing stored yet: every packet is new
        for packet_id, value in partial.values.items():
            seen[packet_id] = packet_digest(value)
        total, counted = partial.total, len(partial.values)
    else:
        for packet_id, value in partial.values.items():
            if not seen[packet_id]:
                seen[packet_id] = packet_digest(value)
                total += value
                counted += 1
    if counted == stored.packets_seen:
        return stored, False
    return StoredSum(array_id, stored.array_length, total, bytes(seen), counted), True


def count_conflicts(stored: StoredSum | None, partial: PartialSum) -> int:
    """How many packets of ``partial`` contradict a packet ``stored`` already counted
    (another value for the same ``packetId``); they are not summed."""
    if stored is None or partial.array_length != stored.array_length:
        return 0
    seen = stored.seen
    return sum(
        1
        for packet_id, value in partial.values.items()
        if seen[packet_id] not in (0, UNKNOWN_DIGEST, packet_digest(value))
    )


class SumPackets(beam.PTransform):
    """Maps ``sum_packet`` events (x 2) and combines them per array within each bundle.

    The map step (:func:`double_packet`) runs inside the combine's DoFn, as its
    ``key_value_fn``: as a step of its own it cost a sixth of Beam's overhead per packet.

    Input: :class:`~blogflow.events.SumPacket` events in the global window.
    Output: ``(arrayId, PartialSum)`` per array per bundle; a store merges them with
    :func:`merge_into_stored` (see ``blogflow.io.sums.WriteSums``).
    """

    def __init__(self, *, max_keys: int = 10_000) -> None:
        super().__init__()
        self._max_keys = max_keys

    def expand(self, events: beam.PCollection) -> beam.PCollection:
        return events | "DoubleAndSumPerArray" >> CombinePerBundle(
            SumPacketsFn(), key_value_fn=double_packet, max_keys=self._max_keys
        )
