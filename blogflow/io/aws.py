"""boto3 clients for blogflow's AWS sources and sinks.

This is the only module that imports ``boto3`` or ``botocore``. Clients are made with one
shared :class:`botocore.config.Config`: standard retry mode (bounded attempts with
exponential backoff and jitter for throttling and transient errors), bounded connect
timeouts and a read timeout longer than SQS's longest long poll (20 s).

Where clients connect is an :class:`AwsConfig`, resolved when a pipeline is launched
(``--aws-endpoint-url``, ``--aws-region``, ``--aws-access-key-id`` and
``--aws-secret-access-key``, else the launcher's ``AWS_ENDPOINT_URL`` / ``AWS_REGION`` /
``AWS_DEFAULT_REGION``) and pickled into the DoFns that make clients, so a worker does not
depend on the launcher's environment. What it leaves unset, and every credential unless
both keys are given, comes from boto3's own chain *on the worker* (its environment,
profiles, instance or workload roles). The secret access key is only ever held sealed
(:func:`blogflow.tokens.seal`) and opened when the client is made; ``repr`` and
:meth:`AwsConfig.display` never show it. ``make_client(service)`` without a config is
boto3's chain alone, as before.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from blogflow.tokens import unseal

__all__ = [
    "AWSError",
    "AwsConfig",
    "BotoCoreError",
    "ClientError",
    "QueueNotFoundError",
    "close_client",
    "error_code",
    "get_queue_url",
    "make_client",
]

_LOGGER = logging.getLogger(__name__)

#: Seconds to establish a connection.
CONNECT_TIMEOUT = 10.0
#: Seconds to wait for a response: longer than SQS's 20 s maximum long poll.
READ_TIMEOUT = 40.0
#: Attempts per API call (first try included) in botocore's standard retry mode.
MAX_ATTEMPTS = 5

_MISSING_QUEUE_CODES = frozenset(
    {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
)


class AWSError(RuntimeError):
    """An AWS call failed after botocore's bounded retries."""


class QueueNotFoundError(LookupError):
    """The named SQS queue does not exist (in the configured account and region)."""


class AwsConfig(NamedTuple):
    """Where AWS clients connect, with what credentials; None leaves a setting to boto3's
    chain where the client is made (the worker).

    Attributes:
        endpoint_url: e.g. a ``moto_server`` (``http://127.0.0.1:5000``); None: AWS's.
        region_name: e.g. ``us-east-1``.
        access_key_id: with ``secret_access_key``, the credentials every client uses.
        secret_access_key: sealed (:func:`blogflow.tokens.seal`) or, made by hand in
            this process, plain; never shown.
    """

    endpoint_url: str | None = None
    region_name: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None

    def __repr__(self) -> str:
        return f"AwsConfig({self.display()!r})"

    def display(self) -> dict[str, str]:
        """The settings that may be shown: endpoint, region and the key id's source,
        never the secret key."""
        return {
            "endpoint_url": self.endpoint_url or "(boto3 default)",
            "region": self.region_name or "(boto3 default)",
            "credentials": "given" if self.access_key_id else "(boto3 default chain)",
        }

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``boto3.session.Session.client`` (the secret key opened)."""
        kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.region_name:
            kwargs["region_name"] = self.region_name
        if self.access_key_id and self.secret_access_key:
            kwargs["aws_access_key_id"] = self.access_key_id
            kwargs["aws_secret_access_key"] = unseal(self.secret_access_key)
        return kwargs


def _config(read_timeout: float, max_attempts: int) -> Config:
    return Config(
        connect_timeout=CONNECT_TIMEOUT,
        read_timeout=read_timeout,
        # total_max_attempts counts the first attempt too; botocore's max_attempts does not.
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        tcp_keepalive=True,
    )


def make_client(
    service: str,
    *,
    aws: AwsConfig | None = None,
    region_name: str | None = None,
    endpoint_url: str | None = None,
    read_timeout: float = READ_TIMEOUT,
    max_attempts: int = MAX_ATTEMPTS,
) -> Any:
    """Make a low-level boto3 client, e.g. ``make_client("sqs")`` or ``"kinesis"``.

    Each client gets its own ``boto3`` session, which makes creating clients from several
    threads safe. The endpoint, region and credentials come from ``aws``, and what it
    leaves unset (all of it, without ``aws``) from boto3's chain (``AWS_ENDPOINT_URL``
    points every client at a local ``moto_server``).

    Args:
        service: the AWS service name, e.g. ``"sqs"``.
        aws: the launch-time settings of a pipeline; None: boto3's chain alone.
        region_name: overrides ``aws`` and ``AWS_DEFAULT_REGION`` / the profile's region.
        endpoint_url: overrides the environment's endpoint (e.g. an API Gateway stage's
            callback URL).
        read_timeout: seconds to wait for a response; keep it above any long-poll wait.
        max_attempts: attempts per call, retries with backoff included.

    Returns:
        A botocore client; close it with :func:`close_client`.
    """
    if read_timeout <= 0:
        raise ValueError(f"read_timeout must be positive, got {read_timeout!r}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
    kwargs = aws.client_kwargs() if aws is not None else {}
    if region_name is not None:
        kwargs["region_name"] = region_name
    if endpoint_url is not None:
        kwargs["endpoint_url"] = endpoint_url
    kwargs.setdefault("region_name", None)
    kwargs.setdefault("endpoint_url", None)
    session = boto3.session.Session()
    return session.client(service, config=_config(read_timeout, max_attempts), **kwargs)


def close_client(client: Any) -> None:
    """Close a client's connection pool; never raises."""
    try:
        client.close()
    except Exception as error:  # closing must never fail a bundle
        _LOGGER.debug("Closing a %s client failed: %s", type(error).__name__, error)


def error_code(error: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (e.g. ``"ThrottlingException"``), else the
    exception's class name."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "Unknown"))
    return type(error).__name__


def get_queue_url(client: Any, queue: str) -> str:
    """Resolve an SQS queue name or URL into its URL.

    Args:
        client: an SQS client from :func:`make_client`.
        queue: a queue name (``"events"``) or URL (``"https://sqs.../123/events"``); a URL
            is returned unchanged, without a call.

    Returns:
        The queue's URL.

    Raises:
        ValueError: if ``queue`` is empty.
        QueueNotFoundError: if no queue of that name exists.
        AWSError: if the lookup failed for another reason.
    """
    if not queue or not queue.strip():
        raise ValueError("queue must be a non-empty SQS queue name or URL")
    if queue.startswith(("https://", "http://")):
        return queue
    try:
        return str(client.get_queue_url(QueueName=queue)["QueueUrl"])
    except ClientError as error:
        code = error_code(error)
        region = client.meta.region_name
        if code in _MISSING_QUEUE_CODES:
            raise QueueNotFoundError(
                f"SQS queue {queue!r} does not exist in region {region!r}"
            ) from None
        raise AWSError(
            f"could not look up SQS queue {queue!r} in region {region!r}: {error}"
        ) from (None)
