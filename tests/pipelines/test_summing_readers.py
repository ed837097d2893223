"""The summing job scales out without a shuffle: several SQS readers, each bundle merged
into MongoDB by itself (guarded by the stored digests and ``rev``), give exact sums."""

from __future__ import annotations

import pytest
from apache_beam.portability import common_urns

from blogflow.io import sqs
from blogflow.pipelines import summing
from blogflow.transforms.summing import split_array

_GROUP_BY_KEY = common_urns.primitives.GROUP_BY_KEY.urn


def _groupings(argv: list[str]) -> list[str]:
    """The GroupByKeys of the summing job that ``argv`` builds, by name."""
    proto = summing.JOB.pipeline(argv).to_runner_api()
    return sorted(
        t.unique_name for t in proto.components.transforms.values() if t.spec.urn == _GROUP_BY_KEY
    )


def test_no_shuffle_between_the_read_and_the_stores():
    """The only GroupByKey is the Reshuffle that spreads the readers, before they read:
    every reader's bundles go straight to WriteSums, no step keys them together."""
    groupings = _groupings(["--source=sqs://q", "--drain", "--sqs-readers=4"])
    assert groupings, "the readers are spread by a Reshuffle"
    assert all(name.startswith("ReadSource/ReadFromSQS/ReadSpec/") for name in groupings), groupings
    assert _groupings(["--source=sqs://q", "--drain"]) == []


@pytest.mark.integration
def test_several_readers_sum_exactly_once(
    local_stack, sqs_client, unique_name, mongo_db, redis_prefix
):
    url = sqs.create_queue(unique_name, visibility_timeout=10)
    try:
        arrays: dict[str, int] = {}
        bodies: list[bytes] = []
        for values in ([3, 1, 4, 1, 5], list(range(40)), [7] * 25, [-5, 9]):
            array_id, events = split_array(values)
            arrays[array_id] = 2 * sum(values)
            payloads = [event.to_json() for event in events]
            bodies += payloads + payloads[:3]  # some packets delivered twice
        sqs.send_messages(url, bodies)
        result = summing.run(
            [
                f"--source=sqs://{url}",
                "--drain",
                "--idle-timeout=1",
                "--sqs-readers=3",
                f"--mongo-db={mongo_db.name}",
                f"--redis-prefix={redis_prefix}",
            ]
        )
        result.wait_until_finish()
        for array_id, total in arrays.items():
            doc = mongo_db.sums.find_one({"_id": array_id}) or {}
            assert (doc.get("sum"), doc.get("status")) == (total, "complete"), array_id
            assert doc["packetsSeen"] == doc["arrayLength"]
        attributes = sqs_client.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
            ],
        )["Attributes"]
        assert set(attributes.values()) == {"0"}
    finally:
        sqs_client.delete_queue(QueueUrl=url)
