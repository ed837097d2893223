"""Shared fixtures: the local stack of real servers, and a namespace on it for each test.

* ``local_stack`` (session): Redis, MongoDB (nx-27017) and moto on free loopback ports,
  their ``REDIS_URL``, ``MONGODB_URI``, ``AWS_*`` variables set in ``os.environ``.
* ``pubsub_stack`` (session): the Pub/Sub emulator and ``PUBSUB_EMULATOR_HOST``; skips
  the test where the emulator is not installed.
* Per test: ``unique_name``, ``mongo_db``, ``redis_prefix`` / ``redis_client``,
  ``sqs_queue`` and ``topic`` / ``subscription`` (Pub/Sub) -- each test gets its own
  database, key prefix, queue and topic, removed after.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pymongo
import pytest
import redis
from google.api_core import exceptions as google_exceptions
from google.cloud import pubsub_v1
from pymongo.database import Database

from blogflow.io.aws import AwsConfig
from blogflow.io.kinesis import create_stream
from blogflow.io.pubsub import create_subscription, create_topic
from blogflow.local.stack import PUBSUB_EMULATOR_PATH, LocalStack, find_pubsub_emulator

__all__ = [
    "local_stack",
    "mongo_client",
    "make_stream",
    "mongo_db",
    "pubsub_stack",
    "redis_client",
    "redis_prefix",
    "sqs_client",
    "sqs_queue",
    "subscription",
    "topic",
    "unique_name",
]

_LOGGER = logging.getLogger(__name__)


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    """Sets environment variables for the duration, restoring the old values after."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            patch.setenv(key, value)
        yield


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Redis, MongoDB and moto for the whole session, their variables in ``os.environ``."""
    stack = LocalStack(
        state_dir=tmp_path_factory.mktemp("local-stack"), services=("redis", "mongo", "moto")
    )
    with stack, _environ(stack.env):
        yield stack


@pytest.fixture(scope="session")
def pubsub_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The Pub/Sub emulator for the whole session, ``PUBSUB_EMULATOR_HOST`` set."""
    if find_pubsub_emulator() is None:
        pytest.skip(f"the Pub/Sub emulator is not installed at {PUBSUB_EMULATOR_PATH}")
    stack = LocalStack(state_dir=tmp_path_factory.mktemp("pubsub-stack"), services=("pubsub",))
    with stack, _environ(stack.env):
        yield stack


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A short name unique to this test, valid as a database, queue, topic or key name.

    Lower-case letters, digits and dashes, starting with a letter, at most 26 characters:
    part of the test's name (for whoever finds a leftover) and 8 random hex digits.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_"))
    slug = slug.strip("-")[:16].strip("-")
    if not slug[:1].isalpha():
        slug = f"t{slug}"[:16]
    return f"{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def mongo_client(local_stack: LocalStack) -> Iterator[pymongo.MongoClient]:
    """A MongoDB client connected to the local stack, for the whole session."""
    client: pymongo.MongoClient = pymongo.MongoClient(local_stack.env["MONGODB_URI"])
    yield client
    client.close()


@pytest.fixture
def mongo_db(mongo_client: pymongo.MongoClient, unique_name: str) -> Iterator[Database]:
    """A MongoDB database of this test's own, dropped after it."""
    yield mongo_client[unique_name]
    mongo_client.drop_database(unique_name)


@pytest.fixture
def redis_prefix(local_stack: LocalStack, unique_name: str) -> Iterator[str]:
    """A Redis key prefix of this test's own (``"<unique_name>:"``); its keys go after it."""
    prefix = f"{unique_name}:"
    yield prefix
    client = redis.Redis.from_url(local_stack.env["REDIS_URL"])
    try:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + "*"
        keys = list(client.scan_iter(match=pattern, count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(local_stack: LocalStack, redis_prefix: str) -> Iterator[redis.Redis]:
    """A Redis client on the local stack; keep the test's keys under ``redis_prefix``."""
    client = redis.Redis.from_url(local_stack.env["REDIS_URL"])
    yield client
    client.close()


def _aws_client(stack: LocalStack, service: str) -> Any:
    """A plain boto3 client of ``service`` on the stack's moto server, set up from its env."""
    env = stack.env
    return boto3.client(
        service,
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture
def aws_settings_only(local_stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> AwsConfig:
    """The moto server's endpoint, region and keys as an :class:`AwsConfig`, with nothing
    of boto3's own chain left in this process (no AWS variable, config file or metadata
    server): what a client finds, it found through the config."""
    env = local_stack.env
    settings = AwsConfig(
        env["AWS_ENDPOINT_URL"],
        env["AWS_DEFAULT_REGION"],
        env["AWS_ACCESS_KEY_ID"],
        env["AWS_SECRET_ACCESS_KEY"],
    )
    for name in (
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return settings


@pytest.fixture(scope="session")
def sqs_client(local_stack: LocalStack) -> Any:
    """A boto3 SQS client pointed at the local stack's moto server, for the whole session."""
    return _aws_client(local_stack, "sqs")


@pytest.fixture(scope="session")
def kinesis_client(local_stack: LocalStack) -> Any:
    """A boto3 Kinesis client pointed at the local stack's moto server, for the session."""
    return _aws_client(local_stack, "kinesis")


@pytest.fixture
def sqs_queue(sqs_client: Any, unique_name: str) -> Iterator[str]:
    """The URL of an SQS queue of this test's own (visibility timeout 2 s), deleted after."""
    url = sqs_client.create_queue(QueueName=unique_name, Attributes={"VisibilityTimeout": "2"})[
        "QueueUrl"
    ]
    yield url
    sqs_client.delete_queue(QueueUrl=url)


@pytest.fixture
def make_stream(kinesis_client: Any, unique_name: str) -> Iterator[Any]:
    """``make_stream(shards=2)``: a Kinesis stream of this test's own (its name), deleted
    after the test."""
    made: list[str] = []

    def make(shards: int = 2) -> str:
        create_stream(unique_name, shard_count=shards)
        made.append(unique_name)
        return unique_name

    yield make
    for name in made:
        kinesis_client.delete_stream(StreamName=name, EnforceConsumerDeletion=True)


@pytest.fixture
def topic(pubsub_stack: LocalStack, unique_name: str) -> Iterator[str]:
    """A Pub/Sub topic of this test's own, deleted after it."""
    path = create_topic(unique_name)
    yield path
    publisher = pubsub_v1.PublisherClient()
    try:
        with contextlib.suppress(google_exceptions.NotFound):
            publisher.delete_topic(topic=path)
    finally:
        publisher.transport.close()


@pytest.fixture
def subscription(topic: str, unique_name: str) -> Iterator[str]:
    """A subscription of this test's own on ``topic`` (ack deadline 10 s), deleted after."""
    path = create_subscription(topic, f"{unique_name}-sub", ack_deadline=10)
    yield path
    with pubsub_v1.SubscriberClient() as subscriber:
        with contextlib.suppress(google_exceptions.NotFound):
            subscriber.delete_subscription(subscription=path)
