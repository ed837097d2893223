"""The Redis client wrapper: the only module of blogflow's sinks that imports redis.

A pipeline's URL is resolved at launch (:mod:`blogflow.options`) and may come sealed
(:func:`blogflow.tokens.seal`) when it holds a password: :func:`connect` opens it,
:func:`redact_url` shows it without the password. :func:`default_url` reads ``REDIS_URL``
for the command line and the launcher, never on a worker that was given a URL.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

import redis
import redis.asyncio

from blogflow.io import _urls
from blogflow.tokens import shown, unseal

__all__ = [
    "DEFAULT_URL",
    "RedisError",
    "connect",
    "connect_async",
    "default_url",
    "hash_fields",
    "redact_url",
]

RedisError = redis.RedisError


def default_url() -> str:
    """``REDIS_URL`` from the environment, else a Redis on localhost."""
    return os.environ.get("REDIS_URL") or DEFAULT_URL


#: The Redis a URL defaults to when neither ``--redis-url`` nor ``REDIS_URL`` names one.
DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (a sealed URL: its shown form)."""
    return _urls.redact_url(shown(url))


def _field_value(name: str, value: Any) -> str | int | float | bytes:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"Redis field {name!r}: {value!r} has no Redis form")
    if isinstance(value, int):
        return int(value)  # bson's Int64 and other int subclasses, which hiredis refuses
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str | bytes):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"Redis field {name!r}: a {type(value).__name__} has no Redis form")


def hash_fields(values: Mapping[str, Any]) -> dict[Any, str | int | float | bytes]:
    """``values`` as the plain types a Redis hash takes: the one place blogflow converts
    what it read elsewhere (MongoDB's ``Int64``, datetimes) before writing it to Redis.

    Raises:
        TypeError: naming the field whose value has no Redis form (None, a bool, ...).
    """
    return {name: _field_value(name, value) for name, value in values.items()}


def connect(url: str | None = None) -> redis.Redis:
    """A client with bounded timeouts (hiredis parses replies when installed); ``url``
    may be sealed; None: :func:`default_url`."""
    return redis.Redis.from_url(
        unseal(url) if url else default_url(),
        socket_timeout=30,
        socket_connect_timeout=5,
        decode_responses=True,
    )


def connect_async(
    url: str | None = None, *, max_connections: int | None = None
) -> redis.asyncio.Redis:
    """An asyncio client with the same settings as :func:`connect`.

    Args:
        max_connections: bounds the pool, and callers beyond the bound wait (up to 20 s)
            for a free connection instead of failing, as they do past redis-py's default
            pool size.
    """
    options: dict[str, Any] = {
        "socket_timeout": 30,
        "socket_connect_timeout": 5,
        "decode_responses": True,
    }
    url = unseal(url) if url else default_url()
    if max_connections is None:
        return redis.asyncio.Redis.from_url(url, **options)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=20, **options
    )
    return redis.asyncio.Redis.from_pool(pool)
