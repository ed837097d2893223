"""API Gateway WebSocket connections: who is connected, and posting to them.

The platform's WebSocket API records every open connection in a DynamoDB table: one item
per connection, ``{"connectionId": ..., "userId": ...}``, partition key ``connectionId``,
and a global secondary index ``byUserId`` (partition key ``userId``) that finds all the
connections of a user. Its ``$connect`` handler calls :func:`register_connection`, its
``$disconnect`` handler :func:`remove_connection`. Messages reach a browser through the
API Gateway Management API (:func:`post`), whose endpoint is the API's callback URL,
``https://{api-id}.execute-api.{region}.amazonaws.com/{stage}``.

A connection that closed without ``$disconnect`` running answers ``410 Gone``: :func:`post`
says so, and the caller removes it. Other failures of a post are retried a bounded number
of times with exponential backoff and jitter, then raised as
:class:`blogflow.io.aws.AWSError`. DynamoDB calls rely on botocore's own bounded retries
(:func:`blogflow.io.aws.make_client`).

Clients come from :mod:`blogflow.io.aws`, with the pipeline's
:class:`~blogflow.io.aws.AwsConfig` (endpoint, region, sealed credentials) or else boto3's
chain; nothing here stores or formats a credential.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from blogflow.io import aws
from blogflow.io import aws as aws_module

__all__ = [
    "GONE",
    "INDEX",
    "POST_ATTEMPTS",
    "check_endpoint_url",
    "check_table_name",
    "connections_of",
    "create_connections_table",
    "dynamodb_client",
    "management_client",
    "post",
    "register_connection",
    "remove_connection",
]

_LOGGER = logging.getLogger(__name__)

#: The global secondary index of the connections table: partition key ``userId``.
INDEX = "byUserId"
#: The error code of a post to a connection that no longer exists (HTTP 410).
GONE = "GoneException"
#: Attempts per post (first try included) before its error surfaces.
POST_ATTEMPTS = 5
#: Seconds before the first retry of a post; doubles per retry, plus jitter.
POST_FIRST_WAIT = 0.1
#: Longest wait between two attempts of a post, in seconds.
POST_MAX_WAIT = 2.0
#: Seconds to wait for the Management API's answer to one post.
POST_READ_TIMEOUT = 10.0

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_THROTTLING_CODES = frozenset(
    {"LimitExceededException", "ThrottlingException", "TooManyRequestsException"}
)


# --------------------------------------------------------------------------- validation


def check_endpoint_url(endpoint_url: Any) -> str:
    """The Management API endpoint, checked: an ``http(s)://`` URL with a host.

    Raises:
        ValueError: if it is empty, not http(s), has no host, or carries a user or
            password (credentials come from boto3's chain, never from a URL).
    """
    if not isinstance(endpoint_url, str) or not endpoint_url.strip():
        raise ValueError(
            "endpoint_url must be the WebSocket API's callback URL, "
            "https://{api-id}.execute-api.{region}.amazonaws.com/{stage}"
        )
    url = endpoint_url.strip()
    parts = urlsplit(url)
    if parts.scheme in ("ws", "wss"):
        raise ValueError(
            f"endpoint_url must be the https:// callback URL of the WebSocket API, "
            f"not its {parts.scheme}:// URL"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"endpoint_url must be an http(s):// URL with a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("endpoint_url must not carry credentials; they come from boto3's chain")
    return url


def check_table_name(table: Any) -> str:
    """The connections table's name, checked against DynamoDB's naming rules.

    Raises:
        ValueError: unless it is 3 to 255 of ``A-Z a-z 0-9 _ . -``.
    """
    if not isinstance(table, str) or not _TABLE_NAME.fullmatch(table):
        raise ValueError(
            f"table must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -), got {table!r}"
        )
    return table


# ------------------------------------------------------------------------------ clients


def dynamodb_client(
    *, region_name: str | None = None, aws: aws_module.AwsConfig | None = None
) -> Any:
    """A DynamoDB client (endpoint, region and credentials from ``aws``, else boto3's
    chain).

    Close it with :func:`blogflow.io.aws.close_client`.
    """
    return aws_module.make_client("dynamodb", aws=aws, region_name=region_name)


def management_client(
    endpoint_url: str,
    *,
    region_name: str | None = None,
    aws: aws_module.AwsConfig | None = None,
) -> Any:
    """An API Gateway Management API client for one WebSocket API stage.

    It shares :mod:`blogflow.io.aws`'s timeouts and credentials chain but makes a single
    attempt per call: :func:`post` owns the retries, so they do not multiply.

    Args:
        endpoint_url: the API's callback URL (see :func:`check_endpoint_url`).
        region_name: overrides ``aws``'s and ``AWS_DEFAULT_REGION`` / the profile's region.
        aws: the region and credentials (its endpoint is not this API's); None: boto3's
            chain.

    Returns:
        A botocore client; close it with :func:`blogflow.io.aws.close_client`.
    """
    return aws_module.make_client(
        "apigatewaymanagementapi",
        aws=aws,
        region_name=region_name,
        endpoint_url=check_endpoint_url(endpoint_url),
        read_timeout=POST_READ_TIMEOUT,
        max_attempts=1,
    )


# ---------------------------------------------------------------------- the connections


def create_connections_table(dynamodb: Any, table: str) -> None:
    """Create the connections table with its ``byUserId`` index, and wait until it is active.

    On-demand capacity; the index projects the keys only (``connectionId``, ``userId``).

    Args:
        dynamodb: a DynamoDB client.
        table: the table's name.

    Raises:
        ValueError: on an invalid table name.
        blogflow.io.aws.AWSError: if DynamoDB refused, e.g. the table exists.
    """
    name = check_table_name(table)
    try:
        dynamodb.create_table(
            TableName=name,
            AttributeDefinitions=[
                {"AttributeName": "connectionId", "AttributeType": "S"},
                {"AttributeName": "userId", "AttributeType": "S"},
            ],
            KeySchema=[{"AttributeName": "connectionId", "KeyType": "HASH"}],
            GlobalSecondaryIndexes=[
                {
                    "IndexName": INDEX,
                    "KeySchema": [{"AttributeName": "userId", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "KEYS_ONLY"},
                }
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
        )
    except (aws.ClientError, aws.BotoCoreError) as error:
        raise aws.AWSError(f"could not create DynamoDB table {name!r}: {error}") from None


def register_connection(dynamodb: Any, table: str, connection_id: str, user_id: str) -> None:
    """Record that ``connection_id`` belongs to ``user_id`` (the ``$connect`` handler).

    Idempotent: registering again overwrites the same item.
    """
    if not connection_id or not user_id:
        raise ValueError("connection_id and user_id must be non-empty")
    try:
        dynamodb.put_item(
            TableName=table,
            Item={"connectionId": {"S": connection_id}, "userId": {"S": user_id}},
        )
    except (aws.ClientError, aws.BotoCoreError) as error:
        raise aws.AWSError(
            f"could not register connection {connection_id!r} in table {table!r}: {error}"
        ) from None


def remove_connection(dynamodb: Any, table: str, connection_id: str) -> None:
    """Forget a connection (the ``$disconnect`` handler, or after a 410). Idempotent."""
    try:
        dynamodb.delete_item(TableName=table, Key={"connectionId": {"S": connection_id}})
    except (aws.ClientError, aws.BotoCoreError) as error:
        raise aws.AWSError(
            f"could not remove connection {connection_id!r} from table {table!r}: {error}"
        ) from None


def connections_of(dynamodb: Any, table: str, user_id: str) -> list[str]:
    """The ids of ``user_id``'s connections, sorted, read from the ``byUserId`` index.

    The index is eventually consistent: a connection registered a moment ago may be
    missing, one removed a moment ago may still be listed (a post to it answers 410).

    Raises:
        blogflow.io.aws.AWSError: if the query failed, e.g. the table or index is missing.
    """
    ids: list[str] = []
    request: dict[str, Any] = {
        "TableName": table,
        "IndexName": INDEX,
        "KeyConditionExpression": "userId = :user",
        "ExpressionAttributeValues": {":user": {"S": user_id}},
        "ProjectionExpression": "connectionId",
    }
    try:
        while True:
            page = dynamodb.query(**request)
            ids.extend(item["connectionId"]["S"] for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return sorted(ids)
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    except (aws.ClientError, aws.BotoCoreError) as error:
        raise aws.AWSError(
            f"could not list the connections of a user in table {table!r} "
            f"(index {INDEX!r}): {error}"
        ) from None


# -------------------------------------------------------------------------------- posts


def _is_transient(error: BaseException) -> bool:
    """Worth another attempt: throttling, server errors, lost or timed-out connections.

    A 410 is an answer, not a failure; other 4xx (403 forbidden, 413 payload too large,
    400 bad request) would fail the same way again.
    """
    if isinstance(error, aws.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or status == 429 or aws.error_code(error) in _THROTTLING_CODES
    return isinstance(error, (BotoConnectionError, HTTPClientError))


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    _LOGGER.info(
        "Post to a WebSocket connection failed (attempt %d, %s); retrying",
        state.attempt_number,
        aws.error_code(error) if error else "unknown",
    )


def post(
    client: Any,
    connection_id: str,
    data: bytes,
    *,
    attempts: int = POST_ATTEMPTS,
    first_wait: float = POST_FIRST_WAIT,
    max_wait: float = POST_MAX_WAIT,
) -> bool:
    """Send ``data`` to one WebSocket connection (``PostToConnection``).

    Args:
        client: a client from :func:`management_client`.
        connection_id: the connection to post to.
        data: the frame's payload, e.g. UTF-8 JSON.
        attempts: attempts before a transient error surfaces (first try included).
        first_wait: seconds before the first retry; doubles per retry, plus jitter.
        max_wait: the longest wait between two attempts, in seconds.

    Returns:
        ``False`` if the connection got the data; ``True`` if it is gone (HTTP 410), so
        that the caller removes it.

    Raises:
        ValueError: if ``attempts`` is below 1.
        blogflow.io.aws.AWSError: on a permanent error, or a transient one that outlasted
            the retries.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts!r}")
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential_jitter(initial=first_wait, max=max_wait, jitter=first_wait),
        retry=retry_if_exception(_is_transient),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                client.post_to_connection(ConnectionId=connection_id, Data=data)
    except (aws.ClientError, aws.BotoCoreError) as error:
        if aws.error_code(error) == GONE:
            return True
        tries = retrying.statistics.get("attempt_number", 1)
        raise aws.AWSError(
            f"could not post to WebSocket connection {connection_id!r} after {tries} "
            f"attempt(s): {aws.error_code(error)}: {error}"
        ) from None
    return False
