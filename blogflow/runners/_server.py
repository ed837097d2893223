"""A job server process of blogflow's own (Prism's, Flink's): started on a free loopback
port in a session of its own, its output sent to a logger at debug level, stopped by its
pid. Nothing here imports Beam."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from blogflow.runners import RunnerError

__all__ = ["accepts", "free_port", "serve"]

#: Seconds a stopped server has to exit after SIGTERM, before SIGKILL.
_STOP_SECONDS = 10.0


def free_port() -> int:
    """A loopback port that is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def accepts(port: int) -> bool:
    """Whether something accepts connections on the loopback ``port``."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def _forward(stream: object, logger: logging.Logger, name: str, pid: int) -> None:
    for line in stream:  # type: ignore[attr-defined]
        logger.debug("%s[%d] %s", name, pid, line.rstrip())


@contextlib.contextmanager
def serve(
    command: Sequence[str],
    port: int,
    *,
    name: str,
    logger: logging.Logger,
    error: Callable[[str], RunnerError],
    start_seconds: float,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Runs ``command`` (which listens on ``port``) for the duration of the block; yields
    ``localhost:PORT`` once it accepts connections.

    ``env`` is its environment (default: this process's). It runs in a session of its
    own, so a terminal's Ctrl-C does not reach it; when the block ends it is stopped by
    its pid (SIGTERM, then SIGKILL after 10 s).

    Raises:
        RunnerError: made by ``error``: it exited at start, or did not listen in time.
    """
    process = subprocess.Popen(  # noqa: S603 - our own command line, no shell
        list(command),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
    )
    threading.Thread(
        target=_forward,
        args=(process.stdout, logger, name, process.pid),
        name=f"{name}-log",
        daemon=True,
    ).start()
    try:
        deadline = time.monotonic() + start_seconds
        while not accepts(port):
            if process.poll() is not None:
                raise error(f"{name} ({command[0]}) exited at start with {process.returncode}")
            if time.monotonic() > deadline:
                raise error(f"{name} ({command[0]}) did not listen on port {port} in time")
            time.sleep(0.05)
        logger.info("%s job server on localhost:%d (pid %d)", name, port, process.pid)
        yield f"localhost:{port}"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
