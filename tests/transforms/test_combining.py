"""CombinePerBundle on a real runner: one accumulator per key per bundle."""

import apache_beam as beam
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows

from blogflow.transforms.combining import CombinePerBundle


class _SumFn(beam.CombineFn):
    def create_accumulator(self):
        return 0

    def add_input(self, total, value):
        return total + value

    def merge_accumulators(self, totals):
        return sum(totals)

    def extract_output(self, total):
        return total


def _merged(pairs):
    """Sums the per-bundle partial sums of each key, as a store would."""
    totals = {}
    for key, partial in pairs:
        totals[key] = totals.get(key, 0) + partial
    return sorted(totals.items())


def test_pairs_are_combined_per_key():
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        pairs = p | beam.Create([("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)])
        partials = pairs | CombinePerBundle(beam.combiners.CountCombineFn())
        assert_that(
            partials | beam.combiners.ToList() | beam.Map(_merged),
            equal_to([[("a", 2), ("b", 2), ("c", 1)]]),
        )


def test_key_value_fn_maps_each_element_before_the_combine():
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        words = p | beam.Create(["apple", "avocado", "banana", "blueberry", "cherry"])
        partials = words | CombinePerBundle(
            _SumFn(), key_value_fn=lambda word: (word[0], len(word))
        )
        assert_that(
            partials | beam.combiners.ToList() | beam.Map(_merged),
            equal_to([[("a", 12), ("b", 15), ("c", 6)]]),
        )


def test_more_keys_than_max_keys_are_emitted_early_and_none_is_lost():
    with BeamTestPipeline(runner=FnApiRunner()) as p:
        pairs = p | beam.Create([(f"k{i % 7}", 1) for i in range(70)])
        partials = pairs | CombinePerBundle(beam.combiners.CountCombineFn(), max_keys=3)
        assert_that(
            partials | beam.combiners.ToList() | beam.Map(_merged),
            equal_to([[(f"k{i}", 10) for i in range(7)]]),
        )


def test_refuses_a_windowed_input_and_a_bad_max_keys():
    with pytest.raises(ValueError, match="max_keys"):
        CombinePerBundle(beam.combiners.CountCombineFn(), max_keys=0)
    p = beam.Pipeline(runner=FnApiRunner())
    windowed = p | beam.Create([("a", 1)]) | beam.WindowInto(FixedWindows(60))
    with pytest.raises(ValueError, match="globally windowed"):
        _ = windowed | CombinePerBundle(beam.combiners.CountCombineFn())
