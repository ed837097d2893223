"""What ``--runner dataflow`` needs, checked in seconds and offline before a job is staged.

Beam's ``DataflowRunner`` that finds no credentials retries for a while, "connects
anonymously" and then retries staging to Cloud Storage: a launch from a machine without
credentials hung (killed after 200 s) instead of failing. :func:`check_dataflow` asks
first, each a one-line :class:`~blogflow.runners.RunnerError` naming the fix:

1. the flags Dataflow cannot start without: ``--project``, ``--region`` and a ``gs://``
   ``--temp_location`` (or ``--staging_location``);
2. Application Default Credentials: ``google.auth.default()``, which reads
   ``$GOOGLE_APPLICATION_CREDENTIALS`` or gcloud's file and else asks the Compute Engine
   metadata server; that probe is bounded (each request 1 s, the whole look-up
   :data:`CREDENTIALS_TIMEOUT`), so an offline machine or a metadata address that never
   answers costs seconds, and on Google Cloud (a VM, the Flex Template launcher) the
   metadata server's credentials are found as Beam would find them;
3. the Google Cloud client libraries of ``apache-beam[gcp]`` (``pip install
   'blogflow[dataflow]'``).

Nothing here reaches Google's services: whether the credentials are still valid, the
project exists or the bucket is writable is left to Dataflow.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
from typing import Any

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator

from blogflow.runners import RunnerError

__all__ = [
    "CREDENTIALS_TIMEOUT",
    "DataflowCredentialsMissing",
    "DataflowExtrasMissing",
    "DataflowFlagMissing",
    "DataflowNotReady",
    "check_dataflow",
]

_LOGGER = logging.getLogger(__name__)

#: Seconds the look-up of Application Default Credentials may take, metadata probe included.
CREDENTIALS_TIMEOUT = 8.0
#: Seconds one request to the metadata server may take (google-auth asks up to 3 times).
_METADATA_REQUEST_TIMEOUT = 1.0
#: Modules of ``apache-beam[gcp]`` that DataflowRunner imports to submit and stage a job.
_GCP_MODULES = ("google.cloud.dataflow", "google.cloud.storage", "google.auth")
_INSTALL = "pip install 'blogflow[dataflow]'"
_LOGIN = (
    "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS "
    "to a service account key file"
)
_PROJECT_ID = re.compile(PipelineOptionsValidator.PROJECT_ID_PATTERN)


class DataflowNotReady(RunnerError):
    """``--runner dataflow`` cannot start from here; the message names what to do."""


class DataflowFlagMissing(DataflowNotReady):
    """A flag Dataflow cannot start without is missing or not usable."""


class DataflowCredentialsMissing(DataflowNotReady):
    """No Application Default Credentials were found (in time)."""


class DataflowExtrasMissing(DataflowNotReady):
    """The Google Cloud client libraries of ``apache-beam[gcp]`` are not installed."""


def check_dataflow(options: PipelineOptions, *, timeout: float = CREDENTIALS_TIMEOUT) -> None:
    """Checks that a Dataflow job can be submitted with ``options``, in seconds, offline.

    Args:
        options: the job's options (its runner is Dataflow).
        timeout: seconds the credentials look-up may take.

    Raises:
        DataflowFlagMissing: ``--project``, ``--region`` or a ``gs://`` temp location is
            missing, or the project is not a project ID.
        DataflowCredentialsMissing: no Application Default Credentials.
        DataflowExtrasMissing: ``apache-beam[gcp]``'s libraries are not installed.
    """
    _check_flags(options.view_as(GoogleCloudOptions))
    _check_credentials(timeout)
    missing = [name for name in _GCP_MODULES if not _importable(name)]
    if missing:
        raise DataflowExtrasMissing(
            f"--runner dataflow needs apache-beam's Google Cloud extras, not installed here "
            f"(no module {missing[0]}): {_INSTALL}"
        )


def _check_flags(cloud: GoogleCloudOptions) -> None:
    missing = []
    if not cloud.project:
        missing.append(("--project", "--project=PROJECT_ID"))
    if not cloud.region:
        missing.append(("--region", "--region=REGION (e.g. europe-west1)"))
    locations = {
        "--temp_location": cloud.temp_location,
        "--staging_location": cloud.staging_location,
    }
    if not any(value for value in locations.values()):
        missing.append(("--temp_location", "--temp_location=gs://BUCKET/tmp"))
    if missing:
        names = ", ".join(name for name, _ in missing[:-1])
        names = f"{names} and {missing[-1][0]}" if names else missing[-1][0]
        examples = " ".join(example for _, example in missing)
        raise DataflowFlagMissing(f"--runner dataflow needs {names}: add {examples}")
    if not _PROJECT_ID.fullmatch(cloud.project):
        raise DataflowFlagMissing(
            f"--project {cloud.project!r} is not a Google Cloud project ID (lower-case "
            "letters, digits and dashes, e.g. my-project-123): give the ID, not the name"
        )
    for flag, value in locations.items():
        if value and not value.startswith("gs://"):
            raise DataflowFlagMissing(
                f"{flag} {value!r} is not a Cloud Storage path: give gs://BUCKET/PATH"
            )


def _check_credentials(timeout: float) -> None:
    try:
        import google.auth
        import google.auth.exceptions
    except ImportError:
        return  # said by the extras check that follows
    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    outcome: dict[str, Any] = {}

    def look_up() -> None:
        try:
            outcome["credentials"] = google.auth.default(request=_short_metadata_request())
        except google.auth.exceptions.GoogleAuthError as error:
            outcome["error"] = error
        except Exception as error:  # noqa: BLE001 - any failure to load them, said in one line
            outcome["error"] = error

    auth_logger = logging.getLogger("google.auth")
    level = auth_logger.level
    auth_logger.setLevel(logging.ERROR)  # its "metadata server unavailable" warnings
    try:
        thread = threading.Thread(target=look_up, name="dataflow-credentials", daemon=True)
        thread.start()
        thread.join(timeout)
    finally:
        auth_logger.setLevel(level)
    if "credentials" in outcome:
        return
    if "error" not in outcome:
        raise DataflowCredentialsMissing(
            f"--runner dataflow found no Application Default Credentials in {timeout:g} s "
            f"(no credentials file, and the metadata server did not answer): {_LOGIN}"
        )
    reason = _first_line(outcome["error"])
    if explicit:
        raise DataflowCredentialsMissing(
            f"--runner dataflow cannot load GOOGLE_APPLICATION_CREDENTIALS={explicit} "
            f"({reason}): point it at a service account key file, or unset it and run "
            "`gcloud auth application-default login`"
        )
    raise DataflowCredentialsMissing(
        f"--runner dataflow found no Application Default Credentials: {_LOGIN}"
    )


def _short_metadata_request() -> Any:
    """google-auth's HTTP request with each call's timeout cut to 1 s (None: its own)."""
    try:
        from google.auth.transport.requests import Request
    except ImportError:
        return None
    request = Request()

    def short(*args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        cap = _METADATA_REQUEST_TIMEOUT
        kwargs["timeout"] = cap if timeout is None else min(timeout, cap)
        return request(*args, **kwargs)

    return short


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0].rstrip(".")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
