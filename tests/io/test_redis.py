"""The Redis client wrapper's one conversion of values for Redis hashes."""

import datetime as dt

import pytest
from bson.int64 import Int64

from blogflow.io.redis import hash_fields


def test_values_read_elsewhere_become_plain_redis_values():
    at = dt.datetime(2026, 11, 21, 12, tzinfo=dt.timezone.utc)
    fields = hash_fields({"sum": Int64(8_000_000_000), "score": 1.5, "at": at, "s": "x"})
    assert fields == {"sum": 8_000_000_000, "score": 1.5, "at": at.isoformat(), "s": "x"}
    assert type(fields["sum"]) is int


@pytest.mark.parametrize("value", [None, True, object()])
def test_a_value_with_no_redis_form_is_refused_by_name(value):
    with pytest.raises(TypeError, match="'sum'"):
        hash_fields({"sum": value})
