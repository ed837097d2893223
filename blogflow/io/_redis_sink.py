"""The DoFn behind blogflow's Redis sinks: buffer a bundle, write a batch per round trip."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from blogflow.io import redis

__all__ = ["RedisBatchFn"]


class RedisBatchFn(beam.DoFn):
    """Buffers elements and writes every ``batch_size`` of them in one Redis pipeline.

    Subclasses say how a batch is written (:meth:`write`) and may check or reshape each
    element as it comes (:meth:`prepare`). The client is made in ``setup`` and closed in
    ``teardown``; a Redis error fails the bundle, which the runner retries.

    Args:
        redis_url: the Redis to write to; ``REDIS_URL`` by default.
        batch_size: elements per round trip.
        counter: the ``blogflow`` metric counting the elements written.
    """

    def __init__(self, redis_url: str | None, batch_size: int, counter: str) -> None:
        self._redis_url = redis_url
        self._batch_size = batch_size
        self._written = Metrics.counter("blogflow", counter)
        self._client: Any = None
        self._batch: list[Any] = []

    def setup(self) -> None:
        self._client = redis.connect(self._redis_url)

    def start_bundle(self) -> None:
        self._batch = []

    def prepare(self, element: Any) -> Any:
        """The element as :meth:`write` takes it; raise ValueError to refuse it."""
        return element

    def write(self, pipe: Any, batch: list[Any]) -> None:
        """Queues the commands that write ``batch`` on the pipeline ``pipe``."""
        raise NotImplementedError

    def process(self, element: Any) -> None:
        self._batch.append(self.prepare(element))
        if len(self._batch) >= self._batch_size:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        pipe = self._client.pipeline(transaction=False)
        self.write(pipe, self._batch)
        pipe.execute()
        self._written.inc(len(self._batch))
        self._batch = []

    def teardown(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
