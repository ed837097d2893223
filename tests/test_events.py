"""Unit tests of the event envelope: every type parses, every kind of bad input is named."""

import datetime as dt
import json

import pytest

from blogflow.events import (
    EVENT_TYPES,
    MAX_EVENT_BYTES,
    EventRejected,
    SumPacket,
    make_event,
    parse_event,
)

T = "2026-11-21T10:00:00Z"

SAMPLE_DATA = {
    "sum_packet": {"arrayId": "a1", "packetId": 0, "packetValue": 3, "arrayLength": 5},
    "post_published": {
        "postId": "p1",
        "authorId": "u1",
        "publicationId": "pub1",
        "title": "Hello",
        "slug": "hello",
        "tags": ["beam"],
        "publishedAt": T,
    },
    "post_deleted": {"postId": "p1"},
    "post_viewed": {"postId": "p1"},
    "post_liked": {"postId": "p1"},
    "comment_added": {"postId": "p1"},
    "user_followed": {"authorId": "u2"},
    "tag_followed": {"tag": "beam"},
    "user_signed_up": {},
    "backup_requested": {"backupId": "b1", "publicationId": "pub1"},
}
SAMPLE_DATA["post_updated"] = SAMPLE_DATA["post_published"]


def envelope(event_type="sum_packet", **overrides):
    body = {
        "id": "e1",
        "type": event_type,
        "v": 1,
        "occurredAt": T,
        "userId": "u1",
        "data": SAMPLE_DATA[event_type],
    }
    body.update(overrides)
    return json.dumps(body).encode()


def reason(raw):
    with pytest.raises(EventRejected) as caught:
        parse_event(raw)
    return caught.value.reason


def test_every_type_has_a_sample():
    assert set(SAMPLE_DATA) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(SAMPLE_DATA))
def test_every_type_round_trips(event_type):
    event = parse_event(envelope(event_type))
    assert event.type == event_type
    assert parse_event(event.to_json()) == event
    assert event.event_time == dt.datetime(2026, 11, 21, 10, tzinfo=dt.timezone.utc).timestamp()


def test_sum_packet_is_typed():
    event = parse_event(envelope())
    assert isinstance(event, SumPacket)
    assert (event.data.arrayId, event.data.packetValue, event.data.arrayLength) == ("a1", 3, 5)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{", "invalid JSON"),
        (b"\xff\xfe{}", "invalid UTF-8"),
        (b"[1, 2]", "envelope: Input should be an object"),
        (envelope("sum_packet", type="sum_packed"), "unknown event type 'sum_packed'"),
        (envelope(occurredAt="yesterday"), "bad timestamp: occurredAt"),
        (envelope(occurredAt="2026-11-21T10:00:00"), "bad timestamp: occurredAt"),
        (envelope(occurredAt="1969-12-31T23:59:59Z"), "before the Unix epoch"),
        # Numbers are no times, whether written as JSON numbers or as strings.
        (envelope(occurredAt="1"), "bad timestamp: occurredAt: must be an ISO 8601 time"),
        (envelope(occurredAt="1700000000"), "bad timestamp: occurredAt: must be an ISO 8601"),
        (envelope(occurredAt=1700000000), "bad timestamp: occurredAt: must be an ISO 8601"),
        (envelope(occurredAt=None), "bad timestamp: occurredAt"),
        (envelope(v=2), "unsupported event version 2"),
        (envelope(id=""), "id:"),
        (
            envelope(data={"arrayId": "a", "packetId": 0, "packetValue": "3", "arrayLength": 2}),
            "data.packetValue: Input should be a valid integer",
        ),
        (
            envelope(data={"arrayId": "a", "packetId": 0, "packetValue": 3, "arrayLength": 0}),
            "data.arrayLength: Input should be greater than 0",
        ),
        (
            envelope(data={"arrayId": "a", "packetId": 0, "packetValue": 3, "arrayLength": -4}),
            "data.arrayLength: Input should be greater than 0",
        ),
        (
            envelope(data={"arrayId": "a", "packetId": 2, "packetValue": 3, "arrayLength": 2}),
            "packetId 2 is outside an array of length 2",
        ),
        (
            envelope(data={"arrayId": "a", "packetId": True, "packetValue": 3, "arrayLength": 2}),
            "data.packetId",
        ),
        (envelope(data={"arrayId": "a", "packetId": 0, "arrayLength": 2}), "missing field: data"),
        (envelope("post_viewed", data={}), "missing field: data.postId"),
    ],
)
def test_bad_input_is_rejected_with_its_reason(raw, expected):
    assert expected in reason(raw)


def test_missing_envelope_fields_are_named():
    body = json.loads(envelope())
    del body["occurredAt"]
    assert reason(json.dumps(body).encode()) == "missing field: occurredAt"
    del body["type"]
    assert reason(json.dumps(body).encode()) == "missing field: type"


def test_oversized_payload_is_rejected_before_parsing():
    raw = envelope(padding="x" * MAX_EVENT_BYTES)
    assert "over the 262144 limit" in reason(raw)


def test_unknown_extra_fields_are_ignored():
    assert parse_event(envelope(extra="ignored")).id == "e1"


def test_make_event_fills_id_and_time_and_validates():
    event = make_event("post_liked", {"postId": "p9"}, user_id="u3")
    assert event.id and event.occurredAt.tzinfo is not None
    with pytest.raises(EventRejected, match="unknown event type"):
        make_event("nope", {})
    with pytest.raises(EventRejected, match="arrayLength"):
        make_event(
            "sum_packet", {"arrayId": "a", "packetId": 0, "packetValue": 1, "arrayLength": 0}
        )
