"""The MongoDB client wrapper: the only module of blogflow's sinks that imports pymongo.

A pipeline's URI is resolved at launch (:mod:`blogflow.options`) and may come sealed
(:func:`blogflow.tokens.seal`) when it holds a password: :func:`connect` opens it,
:func:`redact_uri` shows it without the password. :func:`default_uri` reads
``MONGODB_URI`` for the command line and the launcher, never on a worker given a URI.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pymongo
from pymongo import ReplaceOne, uri_parser
from pymongo.database import Database
from pymongo.errors import BulkWriteError, PyMongoError

from blogflow.io import _urls
from blogflow.tokens import shown, unseal

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_URI",
    "DUPLICATE_KEY",
    "BulkWriteError",
    "PyMongoError",
    "ReplaceOne",
    "connect",
    "default_uri",
    "redact_uri",
]

#: The database blogflow uses unless told otherwise (``--mongo-db``).
DEFAULT_DATABASE = "blogflow"
#: MongoDB's error code for a duplicate ``_id``.
DUPLICATE_KEY = 11000


# pymongo's command log writes whole documents at DEBUG -- ``users`` with its encrypted
# GitHub tokens among them -- so ``-vv`` must not reach it: blogflow logs no stored document.
logging.getLogger("pymongo.command").setLevel(logging.INFO)

_CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 10_000,
    "connectTimeoutMS": 5_000,
    "socketTimeoutMS": 60_000,
    "retryWrites": False,
}


#: The MongoDB a URI defaults to when neither ``--mongo-uri`` nor ``MONGODB_URI`` names one.
DEFAULT_URI = "mongodb://127.0.0.1:27017/"


def default_uri() -> str:
    """``MONGODB_URI`` from the environment, else a MongoDB on localhost."""
    return os.environ.get("MONGODB_URI") or DEFAULT_URI


def redact_uri(uri: str) -> str:
    """The URI with its password replaced by ``***`` (a sealed URI: its shown form)."""
    return _urls.redact_url(shown(uri))


def connect(uri: str | None, database: str) -> tuple[pymongo.MongoClient, Database[Any]]:
    """A client and database handle with short, bounded timeouts.

    Args:
        uri: a MongoDB URI, maybe sealed; ``MONGODB_URI`` or localhost when None.
        database: the database name.
    """
    if not database:
        raise ValueError("a MongoDB database name is required")
    uri = unseal(uri) if uri else default_uri()
    # Defaults only: options written in the URI (e.g. ?serverSelectionTimeoutMS=500) win.
    given = {key.lower() for key in uri_parser.parse_uri(uri, validate=False)["options"]}
    options = {key: value for key, value in _CLIENT_DEFAULTS.items() if key.lower() not in given}
    client: pymongo.MongoClient = pymongo.MongoClient(uri, tz_aware=True, **options)
    return client, client[database]
