"""The MongoDB client wrapper: the only module of blogflow's sinks that imports pymongo."""

from __future__ import annotations

import os
from typing import Any

import pymongo
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

__all__ = [
    "DEFAULT_DATABASE",
    "DUPLICATE_KEY",
    "BulkWriteError",
    "PyMongoError",
    "connect",
    "default_uri",
    "redact_uri",
]

#: The database blogflow uses unless told otherwise (``--mongo-db``).
DEFAULT_DATABASE = "blogflow"
#: MongoDB's error code for a duplicate ``_id``.
DUPLICATE_KEY = 11000


def default_uri() -> str:
    """``MONGODB_URI`` from the environment, else a MongoDB on localhost."""
    return os.environ.get("MONGODB_URI") or "mongodb://127.0.0.1:27017/"


def redact_uri(uri: str) -> str:
    """The URI without its password, for logs and display data."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def connect(uri: str | None, database: str) -> tuple[pymongo.MongoClient, Database[Any]]:
    """A client and database handle with short, bounded timeouts.

    Args:
        uri: a MongoDB URI; ``MONGODB_URI`` or localhost when None.
        database: the database name.
    """
    if not database:
        raise ValueError("a MongoDB database name is required")
    client: pymongo.MongoClient = pymongo.MongoClient(
        uri or default_uri(),
        serverSelectionTimeoutMS=10_000,
        connectTimeoutMS=5_000,
        socketTimeoutMS=60_000,
        retryWrites=False,
        tz_aware=True,
    )
    return client, client[database]
