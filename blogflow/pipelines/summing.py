"""The summing pipeline (the distributed adder): packets in, exactly-once sums out.

    source ─► ParseEvents ─► SumPackets (x 2, CombineFn per arrayId) ─► WriteSums (Mongo, Redis)
                  └─ rejected ─► WriteDeadLetters

Run it with ``blogflow run summing --source sqs://QUEUE --drain`` or
``python -m blogflow.pipelines.summing --help``.

The packets of a bundle are combined in memory and merged into MongoDB inside the same
bundle, so the effect of a message is stored before the runner commits the bundle and
the SQS source deletes it — on every runner, including FnApiRunner, whose shuffle lives
in memory. A sum merged from any split of the packets across bundles or runs, in any
order, with any redeliveries, is the same.
"""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from blogflow.io.deadletter import WriteDeadLetters
from blogflow.io.sums import WriteSums
from blogflow.options import SourceOptions, StoreOptions, read_source
from blogflow.pipelines.job import Job
from blogflow.transforms.parsing import REJECTED, ParseEvents
from blogflow.transforms.summing import SumPackets

__all__ = ["NAME", "SumToStores", "JOB", "build", "run"]

_LOGGER = logging.getLogger(__name__)

NAME = "summing"


class SumToStores(beam.PTransform):
    """Parses records, sums packets per array and writes sums and dead letters.

    Input: :class:`~blogflow.events.SourceRecord`. Output: nothing useful (a sink).
    """

    def __init__(
        self,
        *,
        mongo_uri: str | None,
        database: str,
        redis_url: str | None,
        redis_prefix: str = "",
    ) -> None:
        super().__init__()
        self._mongo_uri = mongo_uri
        self._database = database
        self._redis_url = redis_url
        self._redis_prefix = redis_prefix

    def expand(self, records: beam.PCollection) -> beam.pvalue.PDone:
        # Sums live in one global window: event time is never looked at, so not stamped.
        parsed = records | "ParseEvents" >> ParseEvents(accept={"sum_packet"}, event_time=False)
        _ = (
            parsed.events
            | "SumPackets" >> SumPackets()
            | "WriteSums"
            >> WriteSums(
                mongo_uri=self._mongo_uri,
                database=self._database,
                redis_url=self._redis_url,
                redis_prefix=self._redis_prefix,
            )
        )
        _ = parsed[REJECTED] | "WriteDeadLetters" >> WriteDeadLetters(
            NAME, mongo_uri=self._mongo_uri, database=self._database
        )
        return beam.pvalue.PDone(records.pipeline)


def build(pipeline: beam.Pipeline, options: PipelineOptions, *, streaming: bool) -> None:
    """Adds the summing job to ``pipeline``."""
    stores = options.view_as(StoreOptions)
    _ = (
        pipeline
        | "ReadSource" >> read_source(options)
        | "SumToStores"
        >> SumToStores(
            mongo_uri=stores.mongo_uri,
            database=stores.mongo_db,
            redis_url=stores.redis_url,
            redis_prefix=stores.redis_prefix,
        )
    )


JOB = Job(
    NAME,
    "Sum arrays from sum_packet events, exactly once, into MongoDB 'sums' "
    "and Redis 'sum:{arrayId}'. Bad messages go to MongoDB 'deadletters'.",
    (
        SourceOptions,
        StoreOptions,
    ),
    build,
)
run = JOB.run

if __name__ == "__main__":
    JOB.main()
