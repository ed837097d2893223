"""The streaming too-late check is spread over a few keys, not one hot key."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.testing.util import assert_that, equal_to

from blogflow.transforms.scoring import (
    TOO_LATE_SHARDS,
    _Probe,
    _ShardHoursFn,
    too_late_shard,
)


def test_posts_spread_over_every_shard_and_keep_theirs():
    shards = {too_late_shard(f"post-{n}") for n in range(200)}
    assert shards == {str(k) for k in range(TOO_LATE_SHARDS)}
    assert too_late_shard("post-7") == too_late_shard("post-7")  # CRC-32: the same anywhere


def test_each_post_goes_to_its_shard_and_every_shard_hears_of_the_bundle():
    hours = [(("a", 7200), [1, 0, 0]), (("b", 3600), [0, 2, 0]), (("c", 10800), [0, 0, 3])]
    with beam.Pipeline(runner=BundleBasedDirectRunner()) as p:
        keyed = p | beam.Create(hours, reshuffle=False) | beam.ParDo(_ShardHoursFn(4))
        data = keyed | "Data" >> beam.Filter(lambda kv: not isinstance(kv[1], _Probe))
        probes = keyed | "Probes" >> beam.Filter(lambda kv: isinstance(kv[1], _Probe))
        assert_that(
            data,
            equal_to(
                [
                    (too_late_shard("a", 4), ("a", 7200, (1, 0, 0))),
                    (too_late_shard("b", 4), ("b", 3600, (0, 2, 0))),
                    (too_late_shard("c", 4), ("c", 10800, (0, 0, 3))),
                ]
            ),
            label="Data",
        )
        assert_that(
            probes,
            equal_to([(str(k), _Probe(3600, 10800)) for k in range(4)]),
            label="Probes",
        )
