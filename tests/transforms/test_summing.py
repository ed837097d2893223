"""Unit tests of the summing logic: split, map x 2, combine, merge into the stored form."""

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings
from hypothesis import strategies as st

from blogflow.events import EventRejected, parse_event
from blogflow.transforms.summing import (
    UNKNOWN_DIGEST,
    PartialSum,
    StoredSum,
    SumPackets,
    SumPacketsFn,
    count_conflicts,
    double_packet,
    merge_into_stored,
    split_array,
)


def test_split_array_makes_one_packet_per_element():
    array_id, events = split_array([3, 1, 4], array_id="arr")
    assert array_id == "arr"
    assert [(e.data.packetId, e.data.packetValue, e.data.arrayLength) for e in events] == [
        (0, 3, 3),
        (1, 1, 3),
        (2, 4, 3),
    ]
    assert [e.id for e in events] == ["arr:0", "arr:1", "arr:2"]
    assert parse_event(events[0].to_json()) == events[0]


def test_split_array_refuses_empty_and_out_of_range():
    with pytest.raises(EventRejected, match="empty"):
        split_array([])
    with pytest.raises(EventRejected, match="packetValue"):
        split_array([2**40])


def test_double_packet_keys_by_array():
    _, events = split_array([5, 7], array_id="a")
    assert double_packet(events[1]) == ("a", (1, 14, 2))


def test_combine_counts_a_redelivered_packet_once():
    fn = SumPacketsFn()
    acc = fn.create_accumulator()
    for packet in [(0, 6, 3), (1, 2, 3), (0, 6, 3), (1, 2, 3)]:
        acc = fn.add_input(acc, packet)
    out = fn.extract_output(acc)
    assert (out.total, len(out.values), out.complete) == (8, 2, False)
    acc = fn.add_input(acc, (2, 10, 3))
    assert (acc.total, acc.complete) == (18, True)


def test_contradicting_packets_are_counted_as_conflicts_not_summed():
    acc = PartialSum()
    for packet in [(0, 6, 2), (0, 8, 2), (1, 2, 3)]:
        acc.add(packet)
    assert (acc.total, acc.conflicts, acc.complete) == (6, 2, False)


def test_merge_into_stored_is_idempotent_and_completes_once():
    first = PartialSum()
    first.add((0, 6, 3))
    stored, changed = merge_into_stored("a", None, first)
    assert changed and (stored.total, stored.packets_seen, stored.status) == (6, 1, "partial")
    again, changed = merge_into_stored("a", stored, first)
    assert not changed and again == stored
    rest = PartialSum()
    for packet in [(0, 6, 3), (1, 2, 3), (2, 10, 3)]:
        rest.add(packet)
    done, changed = merge_into_stored("a", stored, rest)
    assert changed and (done.total, done.packets_seen, done.status) == (18, 3, "complete")
    assert merge_into_stored("a", done, rest) == (done, False)


def test_merge_into_stored_ignores_a_different_length():
    stored, _ = merge_into_stored("a", None, _partial([(0, 6, 3)]))
    assert merge_into_stored("a", stored, _partial([(1, 2, 4)])) == (stored, False)


def _partial(packets):
    acc = PartialSum()
    for packet in packets:
        acc.add(packet)
    return acc


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=40),
    data=st.data(),
)
def test_any_split_order_and_redelivery_gives_the_same_sum(values, data):
    """The split-across-runs property: drains of any split, in any order, with duplicates."""
    packets = [(i, v * 2, len(values)) for i, v in enumerate(values)]
    deliveries = data.draw(st.permutations(packets + data.draw(st.lists(st.sampled_from(packets)))))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(deliveries)), max_size=5)))
    runs = [deliveries[a:b] for a, b in zip([0, *cuts], [*cuts, len(deliveries)], strict=True)]
    stored = None
    complete_writes = 0
    for run in runs:
        merged, changed = merge_into_stored("a", stored, _partial(run)) if run else (stored, False)
        if changed and merged.complete:
            complete_writes += 1
        if merged is not None:
            assert merged.packets_seen <= len(values)
            assert merged.complete == (merged.packets_seen == len(values))
        stored = merged
    assert stored.total == 2 * sum(values)
    assert stored.complete and complete_writes == 1


def test_sum_packets_composite_on_a_real_runner():
    _, events = split_array([3, 1, 4, 1, 5], array_id="a")
    _, other = split_array([10], array_id="b")
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        sums = (
            p
            | beam.Create(events + events[:2] + other)
            | "SumPackets" >> SumPackets()
            | beam.GroupByKey()
            | beam.MapTuple(
                lambda key, partials: (key, SumPacketsFn().merge_accumulators(partials))
            )
            | beam.MapTuple(lambda key, acc: (key, acc.total, acc.complete))
        )
        assert_that(sums, equal_to([("a", 28, True), ("b", 20, True)]))


def test_a_packet_contradicting_a_stored_one_is_a_conflict_and_is_not_summed():
    stored, _ = merge_into_stored("a", None, _partial([(0, 6, 2)]))
    later = _partial([(0, 8, 2), (1, 4, 2)])
    assert count_conflicts(stored, later) == 1
    merged, changed = merge_into_stored("a", stored, later)
    assert changed and (merged.total, merged.complete) == (10, True)
    assert count_conflicts(merged, _partial([(0, 6, 2), (1, 4, 2)])) == 0  # redeliveries


def test_a_packet_counted_before_digests_conflicts_with_nothing():
    legacy = StoredSum("a", 2, 6, bytes([UNKNOWN_DIGEST, 0]), 1)
    assert count_conflicts(legacy, _partial([(0, 8, 2)])) == 0
    assert merge_into_stored("a", legacy, _partial([(0, 8, 2)])) == (legacy, False)
