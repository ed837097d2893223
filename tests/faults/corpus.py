"""Generated corpora of malformed messages, mixed with good events, for the fault suite.

Pure and deterministic: every function takes a seed (or a ``random.Random``) and returns
the same messages for the same arguments; nothing here talks to a service.

A corpus is a list of :class:`Message`: the raw payload as a producer would send it, the
class of bad input it was made to be (or :data:`GOOD`), the substrings its dead letter's
``error`` must contain, and the stage that must reject it. The classes are the bad inputs
the README lists for every pipeline (:data:`COMMON_KINDS`) and the ones of one pipeline
(an event type it does not read, a ``backup_requested`` without ``userId``, an event far
after the feed's ``--as-of``, ...). Bad messages are made mostly by breaking one thing in
a copy of a good event of the same run (same array, post, user or backup ids), so a bad
message that were counted by mistake would show in the good results; some name fresh
"ghost" ids instead, which must then appear nowhere.

Every payload is one line (no ``\\n`` or ``\\r``, not blank), so the same corpus can be
written to a JSON-lines archive; :attr:`Message.sqs_text` says whether SQS can carry it
(invalid UTF-8 and raw control characters cannot travel as an SQS message body).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BACKUP_KINDS",
    "COMMON_KINDS",
    "DEFAULT_COUNTS",
    "FEED_KINDS",
    "FEW",
    "GOOD",
    "MAX_EVENT_BYTES",
    "MAX_STORED_PAYLOAD",
    "SUMMING_KINDS",
    "BackupCorpus",
    "FeedCorpus",
    "Message",
    "SumCorpus",
    "backup_corpus",
    "feed_corpus",
    "summing_corpus",
]

#: The largest accepted payload (README: "over 256 KiB" is bad input).
MAX_EVENT_BYTES = 256 * 1024
#: Dead letters keep the raw payload cut at 64 KiB.
MAX_STORED_PAYLOAD = 64 * 1024

GOOD = "good"
INVALID_JSON = "invalid_json"
INVALID_UTF8 = "invalid_utf8"
NOT_OBJECT = "not_object"
UNKNOWN_TYPE = "unknown_type"
MISSING_FIELD = "missing_field"
MISTYPED_FIELD = "mistyped_field"
BAD_TIMESTAMP = "bad_timestamp"
UNSUPPORTED_VERSION = "unsupported_version"
OVERSIZED = "oversized"
BAD_ID = "empty_or_overlong_id"
OUT_OF_RANGE = "out_of_range"
UNREAD_TYPE = "unread_type"
NO_USER = "backup_without_user"
OTHERS_BACKUP = "backup_id_of_another_user"
REUSED_BACKUP = "backup_id_of_another_publication"
FAR_FUTURE = "far_after_as_of"

#: The classes of bad input every pipeline rejects when parsing.
COMMON_KINDS = (
    INVALID_JSON,
    INVALID_UTF8,
    NOT_OBJECT,
    UNKNOWN_TYPE,
    MISSING_FIELD,
    MISTYPED_FIELD,
    BAD_TIMESTAMP,
    UNSUPPORTED_VERSION,
    OVERSIZED,
    BAD_ID,
    OUT_OF_RANGE,
    UNREAD_TYPE,
)
SUMMING_KINDS = COMMON_KINDS
FEED_KINDS = (*COMMON_KINDS, FAR_FUTURE)
BACKUP_KINDS = (*COMMON_KINDS, NO_USER, OTHERS_BACKUP, REUSED_BACKUP)

EVENT_TYPES = (
    "sum_packet",
    "post_published",
    "post_updated",
    "post_deleted",
    "post_viewed",
    "post_liked",
    "comment_added",
    "user_followed",
    "tag_followed",
    "user_signed_up",
    "backup_requested",
)
#: What each event type's ``data`` must hold (fields with a default left out).
REQUIRED_DATA = {
    "sum_packet": ("arrayId", "packetId", "packetValue", "arrayLength"),
    "post_published": ("postId", "authorId", "publicationId", "title", "slug", "publishedAt"),
    "post_updated": ("postId", "authorId", "publicationId", "title", "slug", "publishedAt"),
    "post_deleted": ("postId",),
    "post_viewed": ("postId",),
    "post_liked": ("postId",),
    "comment_added": ("postId",),
    "user_followed": ("authorId",),
    "tag_followed": ("tag",),
    "user_signed_up": (),
    "backup_requested": ("backupId", "publicationId"),
}
_INT_FIELDS = frozenset({"packetId", "packetValue", "arrayLength"})
_TIME_FIELDS = frozenset({"publishedAt"})
_ID_FIELDS = frozenset({"arrayId", "postId", "authorId", "publicationId", "backupId"})
_ENVELOPE = ("id", "type", "v", "occurredAt", "data")

_T0 = dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class Message:
    """One message of a corpus.

    Attributes:
        payload: the raw bytes, exactly as sent.
        kind: :data:`GOOD` or the class of bad input it is.
        expect: substrings the dead letter's ``error`` must all contain (bad ones).
        stage: the stage that must dead-letter it: ``parse``, or a later one.
    """

    payload: bytes
    kind: str
    expect: tuple[str, ...] = ()
    stage: str = "parse"

    @property
    def bad(self) -> bool:
        return self.kind != GOOD

    @property
    def sqs_text(self) -> bool:
        """Whether SQS can carry it: UTF-8 of the characters SQS allows in a body."""
        try:
            text = self.payload.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return all(
            ch in "\t\n\r"
            or "\x20" <= ch <= "\ud7ff"
            or "\ue000" <= ch <= "\ufffd"
            or ch >= "\U00010000"
            for ch in text
        )


Envelope = dict[str, Any]


def _time(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def envelope(
    event_type: str,
    data: dict[str, Any],
    *,
    event_id: str,
    at: dt.datetime,
    user_id: str | None = None,
) -> Envelope:
    """A valid event as a plain dict, in the wire form of the README."""
    event: Envelope = {"id": event_id, "type": event_type, "v": 1, "occurredAt": _time(at)}
    if user_id is not None:
        event["userId"] = user_id
    event["data"] = data
    return event


def dump(event: Any, rng: random.Random | None = None) -> bytes:
    """One line of JSON; with ``rng``, in one of several spellings a producer might use
    (compact, spaced, keys in another order, non-ASCII escaped or not)."""
    if rng is None:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    if isinstance(event, dict) and rng.random() < 0.3:
        keys = list(event)
        rng.shuffle(keys)
        event = {key: event[key] for key in keys}
    separators = rng.choice(((",", ":"), (", ", ": "), (" , ", " : ")))
    text = json.dumps(event, separators=separators, ensure_ascii=rng.random() < 0.5)
    return text.encode()


def good(event: Envelope, rng: random.Random | None = None) -> Message:
    return Message(dump(event, rng), GOOD)


# ------------------------------------------------------------------ breaking one thing


def _data_loc(name: str) -> str:
    return f"data.{name}"


def _missing_field(rng: random.Random, event: Envelope, n: int) -> Message:
    fields = [*_ENVELOPE, *(_data_loc(f) for f in REQUIRED_DATA[event["type"]])]
    loc = fields[n % len(fields)]
    broken = copy.deepcopy(event)
    if loc.startswith("data."):
        del broken["data"][loc.removeprefix("data.")]
    else:
        del broken[loc]
    return Message(dump(broken, rng), MISSING_FIELD, (f"missing field: {loc}",))


_NOT_A_STRING: tuple[Any, ...] = (5, True, [], {}, None, 1.5, ["x"])
_NOT_AN_INT: tuple[Any, ...] = ("5", 1.5, True, None, [1], {}, 2.0)
_NOT_AN_OBJECT: tuple[Any, ...] = ([], "x", 5, None, True, [{}])


def _mistyped_field(rng: random.Random, event: Envelope, n: int) -> Message:
    broken = copy.deepcopy(event)
    choices: list[tuple[str, tuple[Any, ...]]] = [
        ("id", _NOT_A_STRING),
        ("v", _NOT_AN_INT),
        ("data", _NOT_AN_OBJECT),
        # userId may be absent or null, but not of another type
        ("userId", tuple(v for v in _NOT_A_STRING if v is not None)),
    ]
    for name in REQUIRED_DATA[event["type"]]:
        if name in _TIME_FIELDS:
            continue
        choices.append((_data_loc(name), _NOT_AN_INT if name in _INT_FIELDS else _NOT_A_STRING))
    loc, values = choices[n % len(choices)]
    value = copy.deepcopy(values[n // len(choices) % len(values)])
    if loc.startswith("data."):
        broken["data"][loc.removeprefix("data.")] = value
    else:
        broken[loc] = value
    return Message(dump(broken, rng), MISTYPED_FIELD, (f"{loc}: Input should be",))


#: Times that are not ISO 8601 times with a zone after the epoch. "1" and 1700000000
#: were once taken as Unix time (issue 9): both must be rejected now.
BAD_TIMES: tuple[Any, ...] = (
    "1",
    1700000000,
    "1700000000",
    1700000000.5,
    0,
    "",
    None,
    "yesterday",
    "now",
    "2026-11-21",
    "21/11/2026 10:00",
    "2026-11-21T10:00:00",
    "2026-13-01T00:00:00Z",
    "2026-02-30T10:00:00Z",
    "2026-11-21T25:00:00Z",
    "1969-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z",
    [2026, 11, 21],
    {"$date": "2026-11-21T10:00:00Z"},
    True,
)
_BEFORE_EPOCH = ("1969-12-31T23:59:59Z", "0001-01-01T00:00:00Z")


def _bad_timestamp(rng: random.Random, event: Envelope, n: int) -> Message:
    broken = copy.deepcopy(event)
    value = copy.deepcopy(BAD_TIMES[n % len(BAD_TIMES)])
    if (
        n >= 2
        and "publishedAt" in broken["data"]
        and rng.random() < 0.4
        and value not in _BEFORE_EPOCH
    ):
        # (only occurredAt must be after the epoch: a post may say it was published earlier)
        loc = "data.publishedAt"
        broken["data"]["publishedAt"] = value
    else:
        loc = "occurredAt"
        broken["occurredAt"] = value
    return Message(dump(broken, rng), BAD_TIMESTAMP, (f"bad timestamp: {loc}",))


def _unsupported_version(rng: random.Random, event: Envelope, n: int) -> Message:
    broken = {**event, "v": (2, 0, 3, 9, 99, -1, 2**31, 10**18)[n % 8]}
    return Message(dump(broken, rng), UNSUPPORTED_VERSION, ("unsupported event version",))


_UNKNOWN_TYPES: tuple[Any, ...] = (
    "post_shared",
    "",
    "SUM_PACKET",
    "sum-packet",
    " sum_packet",
    "backup_request",
    "user_followed ",
    "postViewed",
    "comment_deleted",
    7,
    "événement",
)


def _unknown_type(rng: random.Random, event: Envelope, n: int) -> Message:
    broken = {**event, "type": _UNKNOWN_TYPES[n % len(_UNKNOWN_TYPES)]}
    return Message(dump(broken, rng), UNKNOWN_TYPE, ("unknown event type",))


def _bad_id(rng: random.Random, event: Envelope, n: int) -> Message:
    broken = copy.deepcopy(event)
    locs = [
        "id",
        "userId",
        *(_data_loc(f) for f in REQUIRED_DATA[event["type"]] if f in _ID_FIELDS),
    ]
    loc = locs[n % len(locs)]
    if n % 3 != 2:
        value, expect = "", "String should have at least 1 character"
    else:
        value, expect = "i" * rng.choice((257, 300, 5000)), "String should have at most 256"
    if loc.startswith("data."):
        broken["data"][loc.removeprefix("data.")] = value
    else:
        broken[loc] = value
    return Message(dump(broken, rng), BAD_ID, (f"{loc}: {expect}",))


def _oversized(rng: random.Random, event: Envelope, n: int) -> Message:
    """A valid event made too large by an extra field (extra fields are otherwise ignored)."""
    size = (MAX_EVENT_BYTES + 1, 400_000, MAX_EVENT_BYTES + 7, 300_000)[n % 4]
    return Message(padded(event, size), OVERSIZED, (f"over the {MAX_EVENT_BYTES} limit",))


def padded(event: Envelope, size: int) -> bytes:
    """``event`` with an extra ``padding`` field, ``size`` bytes in all."""
    base = dump({**event, "padding": ""})
    return dump({**event, "padding": "p" * (size - len(base))})


def _sum_packet_out_of_range(rng: random.Random, event: Envelope, n: int) -> Message:
    broken = copy.deepcopy(event)
    data = broken["data"]
    length = data["arrayLength"]
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"packetValue": 2**31}, ("data.packetValue", "less than 2147483648")),
        ({"packetValue": 2**31 + rng.randrange(10**6)}, ("data.packetValue", "less than")),
        ({"packetValue": -(2**31) - 1}, ("data.packetValue", "greater than or equal to")),
        ({"packetValue": 10**20}, ("data.packetValue", "less than")),
        ({"packetId": -1}, ("data.packetId", "greater than or equal to 0")),
        ({"packetId": length}, ("outside an array", f"length {length}")),
        ({"packetId": length + rng.randrange(1, 100)}, ("outside an array",)),
        ({"arrayLength": 0, "packetId": 0}, ("data.arrayLength", "greater than 0")),
        ({"arrayLength": -rng.randrange(1, 10**6)}, ("data.arrayLength", "greater than 0")),
        ({"arrayLength": 1_000_001}, ("data.arrayLength", "less than or equal to 1000000")),
        ({"arrayLength": 10**12}, ("data.arrayLength", "less than or equal to")),
    ]
    change, expect = cases[n % len(cases)]
    data.update(change)
    return Message(dump(broken, rng), OUT_OF_RANGE, expect)


def _post_out_of_range(rng: random.Random, event: Envelope, n: int) -> Message:
    broken = copy.deepcopy(event)
    data = broken["data"]
    cases: list[tuple[str, Any, str]] = [
        ("title", "t" * 10_001, "data.title: String should have at most"),
        ("slug", "s" * 513, "data.slug: String should have at most"),
        ("slug", "", "data.slug: String should have at least"),
        ("tags", [*data.get("tags", []), ""], "data.tags."),
        ("tags", ["x" * 129], "data.tags.0: String should have at most"),
    ]
    name, value, expect = cases[n % len(cases)]
    data[name] = value
    return Message(dump(broken, rng), OUT_OF_RANGE, (expect,))


def _out_of_range(rng: random.Random, event: Envelope, n: int) -> Message:
    """Values outside what the schema allows: the summing limits (32-bit values, packets
    inside the array, at most a million packets) on a packet, text limits on a post."""
    if event["type"] in ("post_published", "post_updated") and n % 2:
        return _post_out_of_range(rng, event, n // 2)
    if event["type"] != "sum_packet":
        event = sum_packet(f"ghost-{rng.randrange(10**6)}", 0, 1, rng.randrange(1, 50), 0)
    return _sum_packet_out_of_range(rng, event, n)


_GARBAGE = (
    "not json at all",
    "{",
    "}",
    "{{}}",
    "nul",
    "undefined",
    "<xml>event</xml>",
    "id=e1&type=sum_packet",
    "{'id': 'e1', 'type': 'sum_packet'}",
    '{id: "e1", type: "post_viewed"}',
    '{"id": "e1",}',
    '{"id" "e1"}',
    '{"id": "e1" "v": 1}',
    '{"data": {"postId": "p1"}',
    '"unterminated',
    '{"id": "\\x41"}',
    "\ufeff{}",
    "[" * 5000,
    '{"a":' * 3000,
)


def _invalid_json(rng: random.Random, event: Envelope, n: int) -> Message:
    roll = (0.0, 0.4, 0.55, 0.7)[n % 4] if n < 4 else rng.random()
    whole = dump(event, rng)
    if roll < 0.35:  # cut short, as a truncated write would be: never closed, never valid
        text = whole.decode()  # cut between characters: a cut UTF-8 sequence is another class
        payload = text[: rng.randrange(1, len(text) - 1)].rstrip().encode() or b"{"
    elif roll < 0.5:  # trailing garbage after a whole event
        payload = whole + rng.choice((b"}", b",", b" x", b'{"id":"again"}', b"]"))
    elif roll < 0.6:  # a raw tab inside a string: a control character JSON does not allow
        payload = whole.replace(b'"v"', b'"\tv"', 1)
    else:
        payload = _GARBAGE[n % len(_GARBAGE)].encode()
    return Message(payload, INVALID_JSON, ("invalid JSON",))


def _raw_control_character(rng: random.Random, event: Envelope, n: int) -> Message:
    """A raw control character inside a string: invalid JSON, and no SQS body (archive)."""
    whole = dump(event)
    char = bytes([(0, 1, 7, 8, 11, 12, 27, 31)[n % 8]])
    at = whole.index(b'"id"') + 2
    return Message(whole[:at] + char + whole[at:], INVALID_JSON, ("invalid JSON",))


_BAD_UTF8 = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80", b"\xe2\x82", b"\xf8\x88")


def _invalid_utf8(rng: random.Random, event: Envelope, n: int) -> Message:
    """Bytes that are not UTF-8, inside a string value or alone (archives only)."""
    bad = _BAD_UTF8[n % len(_BAD_UTF8)]
    if n % 5 == 4:
        return Message(bad * rng.randrange(1, 4), INVALID_UTF8, ("invalid UTF-8",))
    whole = dump(event)
    quotes = [i for i, byte in enumerate(whole) if byte == ord('"')]
    at = rng.choice(quotes[1::2]) if len(quotes) > 1 else 1  # just before a closing quote
    return Message(whole[:at] + bad + whole[at:], INVALID_UTF8, ("invalid UTF-8",))


_NOT_OBJECTS = ("[]", "42", '"text"', "null", "true", "false", "-1.5e3", "[[[[[[[[]]]]]]]]")


def _not_object(rng: random.Random, event: Envelope, n: int) -> Message:
    if n % 3 == 2:
        payload = b"[" + dump(event, rng) + b"]"
    else:
        payload = _NOT_OBJECTS[n % len(_NOT_OBJECTS)].encode()
    return Message(payload, NOT_OBJECT, ("Input should be an object",))


_BREAKERS: dict[str, Callable[[random.Random, Envelope, int], Message]] = {
    INVALID_JSON: _invalid_json,
    INVALID_UTF8: _invalid_utf8,
    NOT_OBJECT: _not_object,
    UNKNOWN_TYPE: _unknown_type,
    MISSING_FIELD: _missing_field,
    MISTYPED_FIELD: _mistyped_field,
    BAD_TIMESTAMP: _bad_timestamp,
    UNSUPPORTED_VERSION: _unsupported_version,
    OVERSIZED: _oversized,
    BAD_ID: _bad_id,
    OUT_OF_RANGE: _out_of_range,
}

#: Bad messages of each common class in a corpus (oversized ones are large: few).
DEFAULT_COUNTS = {
    INVALID_JSON: 30,
    INVALID_UTF8: 20,
    NOT_OBJECT: 12,
    UNKNOWN_TYPE: 20,
    MISSING_FIELD: 30,
    MISTYPED_FIELD: 30,
    BAD_TIMESTAMP: 40,
    UNSUPPORTED_VERSION: 15,
    OVERSIZED: 4,
    BAD_ID: 20,
    OUT_OF_RANGE: 30,
    UNREAD_TYPE: 25,
    NO_USER: 10,
    OTHERS_BACKUP: 6,
    REUSED_BACKUP: 6,
    FAR_FUTURE: 12,
}
#: A few of every class, for a shallow queue (moto's ReceiveMessage slows with its depth).
FEW = {kind: 4 for kind in DEFAULT_COUNTS} | {OVERSIZED: 2, INVALID_UTF8: 0, UNREAD_TYPE: 6}


def _ghosted(rng: random.Random, event: Envelope, ghost: Callable[[Envelope], None]) -> Envelope:
    """A copy of ``event``, its ids replaced by fresh ones a third of the time."""
    copied = copy.deepcopy(event)
    copied["id"] = f"bad-{rng.randrange(10**9)}"
    if rng.random() < 0.33:
        ghost(copied)
    return copied


def malformed(
    rng: random.Random,
    templates: Sequence[Envelope],
    *,
    reads: Iterable[str],
    ghost: Callable[[Envelope], None],
    counts: dict[str, int] | None = None,
) -> list[Message]:
    """Bad messages of every common class, each a copy of one of ``templates`` with one
    thing broken, and valid events of the types a pipeline does not read (``reads``)."""
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    out: list[Message] = []
    for kind, breaker in _BREAKERS.items():
        for n in range(counts[kind]):
            event = _ghosted(rng, rng.choice(templates), ghost)
            out.append(breaker(rng, event, n))
    # a few raw control characters count as invalid JSON too (archives only)
    for n in range(counts[INVALID_JSON] // 6):
        event = _ghosted(rng, rng.choice(templates), ghost)
        out.append(_raw_control_character(rng, event, n))
    unread = [t for t in EVENT_TYPES if t not in set(reads)]
    for n in range(counts[UNREAD_TYPE]):
        event_type = unread[n % len(unread)]
        event = any_event(rng, event_type, f"unread-{n}")
        out.append(
            Message(dump(event, rng), UNREAD_TYPE, (f"event type {event_type!r} is not one",))
        )
    return out


def any_event(rng: random.Random, event_type: str, event_id: str) -> Envelope:
    """A valid event of ``event_type`` (for types a pipeline does not read)."""
    at = _T0 + dt.timedelta(minutes=rng.randrange(600))
    user = f"u{rng.randrange(20)}"
    post = f"p{rng.randrange(10)}"
    data: dict[str, Any] = {
        "sum_packet": {"arrayId": "unread", "packetId": 0, "packetValue": 1, "arrayLength": 1},
        "post_published": post_data(post, "a1", at),
        "post_updated": post_data(post, "a1", at),
        "post_deleted": {"postId": post},
        "post_viewed": {"postId": post},
        "post_liked": {"postId": post},
        "comment_added": {"postId": post},
        "user_followed": {"authorId": "a1"},
        "tag_followed": {"tag": "beam"},
        "user_signed_up": {},
        "backup_requested": {"backupId": f"unread-{event_id}", "publicationId": "pub-a"},
    }[event_type]
    return envelope(event_type, data, event_id=event_id, at=at, user_id=user)


def post_data(post_id: str, author: str, at: dt.datetime, tags: Sequence[str] = ()) -> dict:
    return {
        "postId": post_id,
        "authorId": author,
        "publicationId": f"pub-{author}",
        "title": f"Post {post_id} — notes",
        "slug": post_id,
        "tags": list(tags),
        "publishedAt": _time(at),
    }


def mixed(rng: random.Random, messages: Iterable[Message]) -> list[Message]:
    out = list(messages)
    rng.shuffle(out)
    return out


def line_safe(messages: Iterable[Message]) -> None:
    """Raises AssertionError unless every payload can be a line of an archive."""
    for m in messages:
        line = m.payload
        assert line and not line.isspace() and b"\n" not in line and b"\r" not in line, m


# ------------------------------------------------------------------------------ summing


def sum_packet(array_id: str, packet_id: int, value: int, length: int, n: int) -> Envelope:
    return envelope(
        "sum_packet",
        {"arrayId": array_id, "packetId": packet_id, "packetValue": value, "arrayLength": length},
        event_id=f"{array_id}:{packet_id}",
        at=_T0 + dt.timedelta(seconds=n),
        user_id="adder",
    )


@dataclass(frozen=True)
class SumCorpus:
    """The summing corpus: its messages, shuffled, and the arrays of its good packets."""

    messages: list[Message]
    arrays: dict[str, list[int]]


def summing_corpus(
    seed: int, *, arrays: int = 24, counts: dict[str, int] | None = None
) -> SumCorpus:
    """Good packets of ``arrays`` arrays (every value 32-bit, the extremes included), some
    sent twice, mixed with bad messages of every class the summing pipeline rejects."""
    rng = random.Random(seed)
    values: dict[str, list[int]] = {}
    for n in range(arrays):
        length = rng.choice((1, 2, 3, 5, 8, 13, 21))
        values[f"arr-{seed}-{n}"] = [
            rng.choice((-(2**31), 2**31 - 1, 0, rng.randrange(-(2**31), 2**31)))
            for _ in range(length)
        ]
    packets = [
        sum_packet(array_id, i, value, len(vals), n)
        for n, (array_id, vals) in enumerate(values.items())
        for i, value in enumerate(vals)
    ]
    messages = [good(p) for p in packets]
    messages += [good(p) for p in rng.sample(packets, len(packets) // 10)]  # redelivered
    # a packet padded to exactly the limit is still good
    big = packets[0]
    messages.append(Message(padded(big, MAX_EVENT_BYTES), GOOD))

    def ghost(event: Envelope) -> None:
        event["data"]["arrayId"] = f"ghost-{rng.randrange(10**9)}"

    bad = malformed(rng, packets, reads={"sum_packet"}, ghost=ghost, counts=counts)
    corpus = mixed(rng, messages + bad)
    line_safe(corpus)
    return SumCorpus(corpus, values)


# --------------------------------------------------------------------------------- feed


@dataclass(frozen=True)
class FeedCorpus:
    """The feed corpus: its messages, shuffled; the good ones alone, in order."""

    messages: list[Message]
    good: list[Message]


def feed_corpus(
    seed: int,
    as_of: dt.datetime,
    *,
    posts: int = 10,
    users: int = 20,
    engagement: int = 200,
    counts: dict[str, int] | None = None,
) -> FeedCorpus:
    """A few hours of a small site before ``as_of`` (posts, an update, a deletion, follows,
    sign-ups, ~200 views, likes and comments), mixed with bad messages of every class, of
    which some are valid events far after ``as_of``."""
    rng = random.Random(seed)
    start = as_of - dt.timedelta(hours=10)

    def when(earliest: dt.datetime = start) -> dt.datetime:
        seconds = int((as_of - earliest).total_seconds())
        return earliest + dt.timedelta(seconds=rng.randrange(seconds))

    authors = [f"a{i}" for i in range(4)]
    tags = ["beam", "python", "redis", "sqs"]
    readers = [f"u{i}" for i in range(users)]
    events: list[Envelope] = []
    published: dict[str, dt.datetime] = {}
    for n in range(posts):
        post, author = f"p{n}", rng.choice(authors)
        at = when()
        published[post] = at
        data = post_data(post, author, at, rng.sample(tags, rng.randrange(3)))
        events.append(envelope("post_published", data, event_id=f"pub-{post}", at=at))
        if n == 3:
            retagged = {**data, "tags": ["sqs"]}
            events.append(envelope("post_updated", retagged, event_id=f"upd-{post}", at=when(at)))
        if n == 7:
            events.append(
                envelope("post_deleted", {"postId": post}, event_id=f"del-{post}", at=when(at))
            )
    for user in readers:
        events.append(envelope("user_signed_up", {}, event_id=f"su-{user}", at=start, user_id=user))
        for author in rng.sample(authors, rng.randrange(3)):
            events.append(
                envelope(
                    "user_followed",
                    {"authorId": author},
                    event_id=f"f-{user}-{author}",
                    at=when(),
                    user_id=user,
                )
            )
        for tag in rng.sample(tags, rng.randrange(2)):
            events.append(
                envelope(
                    "tag_followed",
                    {"tag": tag},
                    event_id=f"t-{user}-{tag}",
                    at=when(),
                    user_id=user,
                )
            )
    for n in range(engagement):
        post = rng.choice(list(published))
        kind = rng.choices(("post_viewed", "post_liked", "comment_added"), (70, 20, 10))[0]
        events.append(
            envelope(
                kind,
                {"postId": post},
                event_id=f"e-{n}",
                at=when(published[post]),
                user_id=rng.choice(readers),
            )
        )
    # after --as-of, within the skew: not used by this run, and not a dead letter
    events.append(
        envelope(
            "post_viewed",
            {"postId": "p0"},
            event_id="soon-1",
            at=as_of + dt.timedelta(minutes=2),
            user_id="u0",
        )
    )
    big = envelope(
        "post_viewed", {"postId": "p1"}, event_id="big-1", at=when(published["p1"]), user_id="u1"
    )
    good_messages = [good(e, rng) for e in events]
    good_messages.append(Message(padded(big, MAX_EVENT_BYTES), GOOD))  # at the limit: good

    def ghost(event: Envelope) -> None:
        event["userId"] = f"ghost-{rng.randrange(10**9)}"
        if "postId" in event["data"]:
            event["data"]["postId"] = f"ghost-{rng.randrange(10**9)}"

    feed_types = {
        "post_viewed",
        "post_liked",
        "comment_added",
        "post_published",
        "post_updated",
        "post_deleted",
        "user_followed",
        "tag_followed",
        "user_signed_up",
    }
    counts = {**DEFAULT_COUNTS, **(counts or {})}
    bad = malformed(rng, events[:-1], reads=feed_types, ghost=ghost, counts=counts)
    for n in range(
        counts[FAR_FUTURE]
    ):  # valid, but far after --as-of: dead-lettered at the as_of stage
        template = copy.deepcopy(rng.choice(events[:-1]))
        template["id"] = f"future-{n}"
        template["occurredAt"] = _time(as_of + dt.timedelta(hours=rng.randrange(1, 72)))
        bad.append(
            Message(dump(template, rng), FAR_FUTURE, ("after the run's as-of time",), "as_of")
        )
    corpus = mixed(rng, good_messages + bad)
    line_safe(corpus)
    return FeedCorpus(corpus, good_messages)


# ------------------------------------------------------------------------------- backup


@dataclass(frozen=True)
class BackupCorpus:
    """The backup corpus: its messages, shuffled."""

    messages: list[Message]


def backup_request(
    backup_id: str, publication_id: str, user_id: str | None, event_id: str, n: int = 0
) -> Envelope:
    return envelope(
        "backup_requested",
        {"backupId": backup_id, "publicationId": publication_id},
        event_id=event_id,
        at=_T0 + dt.timedelta(minutes=n),
        user_id=user_id,
    )


def backup_corpus(
    seed: int,
    requests: Sequence[tuple[str, str, str]],
    *,
    taken: tuple[str, str, str],
    counts: dict[str, int] | None = None,
) -> BackupCorpus:
    """Good ``(backupId, publicationId, userId)`` requests, two of them sent again, mixed
    with bad messages of every class: those of every pipeline, and requests the backup
    pipeline must dead-letter when planning: no ``userId``, the id of ``taken`` (a stored
    ``(backupId, publicationId, userId)`` backup) asked for by another user or for another
    publication."""
    rng = random.Random(seed)
    events = [
        backup_request(backup_id, publication, user, f"req-{backup_id}", n)
        for n, (backup_id, publication, user) in enumerate(requests)
    ]
    messages = [good(e, rng) for e in events]
    messages += [good(e, rng) for e in rng.sample(events, 2)]  # replayed requests
    messages.append(Message(padded(events[0], MAX_EVENT_BYTES), GOOD))  # at the limit

    def ghost(event: Envelope) -> None:
        event["data"]["backupId"] = f"ghost-{rng.randrange(10**9)}"

    counts = {**DEFAULT_COUNTS, **(counts or {})}
    bad = malformed(rng, events, reads={"backup_requested"}, ghost=ghost, counts=counts)
    taken_id, taken_publication, owner = taken
    others = sorted({user for _, _, user in requests if user != owner})
    for n in range(counts[NO_USER]):
        backup_id, publication, user = rng.choice(requests)
        request = backup_request(f"nouser-{n}", publication, user, f"nouser-{n}", n)
        if n % 2:
            request["userId"] = None
        else:
            del request["userId"]
        bad.append(Message(dump(request, rng), NO_USER, ("has no userId",), "plan"))
    for n in range(counts[OTHERS_BACKUP]):
        request = backup_request(taken_id, taken_publication, rng.choice(others), f"stolen-{n}", n)
        bad.append(Message(dump(request, rng), OTHERS_BACKUP, ("belongs to another user",), "plan"))
    for n in range(counts[REUSED_BACKUP]):
        publication = rng.choice([p for _, p, _ in requests if p != taken_publication])
        request = backup_request(taken_id, publication, owner, f"reused-{n}", n)
        bad.append(
            Message(
                dump(request, rng),
                REUSED_BACKUP,
                (f"is of publication {taken_publication!r}", "request a new id"),
                "plan",
            )
        )
    corpus = mixed(rng, messages + bad)
    line_safe(corpus)
    return BackupCorpus(corpus)
