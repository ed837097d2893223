"""ParseEvents: raw records to events, and rejections that keep the message as received."""

import json

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from blogflow.events import Rejection, SourceRecord, parse_event, reject_event
from blogflow.transforms.parsing import ParseEvents

RAW = json.dumps(
    {
        "id": "e1",
        "type": "post_viewed",
        "v": 1,
        "occurredAt": "2026-11-21T10:00:00Z",
        "userId": "u1",
        "data": {"postId": "p1"},
    },
    indent=2,  # not how blogflow would write it: a re-serialised payload would differ
).encode()


def _check_later_stage_rejections(keep_source: bool) -> None:
    with BeamTestPipeline() as p:
        records = p | beam.Create([SourceRecord(RAW, "msg-7"), SourceRecord(b"{", "msg-8")])
        parsed = records | ParseEvents(keep_source=keep_source)
        later = parsed.events | beam.Map(lambda e: reject_event(e, "plan", "not permitted"))
        assert_that(
            later,
            equal_to(
                [Rejection("plan", "not permitted", RAW, "msg-7")]
                if keep_source
                else [Rejection("plan", "not permitted", parse_event(RAW).to_json(), "e1")]
            ),
        )
        assert_that(
            parsed.rejected | beam.Map(lambda r: (r.stage, r.source_id)),
            equal_to([("parse", "msg-8")]),
            label="ParseRejections",
        )


def test_a_later_rejection_keeps_the_raw_message_and_its_source_id():
    _check_later_stage_rejections(keep_source=True)


def test_without_the_source_a_later_rejection_falls_back_to_the_event():
    _check_later_stage_rejections(keep_source=False)


def test_an_event_equals_itself_with_or_without_its_source():
    bare, sourced = parse_event(RAW), parse_event(RAW)
    sourced._source = SourceRecord(RAW, "msg-7")
    assert bare == sourced and hash(bare) == hash(sourced)
    assert reject_event(sourced, "as_of", "late").payload == RAW
