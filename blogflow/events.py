"""The event envelope and every event type blogflow understands.

Every event travels as a JSON envelope::

    {"id": "...", "type": "sum_packet", "v": 1, "occurredAt": "2026-11-21T10:00:00Z",
     "userId": "u1", "data": {...}}

``id`` is unique per event and makes every step replayable; ``occurredAt`` is the event
time. :func:`parse_event` turns raw bytes into a typed, immutable event or raises
:class:`EventRejected` whose ``reason`` names what is wrong (invalid JSON or UTF-8, unknown
type, missing or mistyped field, bad timestamp, payload too large, ...). Validation is
pydantic's: the models below are the schema.

Unknown extra fields are ignored (a tolerant reader), so producers can add fields
without breaking consumers; a change of meaning bumps ``v``.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "EVENT_TYPES",
    "MAX_EVENT_BYTES",
    "BackupRequested",
    "CommentAdded",
    "Event",
    "EventRejected",
    "PostDeleted",
    "PostLiked",
    "PostPublished",
    "PostUpdated",
    "PostViewed",
    "Rejection",
    "SourceRecord",
    "SumPacket",
    "TagFollowed",
    "UserFollowed",
    "UserSignedUp",
    "make_event",
    "parse_event",
    "reject_event",
]

#: Largest accepted payload, in bytes (SQS's own message limit).
MAX_EVENT_BYTES = 256 * 1024
#: The envelope version this code understands.
SUPPORTED_VERSION = 1
#: Packet values are 32-bit integers and arrays hold at most a million packets, so every
#: sum (2 x value x length) fits a 64-bit integer and a JavaScript number exactly.
MAX_ARRAY_LENGTH = 1_000_000
_INT32 = 2**31

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

_Id = Annotated[str, Field(min_length=1, max_length=256)]
# An ISO 8601 date and time: "2026-11-21T10:00:00Z". pydantic alone would also take a
# string of digits as Unix time, and a time that is not written as one is a producer bug.
_ISO_DATETIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}")


def _iso_8601(value: Any) -> Any:
    if isinstance(value, dt.datetime) or (isinstance(value, str) and _ISO_DATETIME.match(value)):
        return value
    raise ValueError("must be an ISO 8601 time with a zone, e.g. 2026-11-21T10:00:00Z")


# Lax parsing of the string the validator let through (strict mode takes no string
# once a validator wraps the field).
_Time = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_iso_8601)]
_Text = Annotated[str, Field(max_length=10_000)]


class EventRejected(ValueError):
    """Raised when raw bytes are not a valid event; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")


# ---------------------------------------------------------------------------- payloads


class SumPacketData(_Model):
    """One packet of an array to be summed: element ``packetId`` of ``arrayLength``."""

    arrayId: _Id
    packetId: Annotated[int, Field(ge=0)]
    packetValue: Annotated[int, Field(ge=-_INT32, lt=_INT32)]
    arrayLength: Annotated[int, Field(gt=0, le=MAX_ARRAY_LENGTH)]

    @model_validator(mode="after")
    def _packet_in_array(self) -> SumPacketData:
        if self.packetId >= self.arrayLength:
            raise ValueError(
                f"packetId {self.packetId} is outside an array of length {self.arrayLength}"
            )
        return self


class PostData(_Model):
    """A post as published or updated."""

    postId: _Id
    authorId: _Id
    publicationId: _Id
    title: _Text
    slug: Annotated[str, Field(min_length=1, max_length=512)]
    tags: tuple[Annotated[str, Field(min_length=1, max_length=128)], ...] = ()
    publishedAt: _Time


class PostRef(_Model):
    """An event about one post."""

    postId: _Id


class AuthorRef(_Model):
    authorId: _Id


class TagRef(_Model):
    tag: Annotated[str, Field(min_length=1, max_length=128)]


class NoData(_Model):
    pass


class BackupData(_Model):
    backupId: _Id
    publicationId: _Id


# ---------------------------------------------------------------------------- envelopes


class _Envelope(_Model):
    id: _Id
    v: int
    occurredAt: _Time
    userId: _Id | None = None
    # The raw message this event was parsed from, kept only where a later stage may
    # reject it (``ParseEvents(keep_source=True)``): see :func:`reject_event`.
    _source: SourceRecord | None = PrivateAttr(default=None)

    @field_validator("v")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != SUPPORTED_VERSION:
            raise ValueError(
                f"unsupported event version {v} (this build reads v{SUPPORTED_VERSION})"
            )
        return v

    @field_validator("occurredAt")
    @classmethod
    def _after_epoch(cls, value: dt.datetime) -> dt.datetime:
        if value < _EPOCH:
            raise ValueError("occurredAt is before the Unix epoch")
        return value

    @property
    def event_time(self) -> float:
        """The event time as seconds since the epoch (a Beam timestamp)."""
        return self.occurredAt.timestamp()

    def __eq__(self, other: object) -> bool:
        # The same event whether or not it carries its source message.
        if not isinstance(other, _Envelope):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = _Model.__hash__

    def to_json(self) -> bytes:
        """The wire form of this event."""
        return self.model_dump_json(exclude_none=True).encode()


class SumPacket(_Envelope):
    type: Literal["sum_packet"]
    data: SumPacketData


class PostPublished(_Envelope):
    type: Literal["post_published"]
    data: PostData


class PostUpdated(_Envelope):
    type: Literal["post_updated"]
    data: PostData


class PostDeleted(_Envelope):
    type: Literal["post_deleted"]
    data: PostRef


class PostViewed(_Envelope):
    type: Literal["post_viewed"]
    data: PostRef


class PostLiked(_Envelope):
    type: Literal["post_liked"]
    data: PostRef


class CommentAdded(_Envelope):
    type: Literal["comment_added"]
    data: PostRef


class UserFollowed(_Envelope):
    type: Literal["user_followed"]
    data: AuthorRef


class TagFollowed(_Envelope):
    type: Literal["tag_followed"]
    data: TagRef


class UserSignedUp(_Envelope):
    type: Literal["user_signed_up"]
    data: NoData


class BackupRequested(_Envelope):
    type: Literal["backup_requested"]
    data: BackupData


Event = Annotated[
    SumPacket
    | PostPublished
    | PostUpdated
    | PostDeleted
    | PostViewed
    | PostLiked
    | CommentAdded
    | UserFollowed
    | TagFollowed
    | UserSignedUp
    | BackupRequested,
    Field(discriminator="type"),
]

_EVENT_CLASSES: dict[str, type[_Envelope]] = {
    cls.model_fields["type"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in (
        SumPacket,
        PostPublished,
        PostUpdated,
        PostDeleted,
        PostViewed,
        PostLiked,
        CommentAdded,
        UserFollowed,
        TagFollowed,
        UserSignedUp,
        BackupRequested,
    )
}
#: Every event type name, e.g. ``"sum_packet"``.
EVENT_TYPES: tuple[str, ...] = tuple(_EVENT_CLASSES)

_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def _reason(error: ValidationError, raw: bytes | str | None = None) -> str:
    """One line naming the first problem, e.g. ``data.arrayLength: must be > 0``."""
    first = error.errors(include_url=False, include_input=False)[0]
    kind = first["type"]
    if kind == "json_invalid":
        if isinstance(raw, bytes):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return f"invalid UTF-8 at byte {bad.start}"
        return f"invalid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    if kind == "union_tag_invalid":
        tag = first.get("ctx", {}).get("tag", "?")
        return f"unknown event type {tag!r}"
    if kind == "union_tag_not_found":
        return "missing field: type"
    loc = ".".join(str(part) for part in first["loc"][1:] or first["loc"])
    if kind == "missing":
        return f"missing field: {loc}"
    message = first["msg"].removeprefix("Value error, ")
    if first["loc"] and first["loc"][-1] in ("occurredAt", "publishedAt"):
        return f"bad timestamp: {loc}: {message}"
    return f"{loc}: {message}" if loc else f"envelope: {message}"


def parse_event(raw: bytes | str) -> Event:
    """Parse and validate one event.

    Args:
        raw: the message body, UTF-8 JSON.

    Returns:
        The typed, immutable event.

    Raises:
        EventRejected: with a one-line ``reason`` when ``raw`` is not a valid event.
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise EventRejected(f"payload of {len(raw)} bytes is over the {MAX_EVENT_BYTES} limit")
    try:
        return _ADAPTER.validate_json(raw)
    except ValidationError as error:
        raise EventRejected(_reason(error, raw)) from None


def make_event(
    event_type: str,
    data: dict[str, Any],
    *,
    user_id: str | None = None,
    occurred_at: dt.datetime | None = None,
    event_id: str | None = None,
) -> Event:
    """Build a validated event, filling in a fresh id and the current time.

    Raises:
        EventRejected: if the type is unknown or the data invalid.
    """
    cls = _EVENT_CLASSES.get(event_type)
    if cls is None:
        raise EventRejected(f"unknown event type {event_type!r}")
    envelope = {
        "id": event_id or uuid.uuid4().hex,
        "type": event_type,
        "v": SUPPORTED_VERSION,
        "occurredAt": occurred_at or dt.datetime.now(dt.timezone.utc),
        "userId": user_id,
        "data": data,
    }
    try:
        return cls.model_validate(envelope, strict=False)  # type: ignore[return-value]
    except ValidationError as error:
        raise EventRejected(_reason(error)) from None


class SourceRecord(NamedTuple):
    """One raw message as a source read it, before parsing.

    Attributes:
        payload: the message body, exactly as received.
        origin: where it came from: the SQS ``MessageId``, or the path of a file.
        offset: the byte offset of the line in the file ``origin``; None for messages.

    Its :attr:`id` is stable: a redelivery has the same id.
    """

    payload: bytes
    origin: str
    offset: int | None = None

    @property
    def id(self) -> str:
        """The message's id at its source: ``origin``, or ``"{path}@{offset}"`` for a line.

        Built on demand: readers emit millions of records and only a rejected one needs it.
        """
        return self.origin if self.offset is None else f"{self.origin}@{self.offset}"


class Rejection(NamedTuple):
    """A message a pipeline could not use, on its way to the dead-letter sink.

    Attributes:
        stage: the step that rejected it, e.g. ``"parse"``.
        error: why, in one line.
        payload: the raw message, as received.
        source_id: the message's id at its source (see :class:`SourceRecord`).
    """

    stage: str
    error: str
    payload: bytes
    source_id: str


def reject_event(event: _Envelope, stage: str, error: str) -> Rejection:
    """A :class:`Rejection` of an event a stage after parsing could not use.

    It carries the raw message and its source id when the event was parsed with
    ``ParseEvents(keep_source=True)``, so the dead letter is the message as received, and
    a redelivery of it is stored once; else the event's own JSON and id.
    """
    source = event._source
    if source is None:
        return Rejection(stage, error, event.to_json(), event.id)
    return Rejection(stage, error, source.payload, source.id)
