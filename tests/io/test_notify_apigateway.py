"""NotifyProgress("apigateway") and blogflow.io.apigateway against the local stack's moto.

Connections live in a DynamoDB table of the test's own (``unique_name``), deleted after.
moto_server keeps what is posted to a connection but has no call that returns it, so the
tests read the posts back from moto's request recorder (``/moto-api/recorder/...``),
filtered by the test's own connection ids.

moto_server (5.2.5, and upstream at the time of writing) never answers ``410 Gone``: its
connections are a ``defaultdict``, so posting to an unknown or deleted connection id
creates it and answers 200. The removal of stale connections is exercised by
``test_stale_connection_answering_410_is_removed``, whose Management API endpoint is a
small loopback stand-in that answers a real HTTP 410 ``GoneException`` (DynamoDB stays
on moto).
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import PipelineResult

from blogflow.io import apigateway, aws
from blogflow.io.notify import BACKENDS, NotifyProgress
from blogflow.local.stack import LocalStack
from tests.conftest import _aws_client

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------------ helpers


def progress(backup: str, done: int, total: int) -> dict[str, Any]:
    return {
        "type": "backup_progress",
        "backupId": backup,
        "postId": f"p{done}",
        "status": "ok",
        "done": done,
        "total": total,
    }


def notify(elements: list[tuple[str, dict[str, Any]]], **kwargs: Any) -> PipelineResult:
    """Run ``Create(elements) | NotifyProgress("apigateway", **kwargs)`` on FnApiRunner."""
    p = beam.Pipeline(runner=FnApiRunner())
    messages = p | "Create" >> beam.Create(elements, reshuffle=False)  # in order
    _ = messages | "NotifyProgress" >> NotifyProgress("apigateway", **kwargs)
    result = p.run()
    result.wait_until_finish()
    return result


def counter(result: PipelineResult, name: str) -> int:
    counters = result.metrics().query(MetricsFilter().with_name(name))["counters"]
    return sum(c.committed for c in counters)


def has_row(dynamodb: Any, table: str, connection_id: str) -> bool:
    key = {"connectionId": {"S": connection_id}}
    return "Item" in dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True)


class MotoRecording:
    """The requests moto_server received since this object was made, from its recorder."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._call("/moto-api/recorder/start-recording", "POST")
        try:
            self._offset = len(self._download())
        except urllib.error.HTTPError:  # nothing recorded yet: moto has no file to send
            self._call("/moto-api/recorder/reset-recording", "POST")  # creates it
            self._offset = 0

    def _call(self, path: str, method: str = "GET") -> str:
        request = urllib.request.Request(self._endpoint + path, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(response.read().decode("utf-8"))

    def _download(self) -> str:
        return self._call("/moto-api/recorder/download-recording")

    def stop(self) -> None:
        self._call("/moto-api/recorder/stop-recording", "POST")

    def requests(self) -> list[dict[str, Any]]:
        lines = self._download()[self._offset :].splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def posted(self, connection_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every connection's posted messages (JSON), in the order moto received them."""
        posted: dict[str, list[dict[str, Any]]] = {cid: [] for cid in connection_ids}
        for entry in self.requests():
            connection_id = unquote(urlsplit(entry["url"]).path).rpartition("/@connections/")[2]
            if entry["method"] == "POST" and connection_id in posted:
                posted[connection_id].append(json.loads(_body(entry)))
        return posted

    def queries(self, table: str) -> int:
        """How many DynamoDB Query calls named ``table``."""
        count = 0
        for entry in self.requests():
            headers = {key.lower(): value for key, value in entry["headers"].items()}
            if headers.get("x-amz-target") == "DynamoDB_20120810.Query":
                count += json.loads(_body(entry)).get("TableName") == table
        return count


def _body(entry: dict[str, Any]) -> bytes:
    """The body of a request moto's recorder kept."""
    body = entry["body"] or ""
    return base64.b64decode(body) if entry["body_encoded"] else body.encode("utf-8")


class GoneStandIn:
    """A loopback stand-in for the Management API's PostToConnection, for what moto can't.

    It answers ``410 GoneException`` for the ids in ``gone``, plays the statuses queued in
    ``failures[id]`` first, else 200; every post is kept in ``posts``.
    """

    _ERRORS = {
        403: "ForbiddenException",
        410: "GoneException",
        429: "LimitExceededException",
        500: "InternalServerErrorException",
        503: "ServiceUnavailableException",
    }

    def __init__(self) -> None:
        self.gone: set[str] = set()
        self.failures: dict[str, list[int]] = {}
        self.posts: list[tuple[str, bytes]] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                connection_id = unquote(self.path).rpartition("/@connections/")[2]
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.posts.append((connection_id, data))
                queued = stand_in.failures.get(connection_id)
                status = queued.pop(0) if queued else 200
                if connection_id in stand_in.gone:
                    status = 410
                body = b"{}" if status == 200 else b'{"message":null}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                if status != 200:
                    self.send_header("x-amzn-ErrorType", stand_in._ERRORS[status])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def posted(self, connection_id: str) -> list[dict[str, Any]]:
        return [json.loads(data) for cid, data in self.posts if cid == connection_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def dynamodb(local_stack: LocalStack) -> Iterator[Any]:
    client = _aws_client(local_stack, "dynamodb")
    yield client
    client.close()


@pytest.fixture
def management(local_stack: LocalStack) -> Iterator[Any]:
    """A plain Management API client on moto (the test's own view of the connections)."""
    client = _aws_client(local_stack, "apigatewaymanagementapi")
    yield client
    client.close()


@pytest.fixture
def table(dynamodb: Any, unique_name: str) -> Iterator[str]:
    """A connections table (with its byUserId index) of this test's own, deleted after."""
    apigateway.create_connections_table(dynamodb, unique_name)
    yield unique_name
    dynamodb.delete_table(TableName=unique_name)


@pytest.fixture
def recording(local_stack: LocalStack) -> Iterator[MotoRecording]:
    recording = MotoRecording(local_stack.env["AWS_ENDPOINT_URL"])
    yield recording
    recording.stop()


@pytest.fixture
def stand_in() -> Iterator[GoneStandIn]:
    server = GoneStandIn()
    yield server
    server.close()


# -------------------------------------------------------------------------------- tests


def test_each_user_gets_exactly_their_own_messages_in_order(
    local_stack, dynamodb, table, recording, unique_name
):
    ann = [f"{unique_name}-ann-1", f"{unique_name}-ann-2"]
    bob = [f"{unique_name}-bob-1"]
    eve = [f"{unique_name}-eve-1"]  # connected, but no message is hers
    for user, ids in (("ann", ann), ("bob", bob), ("eve", eve)):
        for connection_id in ids:
            apigateway.register_connection(dynamodb, table, connection_id, user)
    ann_messages = [progress("b1", n, 4) for n in range(1, 5)]
    bob_messages = [progress("b2", n, 3) for n in range(1, 4)]
    elements = [
        ("ann", ann_messages[0]),
        ("bob", bob_messages[0]),
        ("ann", ann_messages[1]),
        ("ann", ann_messages[2]),
        ("bob", bob_messages[1]),
        ("bob", bob_messages[2]),
        ("ann", ann_messages[3]),
    ]

    result = notify(elements, endpoint_url=local_stack.env["AWS_ENDPOINT_URL"], table=table)

    posted = recording.posted(ann + bob + eve)
    assert posted == {ann[0]: ann_messages, ann[1]: ann_messages, bob[0]: bob_messages, eve[0]: []}
    assert counter(result, "progress_messages_sent") == 2 * 4 + 3
    assert counter(result, "progress_stale_connections_removed") == 0
    assert recording.queries(table) == 2  # one bundle: one lookup per user, not per message
    assert all(has_row(dynamodb, table, cid) for cid in ann + bob + eve)


def test_connections_are_looked_up_once_per_flush(local_stack, dynamodb, table, recording):
    apigateway.register_connection(dynamodb, table, f"{table}-ann", "ann")
    apigateway.register_connection(dynamodb, table, f"{table}-bob", "bob")
    elements = [(user, progress("b", n, 6)) for n in range(1, 4) for user in ("ann", "bob")]

    notify(elements, endpoint_url=local_stack.env["AWS_ENDPOINT_URL"], table=table, batch_size=2)

    assert recording.queries(table) == 3 * 2  # 3 flushes of 2 messages, ann and bob each
    posted = recording.posted([f"{table}-ann", f"{table}-bob"])
    assert [m["done"] for m in posted[f"{table}-ann"]] == [1, 2, 3]
    assert [m["done"] for m in posted[f"{table}-bob"]] == [1, 2, 3]


def test_stale_connection_answering_410_is_removed(dynamodb, table, stand_in):
    apigateway.register_connection(dynamodb, table, "ann-live", "ann")
    apigateway.register_connection(dynamodb, table, "ann-closed", "ann")
    apigateway.register_connection(dynamodb, table, "bob-live", "bob")
    stand_in.gone.add("ann-closed")
    ann_messages = [progress("b1", n, 3) for n in range(1, 4)]
    elements = [("ann", m) for m in ann_messages] + [("bob", progress("b2", 1, 1))]

    result = notify(elements, endpoint_url=stand_in.url, table=table, region="us-east-1")

    assert stand_in.posted("ann-live") == ann_messages
    assert stand_in.posted("bob-live") == [progress("b2", 1, 1)]
    assert len(stand_in.posted("ann-closed")) == 1  # 410 once, then skipped
    assert not has_row(dynamodb, table, "ann-closed")
    assert has_row(dynamodb, table, "ann-live") and has_row(dynamodb, table, "bob-live")
    assert apigateway.connections_of(dynamodb, table, "ann") == ["ann-live"]
    assert counter(result, "progress_stale_connections_removed") == 1
    assert counter(result, "progress_messages_sent") == 4


def test_an_unreachable_endpoint_fails_the_pipeline_after_bounded_retries(dynamodb, table):
    apigateway.register_connection(dynamodb, table, "ann-1", "ann")
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(
            Exception,
            match=r"could not post to WebSocket connection 'ann-1' "
            r"after 2 attempt\(s\): EndpointConnectionError",
        ):
            notify([("ann", progress("b1", 1, 1))], endpoint_url=url, table=table, max_attempts=2)
    assert has_row(dynamodb, table, "ann-1")  # a failure is not a 410


def test_post_retries_transient_errors_and_surfaces_permanent_ones(local_stack, stand_in):
    client = apigateway.management_client(stand_in.url, region_name="us-east-1")
    try:
        stand_in.failures["flaky"] = [500, 503, 429]
        assert apigateway.post(client, "flaky", b"{}", first_wait=0.01) is False
        assert len(stand_in.posted("flaky")) == 4

        stand_in.failures["forbidden"] = [403]
        with pytest.raises(aws.AWSError, match=r"after 1 attempt\(s\): ForbiddenException"):
            apigateway.post(client, "forbidden", b"{}", first_wait=0.01)
        assert len(stand_in.posted("forbidden")) == 1

        stand_in.failures["down"] = [503] * 10
        with pytest.raises(aws.AWSError, match=r"'down' after 3 attempt\(s\)"):
            apigateway.post(client, "down", b"{}", attempts=3, first_wait=0.01)
        assert len(stand_in.posted("down")) == 3

        stand_in.gone.add("closed")
        assert apigateway.post(client, "closed", b"{}") is True
        assert len(stand_in.posted("closed")) == 1  # a 410 is an answer, not retried
    finally:
        aws.close_client(client)


def test_connection_registry_round_trip(dynamodb, table):
    for connection_id, user in (("c1", "ann"), ("c3", "ann"), ("c2", "ann"), ("c4", "bob")):
        apigateway.register_connection(dynamodb, table, connection_id, user)
    apigateway.register_connection(dynamodb, table, "c1", "ann")  # idempotent

    assert apigateway.connections_of(dynamodb, table, "ann") == ["c1", "c2", "c3"]
    assert apigateway.connections_of(dynamodb, table, "bob") == ["c4"]
    assert apigateway.connections_of(dynamodb, table, "nobody") == []

    apigateway.remove_connection(dynamodb, table, "c2")
    apigateway.remove_connection(dynamodb, table, "never-there")  # idempotent
    assert apigateway.connections_of(dynamodb, table, "ann") == ["c1", "c3"]
    description = dynamodb.describe_table(TableName=table)["Table"]
    assert [i["IndexName"] for i in description["GlobalSecondaryIndexes"]] == ["byUserId"]


def test_a_missing_table_fails_clearly(dynamodb, unique_name):
    with pytest.raises(aws.AWSError, match=f"table '{unique_name}'"):
        apigateway.connections_of(dynamodb, unique_name, "ann")


URL = "https://abc123.execute-api.eu-west-1.amazonaws.com/prod"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"table": "connections"}, "needs endpoint_url"),
        ({"endpoint_url": URL}, "needs table"),
        ({"endpoint_url": "", "table": "connections"}, "endpoint_url must be"),
        ({"endpoint_url": "wss://abc.example/prod", "table": "connections"}, "https://"),
        ({"endpoint_url": "ftp://abc.example", "table": "connections"}, "http"),
        ({"endpoint_url": "https://key:secret@abc.example", "table": "x1x"}, "credentials"),
        ({"endpoint_url": URL, "table": "no spaces"}, "DynamoDB table name"),
        ({"endpoint_url": URL, "table": "ab"}, "DynamoDB table name"),
        ({"endpoint_url": URL, "table": "connections", "region": " "}, "region"),
        ({"endpoint_url": URL, "table": "connections", "max_attempts": 0}, "max_attempts"),
        ({"endpoint_url": URL, "table": "connections", "batch_size": 0}, "batch_size"),
        ({"endpoint_url": URL, "table": "connections", "redis_url": "redis://x"}, "redis_url"),
        ({"endpoint_url": URL, "table": "connections", "prefix": "p:"}, "prefix"),
    ],
)
def test_apigateway_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NotifyProgress("apigateway", **kwargs)


def test_backends_and_their_arguments():
    assert BACKENDS == ("redis", "apigateway")
    NotifyProgress("apigateway", endpoint_url=URL, table="connections", region="eu-west-1")
    NotifyProgress("redis", prefix="p:")
    with pytest.raises(ValueError, match="apigateway backend only"):
        NotifyProgress("redis", table="connections")
    with pytest.raises(ValueError, match="backend"):
        NotifyProgress("carrier-pigeon")
