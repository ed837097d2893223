"""blogflow publish: raw lines to SQS, Kinesis or Pub/Sub, and clear errors."""

import io

import pytest
from click.testing import CliRunner

from blogflow.cli import cli
from blogflow.io.publish import publish, read_lines


def test_read_lines_skips_blank_lines_and_line_ends():
    data = io.BytesIO(b'{"a":1}\r\n\n  \n{"b":2}\n{"c":3}')
    assert list(read_lines(data)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_an_unknown_target_is_refused():
    with pytest.raises(ValueError, match="expected one of sqs://..., kinesis://..., pubsub://"):
        list(publish("ftp://x", [b"{}"]))
    result = CliRunner().invoke(cli, ["publish", "-", "--to", "ftp://x"], input=b"{}\n")
    assert result.exit_code == 2 and "unsupported target" in result.output


@pytest.mark.integration
def test_publish_to_sqs_sends_every_line_with_progress(local_stack, sqs_client, unique_name):
    lines = b"".join(b'{"n": %d}\n' % n for n in range(12))
    result = CliRunner().invoke(
        cli, ["publish", "-", "--to", f"sqs://{unique_name}", "--create"], input=lines
    )
    assert result.exit_code == 0, result.output
    assert "published 12 events" in result.output
    url = sqs_client.get_queue_url(QueueName=unique_name)["QueueUrl"]
    try:
        attributes = sqs_client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "12"
    finally:
        sqs_client.delete_queue(QueueUrl=url)
    assert list(publish(f"sqs://{unique_name}-missing", [])) == []  # nothing to send, no call


def test_sample_events_are_valid_events_for_publish(tmp_path):
    from blogflow.events import parse_event

    path = tmp_path / "events.jsonl"
    result = CliRunner().invoke(cli, ["sample-events", str(path)])
    assert result.exit_code == 0, result.output
    lines = list(read_lines(path.open("rb")))
    assert len(lines) > 400
    assert {parse_event(line).type for line in lines} >= {"post_published", "post_viewed"}
