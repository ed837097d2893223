"""``--runner dataflow`` fails in seconds with one line naming what is missing: a flag,
Application Default Credentials, or the Google Cloud extras; it never hangs.

Every command runs ``blogflow run summing`` in a subprocess with a clean environment (HOME
a fresh folder, no Google variables), as on a machine nobody logged in to Google Cloud.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from blogflow.runners.dataflow import (
    DataflowCredentialsMissing,
    DataflowFlagMissing,
    check_dataflow,
)

#: Seconds a failing launch may take, Python and Beam's imports included.
WITHIN = 20.0

PROJECT = "--project=blogflow-test"
REGION = "--region=europe-west1"
TEMP = "--temp_location=gs://blogflow-test-tmp/tmp"

#: The Google Cloud extras (``pip install 'blogflow[dataflow]'``) are installed here: then a
#: launch with credentials goes on to Google's services, which these tests cannot reach.
GCP_EXTRAS = all(
    importlib.util.find_spec(name) is not None
    for name in ("google.cloud.dataflow", "google.cloud.storage")
)
needs_no_extras = pytest.mark.skipif(
    GCP_EXTRAS, reason="apache-beam[gcp] is installed: a launch with credentials would go on"
)

NO_CREDENTIALS = (
    "blogflow run summing: --runner dataflow found no Application Default Credentials: "
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
    "to a service account key file"
)
NO_EXTRAS = (
    "blogflow run summing: --runner dataflow needs apache-beam's Google Cloud extras, not "
    "installed here (no module google.cloud.dataflow): pip install 'blogflow[dataflow]'"
)


@pytest.fixture
def events(tmp_path: Path) -> str:
    path = tmp_path / "events.jsonl"
    packet = {
        "id": "e1",
        "type": "sum_packet",
        "v": 1,
        "occurredAt": "2026-11-21T12:00:00Z",
        "userId": "u1",
        "data": {"arrayId": "a1", "packetId": 0, "arrayLength": 1, "value": 3},
    }
    path.write_text(json.dumps(packet) + "\n")
    return f"file://{path}"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def launch(events: str, home: Path, *flags: str, **env: str) -> tuple[int, list[str], float]:
    """``blogflow run summing --runner dataflow FLAGS`` in a clean environment: its exit
    code, the lines it printed (stdout and stderr) and the seconds it took."""
    clean = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(home), **env}
    command = [sys.executable, "-m", "blogflow.cli", "run", "summing", "--source", events]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--runner", "dataflow", *flags],
        env=clean,
        cwd=home,  # no .blogflow/local.env of a stack
        capture_output=True,
        text=True,
        timeout=WITHIN * 3,
    )
    took = time.monotonic() - started
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, lines, took


def assert_fails_with(result: tuple[int, list[str], float], line: str) -> None:
    code, lines, took = result
    assert code != 0
    assert lines == [line]
    assert took < WITHIN


@pytest.mark.parametrize(
    ("flags", "missing"),
    [
        ((REGION, TEMP), "--project: add --project=PROJECT_ID"),
        ((PROJECT, TEMP), "--region: add --region=REGION (e.g. europe-west1)"),
        ((PROJECT, REGION), "--temp_location: add --temp_location=gs://BUCKET/tmp"),
        (
            (),
            "--project, --region and --temp_location: add --project=PROJECT_ID "
            "--region=REGION (e.g. europe-west1) --temp_location=gs://BUCKET/tmp",
        ),
    ],
)
def test_a_missing_flag_is_named_in_one_line(events, home, flags, missing):
    expected = f"blogflow run summing: --runner dataflow needs {missing}"
    assert_fails_with(launch(events, home, *flags), expected)


def test_a_temp_location_off_cloud_storage_is_refused(events, home):
    assert_fails_with(
        launch(events, home, PROJECT, REGION, "--temp_location=/tmp/x"),
        "blogflow run summing: --temp_location '/tmp/x' is not a Cloud Storage path: "
        "give gs://BUCKET/PATH",
    )


def test_no_credentials_is_one_line_in_seconds(events, home):
    assert_fails_with(launch(events, home, PROJECT, REGION, TEMP), NO_CREDENTIALS)


def test_a_missing_credentials_file_is_named(events, home):
    missing = home / "key.json"
    assert_fails_with(
        launch(events, home, PROJECT, REGION, TEMP, GOOGLE_APPLICATION_CREDENTIALS=str(missing)),
        f"blogflow run summing: --runner dataflow cannot load GOOGLE_APPLICATION_CREDENTIALS="
        f"{missing} (File {missing} was not found): point it at a service account key "
        "file, or unset it and run `gcloud auth application-default login`",
    )


@pytest.fixture
def silent_metadata() -> Iterator[str]:
    """A metadata server address that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield f"127.0.0.1:{server.getsockname()[1]}"


def test_a_metadata_server_that_never_answers_does_not_hang(events, home, silent_metadata):
    metadata = {"GCE_METADATA_IP": silent_metadata, "GCE_METADATA_HOST": silent_metadata}
    assert_fails_with(launch(events, home, PROJECT, REGION, TEMP, **metadata), NO_CREDENTIALS)


def test_the_credentials_look_up_is_bounded(monkeypatch, home, silent_metadata):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("CLOUDSDK_CONFIG", raising=False)
    monkeypatch.setenv("GCE_METADATA_IP", silent_metadata)
    options = PipelineOptions([PROJECT, REGION, TEMP])
    started = time.monotonic()
    with pytest.raises(DataflowCredentialsMissing, match="in 0.5 s"):
        check_dataflow(options, timeout=0.5)
    assert time.monotonic() - started < 2


def test_a_project_name_is_not_a_project_id():
    with pytest.raises(DataflowFlagMissing, match="'My Project' is not a Google Cloud project"):
        check_dataflow(PipelineOptions(["--project=My Project", REGION, TEMP]))


def test_a_staging_location_does_for_the_temp_location(monkeypatch, home):
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("CLOUDSDK_CONFIG", raising=False)
    options = PipelineOptions([PROJECT, REGION, "--staging_location=gs://b-staging/s"])
    with pytest.raises(DataflowCredentialsMissing):  # past the flags
        check_dataflow(options)


def _gcloud_login(home: Path) -> None:
    """What `gcloud auth application-default login` leaves (a user's refresh token)."""
    folder = home / ".config" / "gcloud"
    folder.mkdir(parents=True)
    user = {
        "type": "authorized_user",
        "client_id": "blogflow-test.apps.googleusercontent.com",
        "client_secret": "not-a-secret",
        "refresh_token": "not-a-token",
    }
    (folder / "application_default_credentials.json").write_text(json.dumps(user))


@needs_no_extras
def test_with_credentials_missing_extras_are_named(events, home):
    _gcloud_login(home)
    assert_fails_with(launch(events, home, PROJECT, REGION, TEMP), NO_EXTRAS)


class _Metadata(http.server.BaseHTTPRequestHandler):
    """Compute Engine's metadata server, as far as finding credentials asks it."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"blogflow-test" if self.path.endswith("/project/project-id") else b"ok"
        self.send_response(200)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", "application/text")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metadata_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@needs_no_extras
def test_the_metadata_servers_credentials_are_found(events, home, metadata_server):
    """On Google Cloud (a VM, the Flex Template launcher) credentials come from the
    metadata server: found, so the check goes on (here, to the missing extras)."""
    metadata = {"GCE_METADATA_IP": metadata_server, "GCE_METADATA_HOST": metadata_server}
    assert_fails_with(launch(events, home, PROJECT, REGION, TEMP, **metadata), NO_EXTRAS)
