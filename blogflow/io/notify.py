"""NotifyProgress: the sink that pushes backup progress to users' browsers.

Input: ``(userId, message)`` with ``message`` a dict ``{"type": "backup_progress",
"backupId", "postId", "status", "done", "total"}``; a message without one of these fields
fails the bundle with ``ValueError``. Two backends:

* ``redis`` keeps each backup's latest message and publishes it on the user's channel
  (:func:`blogflow.io.progress.publish_progress`); the WebSocket notifier
  (``blogflow notifier serve``) forwards it to that user's connections only. Messages of
  a bundle go out in one pipelined round trip, in the order they came.
* ``apigateway`` posts each message, as compact JSON, to every connection of the user on
  an API Gateway WebSocket API (:mod:`blogflow.io.apigateway`): the connections are read
  from the DynamoDB table the API's ``$connect`` handler fills, through its ``byUserId``
  index, once per user per flush of up to ``batch_size`` messages; the posts go out in
  the order the messages came. A connection that answers ``410 Gone`` is deleted from the
  table and skipped for the rest of the flush; other errors are retried with bounded
  backoff, then fail the bundle. Counters (namespace ``blogflow``):
  ``progress_messages_sent`` (one per message and connection it reached) and
  ``progress_stale_connections_removed``.

Delivery: at least once. A replayed message sets the same latest state again; browsers
show the latest count, so a repeat changes nothing they show.
"""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from blogflow.io import apigateway, aws, progress
from blogflow.io._redis_sink import RedisBatchFn
from blogflow.io.aws import AwsConfig

__all__ = ["BACKENDS", "NotifyProgress"]

BACKENDS = ("redis", "apigateway")
_FIELDS = ("type", "backupId", "postId", "status", "done", "total")


def _progress_message(element: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """``(userId, message)`` with only the message's known fields; ValueError if some miss."""
    user_id, message = element
    missing = [field for field in _FIELDS if field not in message]
    if missing:
        raise ValueError(f"progress message without {missing}")
    return user_id, {field: message[field] for field in _FIELDS}


class _NotifyRedisFn(RedisBatchFn):
    def __init__(self, redis_url: str | None, prefix: str, batch_size: int) -> None:
        super().__init__(redis_url, batch_size, "progress_messages_sent")
        self._prefix = prefix

    def prepare(self, element: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        return _progress_message(element)

    def write(self, pipe: Any, batch: list[tuple[str, dict[str, Any]]]) -> None:
        for user_id, message in batch:
            progress.queue_progress(pipe, user_id, message, self._prefix)


class _NotifyApiGatewayFn(beam.DoFn):
    """Buffers ``(userId, message)`` and posts every ``batch_size`` of them to the users'
    WebSocket connections, looking each user's connections up once per flush."""

    def __init__(
        self,
        endpoint_url: str,
        table: str,
        region: str | None,
        batch_size: int,
        max_attempts: int,
        aws_config: AwsConfig | None = None,
    ) -> None:
        self._aws = aws_config
        self._endpoint_url = endpoint_url
        self._table = table
        self._region = region
        self._batch_size = batch_size
        self._max_attempts = max_attempts
        self._sent = Metrics.counter("blogflow", "progress_messages_sent")
        self._stale = Metrics.counter("blogflow", "progress_stale_connections_removed")
        self._dynamodb: Any = None
        self._management: Any = None
        self._batch: list[tuple[str, dict[str, Any]]] = []

    def setup(self) -> None:
        self._dynamodb = apigateway.dynamodb_client(region_name=self._region, aws=self._aws)
        self._management = apigateway.management_client(
            self._endpoint_url, region_name=self._region, aws=self._aws
        )

    def start_bundle(self) -> None:
        self._batch = []

    def process(self, element: tuple[str, dict[str, Any]]) -> None:
        self._batch.append(_progress_message(element))
        if len(self._batch) >= self._batch_size:
            self._flush()

    def finish_bundle(self) -> None:
        self._flush()

    def _flush(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        connections = {
            user_id: apigateway.connections_of(self._dynamodb, self._table, user_id)
            for user_id in dict.fromkeys(user_id for user_id, _ in batch)
        }
        gone: set[str] = set()
        for user_id, message in batch:
            data = json.dumps(message, separators=(",", ":")).encode("utf-8")
            for connection_id in connections[user_id]:
                if connection_id in gone:
                    continue
                if apigateway.post(
                    self._management, connection_id, data, attempts=self._max_attempts
                ):
                    gone.add(connection_id)
                    apigateway.remove_connection(self._dynamodb, self._table, connection_id)
                    self._stale.inc()
                else:
                    self._sent.inc()

    def teardown(self) -> None:
        for client in (self._dynamodb, self._management):
            if client is not None:
                aws.close_client(client)
        self._dynamodb = self._management = None


def _apigateway_settings(
    endpoint_url: str | None, table: str | None, region: str | None, max_attempts: int | None
) -> tuple[str, str, str | None, int]:
    """The apigateway backend's arguments, checked; ValueError names the wrong one."""
    if endpoint_url is None:
        raise ValueError("the apigateway backend needs endpoint_url, the WebSocket API's URL")
    if table is None:
        raise ValueError("the apigateway backend needs table, the DynamoDB connections table")
    if region is not None and (not isinstance(region, str) or not region.strip()):
        raise ValueError(f"region must be a non-empty AWS region name, got {region!r}")
    if max_attempts is None:
        max_attempts = apigateway.POST_ATTEMPTS
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(f"max_attempts must be an integer of at least 1, got {max_attempts!r}")
    return (
        apigateway.check_endpoint_url(endpoint_url),
        apigateway.check_table_name(table),
        region.strip() if region else None,
        max_attempts,
    )


class NotifyProgress(beam.PTransform):
    """Sends ``(userId, progress message)`` to the user's browsers.

    Args:
        backend: ``"redis"`` (the WebSocket notifier) or ``"apigateway"`` (an API Gateway
            WebSocket API).
        redis_url: ``redis`` only: the notifier's Redis; ``REDIS_URL`` by default.
        prefix: ``redis`` only: key prefix shared with the notifier.
        endpoint_url: ``apigateway``, required: the WebSocket API's callback URL,
            ``https://{api-id}.execute-api.{region}.amazonaws.com/{stage}``.
        table: ``apigateway``, required: the DynamoDB connections table (connectionId →
            userId, index ``byUserId``); its endpoint comes from ``aws``.
        region: ``apigateway`` only: the AWS region; ``aws``'s, else ``AWS_DEFAULT_REGION``.
        aws: ``apigateway`` only: the AWS endpoint, region and credentials resolved at
            launch (:class:`~blogflow.io.aws.AwsConfig`); None: boto3's chain where the
            DoFn runs.
        max_attempts: ``apigateway`` only: attempts per post before its error fails the
            bundle; 5 by default.
        batch_size: messages per round trip (``redis``) or per connection lookup
            (``apigateway``).

    Raises:
        ValueError: on an unknown backend, a missing or invalid argument of the backend,
            or an argument of the other backend.
    """

    def __init__(
        self,
        backend: str = "redis",
        *,
        redis_url: str | None = None,
        prefix: str = "",
        endpoint_url: str | None = None,
        table: str | None = None,
        region: str | None = None,
        max_attempts: int | None = None,
        batch_size: int = 200,
        aws: AwsConfig | None = None,
    ) -> None:
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"unknown notifier backend {backend!r}; choose from {BACKENDS}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if backend == "redis":
            given: dict[str, object] = {
                "endpoint_url": endpoint_url,
                "table": table,
                "region": region,
                "max_attempts": max_attempts,
                "aws": aws,
            }
            extra = [name for name, value in given.items() if value is not None]
            if extra:
                raise ValueError(f"{extra} apply to the apigateway backend only, not redis")
        else:
            extra = ["redis_url"] if redis_url is not None else []
            extra += ["prefix"] if prefix else []
            if extra:
                raise ValueError(f"{extra} apply to the redis backend only, not apigateway")
            endpoint_url, table, region, max_attempts = _apigateway_settings(
                endpoint_url, table, region, max_attempts
            )
        self._backend = backend
        self._redis_url = redis_url
        self._prefix = prefix
        self._endpoint_url = endpoint_url
        self._table = table
        self._region = region
        self._max_attempts = max_attempts or apigateway.POST_ATTEMPTS
        self._batch_size = batch_size
        self._aws = aws

    def expand(self, messages: beam.PCollection) -> beam.pvalue.PDone:
        fn: beam.DoFn
        if self._backend == "apigateway":
            assert self._endpoint_url is not None and self._table is not None
            fn = _NotifyApiGatewayFn(
                self._endpoint_url,
                self._table,
                self._region,
                self._batch_size,
                self._max_attempts,
                self._aws,
            )
        else:
            fn = _NotifyRedisFn(self._redis_url, self._prefix, self._batch_size)
        _ = messages | "PublishProgress" >> beam.ParDo(fn)
        return beam.pvalue.PDone(messages.pipeline)
