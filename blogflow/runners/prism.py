"""Prism, Beam's Go portable runner, built once by the project and found at run time.

Beam's ``PrismRunner`` downloads its binary from GitHub unless ``--prism_location`` names
one, and these machines cannot reach GitHub. So ``make runners`` builds Prism from Go's
module proxy, for exactly the installed apache-beam version, into the virtualenv::

    python -m blogflow.runners.prism install   # go install .../go/cmd/prism@v2.77.0
    python -m blogflow.runners.prism path      # the binary --runner prism will use

and :func:`prism_binary` finds it (or the one ``$BLOGFLOW_PRISM`` or ``PATH`` names) for
:func:`blogflow.runners.profiles.configure_runner`, which passes it as
``--prism_location``. Nothing here imports Beam: the Makefile runs it before any job.

:func:`shared_job_server` starts that binary as this process's Prism, in a session of its
own, so the Ctrl-C that stops a streaming job reaches the job (which cancels itself
cleanly) and not Prism under it; it is stopped by its pid when this process exits.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from blogflow.runners import RunnerError
from blogflow.runners._server import free_port, serve

__all__ = [
    "PRISM_ENV",
    "PRISM_PACKAGE",
    "PrismNotFound",
    "install",
    "job_server",
    "shared_job_server",
    "prism_binary",
    "prism_version",
    "project_prism",
]

#: The Go package of Prism's command, in Beam's Go SDK module.
PRISM_PACKAGE = "github.com/apache/beam/sdks/v2/go/cmd/prism"

#: Environment variable naming a Prism binary to use instead of the project's.
PRISM_ENV = "BLOGFLOW_PRISM"

#: Where Go's official archive installs ``go``, often not on a non-login shell's PATH.
_GO_FALLBACK = "/usr/local/go/bin/go"

#: Next to the binary: the Go module version it was built from, e.g. ``v2.77.0``.
_STAMP_NAME = ".prism-version"

_RELEASE = re.compile(r"(\d+\.\d+\.\d+)(?:rc(\d+))?")


_LOGGER = logging.getLogger(__name__)

#: Seconds a started Prism has to accept connections, and to stop once asked.
_START_SECONDS = 30.0


class PrismNotFound(RunnerError):
    """No usable Prism binary, or none can be built; the message says how to get one."""


def prism_version(beam_version: str | None = None) -> str:
    """The Go module version of Prism for an apache-beam version (default: the installed).

    ``2.77.0`` gives ``v2.77.0``, a release candidate ``2.77.0rc2`` gives ``v2.77.0-RC2``.

    Raises:
        PrismNotFound: For a development version, which has no published Prism.
    """
    version = beam_version or importlib.metadata.version("apache-beam")
    match = _RELEASE.fullmatch(version)
    if not match:
        raise PrismNotFound(
            f"apache-beam {version} is not a release, so no Prism can be pinned to it: "
            f"build one from Beam's sources and set {PRISM_ENV} to it"
        )
    release, candidate = match.groups()
    return f"v{release}" + (f"-RC{candidate}" if candidate else "")


def project_prism(bin_dir: Path | None = None) -> Path:
    """Where ``make runners`` puts Prism: the virtualenv's ``bin/prism``."""
    return (bin_dir or Path(sysconfig.get_path("scripts"))) / "prism"


def _built_version(binary: Path) -> str | None:
    try:
        return (binary.parent / _STAMP_NAME).read_text().strip() or None
    except OSError:
        return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def prism_binary() -> Path:
    """The Prism binary ``--runner prism`` uses, without building or downloading anything.

    In this order: ``$BLOGFLOW_PRISM``; the virtualenv's ``bin/prism`` that
    ``make runners`` built, if it was built for the installed apache-beam; ``prism`` on
    ``PATH``.

    Raises:
        PrismNotFound: None of them is there, ``$BLOGFLOW_PRISM`` names no executable,
            or the project's Prism was built for another apache-beam version.
    """
    override = os.environ.get(PRISM_ENV)
    if override:
        path = Path(override).expanduser()
        if not _is_executable(path):
            raise PrismNotFound(f"{PRISM_ENV}={override} is not an executable Prism binary")
        return path
    project = project_prism()
    if _is_executable(project):
        wanted = prism_version()
        built = _built_version(project)
        if built != wanted:
            raise PrismNotFound(
                f"{project} is Prism {built or 'of an unknown version'} but the installed "
                f"apache-beam needs {wanted}: run `make runners`"
            )
        return project
    on_path = shutil.which("prism")
    if on_path:
        return Path(on_path)
    raise PrismNotFound(
        f"Prism is not built: run `make runners` (Go builds {PRISM_PACKAGE}@{prism_version()} "
        f"into {project}), or set {PRISM_ENV} to a Prism binary"
    )


@contextlib.contextmanager
def job_server(binary: Path | str) -> Iterator[str]:
    """Runs Prism's job server for the duration; yields its endpoint, ``localhost:PORT``.

    Prism runs in a session of its own (a terminal's Ctrl-C does not reach it), listens on
    a free loopback port and logs to this module's logger at debug level; it is stopped
    by its pid (SIGTERM, then SIGKILL after 10 s) when the block ends.

    Raises:
        PrismNotFound: Prism did not start or did not listen within 30 s.
    """
    port = free_port()
    command = [str(binary), "--job_port", str(port), "--serve_http=false", "--log_kind=text"]
    with serve(
        command,
        port,
        name="prism",
        logger=_LOGGER,
        error=PrismNotFound,
        start_seconds=_START_SECONDS,
    ) as endpoint:
        yield endpoint


_shared_lock = threading.Lock()
_shared: dict[str, str] = {}


def shared_job_server(binary: Path | str) -> str:
    """The endpoint of this process's Prism job server for ``binary``, started on first use
    (see :func:`job_server`) and stopped when this process exits, as Beam keeps its own.

    Jobs share it; their results (state, metrics) stay readable after they finish.
    """
    key = str(binary)
    with _shared_lock:
        if key not in _shared:
            stack = contextlib.ExitStack()
            _shared[key] = stack.enter_context(job_server(binary))
            atexit.register(stack.close)
        return _shared[key]


def _find_go() -> str:
    found = shutil.which("go")
    if found:
        return found
    if _is_executable(Path(_GO_FALLBACK)):
        return _GO_FALLBACK
    raise PrismNotFound(
        "Go is not installed (no `go` on PATH nor at /usr/local/go/bin/go), and Prism is "
        "built with it: install Go from https://go.dev/dl/ (or `apt-get install golang-go`), "
        "then run `make runners`"
    )


def install(bin_dir: Path | None = None, *, force: bool = False) -> Path:
    """Builds Prism for the installed apache-beam into ``bin_dir``, unless it is there.

    ``go install`` fetches Beam's Go module from the module proxy and compiles it (5-7
    minutes when Go's caches are cold, seconds when warm); the binary replaces the old one
    in one rename, then its version is recorded next to it, so a half-finished build is
    never used.

    Args:
        bin_dir: Where to put ``prism`` (default: the virtualenv's ``bin``).
        force: Build even if a binary of the right version is there.

    Returns:
        The binary's path.

    Raises:
        PrismNotFound: Not in a virtualenv and no ``bin_dir``, no Go, or the build failed.
    """
    if bin_dir is None and sys.prefix == sys.base_prefix:
        raise PrismNotFound(
            "not in a virtualenv, so there is no project bin/ for Prism: run `make runners`"
        )
    target = project_prism(bin_dir)
    version = prism_version()
    if not force and _is_executable(target) and _built_version(target) == version:
        return target
    go = _find_go()
    target.parent.mkdir(parents=True, exist_ok=True)
    package = f"{PRISM_PACKAGE}@{version}"
    print(
        f"building Prism {version} into {target} with `go install` "
        "(5-7 minutes the first time, while Go fetches and compiles Beam's Go SDK)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".prism-build-", dir=target.parent) as gobin:
        env = {**os.environ, "GOBIN": os.path.abspath(gobin)}
        done = subprocess.run([go, "install", package], env=env, check=False)
        built = Path(gobin) / "prism"
        if done.returncode != 0 or not built.is_file():
            raise PrismNotFound(
                f"`go install {package}` failed (exit {done.returncode}): see Go's "
                "messages above, then run `make runners` again"
            )
        os.replace(built, target)
    (target.parent / _STAMP_NAME).write_text(version + "\n")
    print(
        f"built Prism {version}: {target} ({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
        flush=True,
    )
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m blogflow.runners.prism install|path``; an error is one line, exit 1."""
    parser = argparse.ArgumentParser(
        prog="python -m blogflow.runners.prism",
        description="Build Prism for the installed apache-beam, or print the one in use.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("install", help="build Prism into the virtualenv, once")
    build.add_argument(
        "--bin-dir", type=Path, default=None, help="where to put it (default: the venv's bin)"
    )
    build.add_argument("--force", action="store_true", help="build even if it is up to date")
    commands.add_parser("path", help="print the Prism binary --runner prism uses")
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install(args.bin_dir, force=args.force)
        else:
            print(prism_binary())
    except PrismNotFound as error:
        print(f"{parser.prog} {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
