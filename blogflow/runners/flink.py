"""Flink, fetched once by the project and found at run time: Beam's Flink job server and
a Flink distribution for a standalone cluster.

Beam's ``FlinkRunner`` downloads its job server jar from Maven Central at run time unless
``--flink_job_server_jar`` names one. ``make runners`` fetches it once instead::

    python -m blogflow.runners.flink install   # Maven + pip, into <virtualenv>/flink
    python -m blogflow.runners.flink path      # the job server jar --runner flink uses

What these machines are served decides the versions. Beam 2.77's own Flink job server
(``beam-runners-flink-<minor>-job-server:2.77.0``) is not served by Maven Central here,
nor is any ``-job-server`` shadow jar of a recent Beam; the newest Beam whose Flink runner
resolves with all its dependencies is **2.62.0, for Flink 1.19**. So blogflow runs its
pipelines (Python SDK 2.77, in the SDK harness) through the job server of Beam 2.62.0's
Flink 1.19 runner: Maven resolves ``beam-runners-flink-1.19:2.62.0`` and its dependencies
into ``lib/``, and a small jar whose manifest names them (``Class-Path``) and the job
server's main class stands in for the shadow jar, so ``java -jar`` and Beam's own
``--flink_job_server_jar`` both take it. The portable job API between a newer SDK and an
older job server is what blogflow's Flink tests prove, pipeline by pipeline.

The standalone cluster's Flink comes from PyPI: ``apache-flink`` (its ``bin/`` and
``conf/``) and ``apache-flink-libraries`` (``lib/flink-dist``), of the job server's Flink
minor. They are installed with ``pip --target`` and no dependencies into a folder of their
own, never into blogflow's virtualenv: only their Java distribution is used, and PyFlink's
own pins (an old apache-beam) would conflict with blogflow's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from blogflow.runners import RunnerError
from blogflow.runners._server import free_port, serve

__all__ = [
    "FLINK_DIST_VERSION",
    "FLINK_ENV",
    "FLINK_VERSION",
    "JOB_SERVER_BEAM_VERSION",
    "JOB_SERVER_MAIN",
    "FlinkNotFound",
    "cancel_cluster_job",
    "flink_cache",
    "flink_home",
    "install",
    "job_server",
    "job_server_jar",
    "worker_pool",
]

_LOGGER = logging.getLogger(__name__)

#: The Flink minor of the job server (Beam's ``--flink_version``).
FLINK_VERSION = "1.19"
#: The Flink release of the standalone cluster: the newest 1.19 on PyPI.
FLINK_DIST_VERSION = "1.19.3"
#: The Beam release of the job server: the newest whose Flink runner Maven Central serves
#: here with all of its dependencies (2.63 to 2.77 lack ``beam-runners-java-job-service``
#: or the runner itself).
JOB_SERVER_BEAM_VERSION = "2.62.0"
#: The job server's entry point, in ``beam-runners-flink-<minor>``.
JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
#: Environment variable naming the folder of the job server and the Flink distribution,
#: instead of ``<virtualenv>/flink``.
FLINK_ENV = "BLOGFLOW_FLINK"

_RUNNER_ARTIFACT = f"org.apache.beam:beam-runners-flink-{FLINK_VERSION}:{JOB_SERVER_BEAM_VERSION}"
#: The job server's own log binding (the runner brings slf4j-api 1.7.30 only).
_LOG_ARTIFACT = "org.slf4j:slf4j-simple:1.7.30"
_JAR_NAME = f"beam-runners-flink-{FLINK_VERSION}-job-server-{JOB_SERVER_BEAM_VERSION}.jar"
_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>blogflow</groupId>
  <artifactId>flink-job-server</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>{dependencies}</dependencies>
</project>
"""
_DEPENDENCY = (
    "<dependency><groupId>{}</groupId><artifactId>{}</artifactId><version>{}</version></dependency>"
)


class FlinkNotFound(RunnerError):
    """The Flink job server or distribution is not there; the message says how to get it."""


def flink_cache() -> Path:
    """Where ``make runners`` puts Flink: ``$BLOGFLOW_FLINK``, else ``<virtualenv>/flink``."""
    override = os.environ.get(FLINK_ENV)
    return Path(override).expanduser() if override else Path(sysconfig.get_path("data")) / "flink"


def _job_server_dir(cache: Path) -> Path:
    return cache / f"beam-{JOB_SERVER_BEAM_VERSION}-flink-{FLINK_VERSION}-job-server"


def _dist_dir(cache: Path) -> Path:
    return cache / f"flink-{FLINK_DIST_VERSION}"


def job_server_jar(cache: Path | None = None) -> Path:
    """The job server jar ``--runner flink`` uses, without fetching anything.

    Raises:
        FlinkNotFound: ``make runners`` has not fetched it (or its ``lib/`` is gone).
    """
    folder = _job_server_dir(cache or flink_cache())
    jar = folder / _JAR_NAME
    if not jar.is_file() or not (folder / "lib").is_dir():
        raise FlinkNotFound(
            f"no Flink job server at {jar}: run `make runners` (it fetches Beam "
            f"{JOB_SERVER_BEAM_VERSION}'s Flink {FLINK_VERSION} job server with Maven, once)"
        )
    return jar


def flink_home(cache: Path | None = None) -> Path:
    """``FLINK_HOME`` of the standalone cluster's distribution (``bin/``, ``conf/``, ``lib/``).

    Raises:
        FlinkNotFound: ``make runners`` has not installed it.
    """
    home = _dist_dir(cache or flink_cache()) / "pyflink"
    if not (home / "bin" / "jobmanager.sh").is_file() or not any(home.glob("lib/flink-dist*")):
        raise FlinkNotFound(
            f"no Flink {FLINK_DIST_VERSION} distribution at {home}: run `make runners`"
        )
    return home


#: Seconds the job server's JVM has to listen.
_START_SECONDS = 60.0


@contextlib.contextmanager
def job_server(master: str = "[local]", jar: Path | None = None) -> Iterator[str]:
    """Runs the Flink job server for ``master`` (a cluster's REST ``HOST:PORT`` or
    ``[local]``, Flink's embedded cluster) for the duration of the block; yields its
    endpoint, ``localhost:PORT``, for ``--job_endpoint``: jobs that share it skip the JVM
    start Beam's ``FlinkRunner`` makes for each job.

    Raises:
        FlinkNotFound: There is no job server jar, or it did not listen within 60 s.
    """
    jar = jar or job_server_jar()
    java = shutil.which("java")
    if java is None:
        raise FlinkNotFound("java is not on PATH: the Flink job server needs Java 11 or 17")
    port = free_port()
    command = [
        java,
        "-jar",
        str(jar),
        "--flink-master",
        master,
        "--job-port",
        str(port),
        "--artifact-port",
        "0",
        "--expansion-port",
        "0",
    ]
    with serve(
        command,
        port,
        name="flink-job-server",
        logger=_LOGGER,
        error=FlinkNotFound,
        start_seconds=_START_SECONDS,
    ) as endpoint:
        yield endpoint


@contextlib.contextmanager
def worker_pool(env: dict[str, str] | None = None) -> Iterator[str]:
    """Runs a Beam worker pool (``--environment_type=EXTERNAL --environment_config=ENDPOINT``)
    for the duration of the block; yields its endpoint, ``localhost:PORT``.

    The pool starts every SDK harness a TaskManager asks for as a Python process of its
    own (``python`` of this virtualenv): real parallelism, where ``LOOPBACK`` harnesses are
    threads of the launching process. ``env`` is the pool's whole environment (default:
    this process's), so a test can prove the workers need nothing from the launcher's.

    Raises:
        FlinkNotFound: It did not listen within 60 s.
    """
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)
    environment = dict(os.environ if env is None else env)
    environment["PATH"] = f"{bin_dir}:{environment.get('PATH', '/usr/bin:/bin')}"
    command = [
        sys.executable,
        "-m",
        "apache_beam.runners.worker.worker_pool_main",
        f"--service_port={port}",
    ]
    with serve(
        command,
        port,
        name="beam-worker-pool",
        logger=_LOGGER,
        error=FlinkNotFound,
        start_seconds=_START_SECONDS,
        env=environment,
    ) as endpoint:
        yield endpoint


def _rest(master: str, path: str, method: str = "GET", timeout: float = 5.0) -> object:
    base = master if "://" in master else f"http://{master}"
    request = urllib.request.Request(base.rstrip("/") + path, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        body = response.read()
    return json.loads(body) if body else None


def cancel_cluster_job(master: str, job_id: str) -> bool:
    """Cancels, over the cluster's REST API, the Flink job that runs the Beam job ``job_id``.

    Beam's job server stops only its own client when a job on a cluster is cancelled; the
    job itself would go on on the cluster (restarting without its SDK harness, holding its
    slots). Its Flink name is the Beam job id up to the first ``_``.

    Returns:
        Whether a running job of that name was found and cancelled.
    """
    name = job_id.split("_", 1)[0]
    try:
        overview = _rest(master, "/jobs/overview")
        assert isinstance(overview, dict)
        running = [
            job["jid"]
            for job in overview.get("jobs", ())
            if job.get("name") == name and job.get("state") not in _ENDED
        ]
        for jid in running:
            _rest(master, f"/jobs/{jid}?mode=cancel", method="PATCH")
            _LOGGER.info("Cancelled Flink job %s (%s) on %s", jid, name, master)
    except (OSError, ValueError, AssertionError, urllib.error.URLError) as error:
        _LOGGER.warning("Could not cancel the Flink job %s on %s: %s", name, master, error)
        return False
    return bool(running)


#: Flink job states after which there is nothing to cancel.
_ENDED = frozenset({"FINISHED", "CANCELED", "FAILED"})


def _run(command: Sequence[str], what: str, cwd: Path | None = None) -> None:
    _LOGGER.info("%s: %s", what, " ".join(command))
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise FlinkNotFound(f"{what} failed (exit {done.returncode}):\n{tail}")


def _manifest(jars: Sequence[str]) -> bytes:
    """A jar manifest whose ``Class-Path`` names ``jars``: lines are at most 72 bytes,
    continued on lines that start with a space."""

    def folded(line: str) -> bytes:
        raw = line.encode()
        parts = [raw[:72]] + [b" " + raw[i : i + 71] for i in range(72, len(raw), 71)]
        return b"\r\n".join(parts)

    lines = [
        "Manifest-Version: 1.0",
        f"Main-Class: {JOB_SERVER_MAIN}",
        "Class-Path: " + " ".join(jars),
    ]
    return b"\r\n".join(folded(line) for line in lines) + b"\r\n\r\n"


def _install_job_server(folder: Path) -> Path:
    jar = folder / _JAR_NAME
    if jar.is_file() and (folder / "lib").is_dir():
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FlinkNotFound(
            "Maven (mvn) is not on PATH; install it (Debian: apt-get install maven) and run "
            "`make runners` again"
        )
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    dependencies = "".join(
        _DEPENDENCY.format(*artifact.split(":")) for artifact in (_RUNNER_ARTIFACT, _LOG_ARTIFACT)
    )
    (staging / "pom.xml").write_text(_POM.format(dependencies=dependencies))
    print(f"fetching {_RUNNER_ARTIFACT} and its dependencies with Maven", file=sys.stderr)
    _run(
        [mvn, "-q", "-B", "dependency:copy-dependencies", "-DoutputDirectory=lib"],
        "mvn dependency:copy-dependencies",
        cwd=staging,
    )
    jars = sorted(path.name for path in (staging / "lib").glob("*.jar"))
    with zipfile.ZipFile(staging / _JAR_NAME, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", _manifest([f"lib/{name}" for name in jars]))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return jar


def _install_distribution(folder: Path) -> Path:
    try:
        return flink_home(folder.parent)
    except FlinkNotFound:
        pass
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    print(f"installing Flink {FLINK_DIST_VERSION} (apache-flink, pip --target)", file=sys.stderr)
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--target",
            str(staging),
            f"apache-flink=={FLINK_DIST_VERSION}",
            f"apache-flink-libraries=={FLINK_DIST_VERSION}",
        ],
        "pip install apache-flink",
    )
    for script in (staging / "pyflink" / "bin").iterdir():
        script.chmod(0o755)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return flink_home(folder.parent)


def install(cache: Path | None = None) -> tuple[Path, Path]:
    """Fetches the job server and the Flink distribution into ``cache``, unless there.

    Returns:
        The job server jar and ``FLINK_HOME``.

    Raises:
        FlinkNotFound: Maven or pip could not fetch them; the message has their output.
    """
    cache = cache or flink_cache()
    cache.mkdir(parents=True, exist_ok=True)
    jar = _install_job_server(_job_server_dir(cache))
    home = _install_distribution(_dist_dir(cache))
    return jar, home


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m blogflow.runners.flink",
        description="Fetch Beam's Flink job server and a Flink distribution, once, for "
        "--runner flink and `blogflow local up --flink`.",
    )
    parser.add_argument(
        "command",
        choices=("install", "path", "home"),
        help="install: fetch both into the cache (Maven, pip) unless there; path: print the "
        "job server jar; home: print FLINK_HOME of the standalone cluster",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            jar, home = install()
            print(f"Flink job server: {jar}\nFlink {FLINK_DIST_VERSION}: {home}")
        elif args.command == "path":
            print(job_server_jar())
        else:
            print(flink_home())
    except RunnerError as error:
        print(f"blogflow.runners.flink: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
