"""Prism set up by the project: the binary ``make runners`` builds, found offline.

Unit tests of :mod:`blogflow.runners.prism` (finding and building the binary, with a fake
``go``), and the summing pipeline run on ``--runner prism`` against the local servers.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import psutil
import pytest
from apache_beam.runners.portability import prism_runner
from apache_beam.runners.runner import PipelineState

from blogflow.io import redis as redis_io
from blogflow.io.sums import redis_key
from blogflow.pipelines import summing
from blogflow.runners import prism
from blogflow.runners.prism import PRISM_ENV, PRISM_PACKAGE, PrismNotFound
from blogflow.transforms.summing import split_array

BEAM_PRISM = prism.prism_version()


def executable(path: Path, text: str = "#!/bin/sh\nexit 0\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def venv_bin(tmp_path, monkeypatch):
    """An empty stand-in for the virtualenv's bin/, no override, nothing on PATH."""
    bin_dir = tmp_path / "venv-bin"
    bin_dir.mkdir()
    monkeypatch.setattr(prism, "project_prism", lambda bin_dir_=None: bin_dir / "prism")
    monkeypatch.delenv(PRISM_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    return bin_dir


def test_the_pinned_version_is_the_installed_apache_beam():
    import apache_beam

    assert BEAM_PRISM == f"v{apache_beam.__version__}"
    assert prism.prism_version("2.77.0") == "v2.77.0"
    assert prism.prism_version("2.78.0rc2") == "v2.78.0-RC2"
    with pytest.raises(PrismNotFound, match=f"not a release.*{PRISM_ENV}"):
        prism.prism_version("2.78.0.dev0")


def test_the_project_binary_is_used_when_built_for_this_beam(venv_bin, tmp_path, monkeypatch):
    binary = executable(venv_bin / "prism")
    (venv_bin / ".prism-version").write_text(BEAM_PRISM + "\n")
    executable(tmp_path / "elsewhere" / "prism")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    assert prism.prism_binary() == binary


def test_the_override_wins_and_must_be_executable(venv_bin, tmp_path, monkeypatch):
    executable(venv_bin / "prism")
    (venv_bin / ".prism-version").write_text(BEAM_PRISM)
    mine = executable(tmp_path / "my-prism")
    monkeypatch.setenv(PRISM_ENV, str(mine))
    assert prism.prism_binary() == mine
    monkeypatch.setenv(PRISM_ENV, str(tmp_path / "nope"))
    with pytest.raises(PrismNotFound, match=f"^{PRISM_ENV}=.*nope is not an executable"):
        prism.prism_binary()


def test_a_binary_of_another_beam_version_is_refused(venv_bin):
    executable(venv_bin / "prism")
    (venv_bin / ".prism-version").write_text("v2.60.0\n")
    with pytest.raises(PrismNotFound, match=r"is Prism v2\.60\.0 .* run `make runners`$"):
        prism.prism_binary()
    (venv_bin / ".prism-version").unlink()
    with pytest.raises(PrismNotFound, match="unknown version"):
        prism.prism_binary()


def test_prism_on_path_is_the_last_resort(venv_bin, tmp_path, monkeypatch):
    on_path = executable(tmp_path / "tools" / "prism")
    monkeypatch.setenv("PATH", str(tmp_path / "tools"))
    assert prism.prism_binary() == on_path


def test_no_binary_is_one_line_naming_make_runners(venv_bin):
    with pytest.raises(PrismNotFound) as raised:
        prism.prism_binary()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Prism is not built: run `make runners`")
    assert f"{PRISM_PACKAGE}@{BEAM_PRISM}" in message


@pytest.fixture
def fake_go(tmp_path, monkeypatch):
    """A ``go`` on PATH that logs its arguments and "builds" a script into $GOBIN."""
    log = tmp_path / "go.log"
    tools = tmp_path / "go-bin"
    executable(
        tools / "go",
        f'#!/bin/sh\necho "$@" >> {log}\n[ -n "$FAIL" ] && exit 3\n'
        'printf "#!/bin/sh\\necho prism\\n" > "$GOBIN/prism"\nchmod +x "$GOBIN/prism"\n',
    )
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setattr(prism, "_GO_FALLBACK", str(tmp_path / "no-go"))
    return log


def test_install_builds_the_pinned_version_once(fake_go, tmp_path):
    bin_dir = tmp_path / "bin"
    assert prism.install(bin_dir) == bin_dir / "prism"
    assert os.access(bin_dir / "prism", os.X_OK)
    assert (bin_dir / ".prism-version").read_text() == BEAM_PRISM + "\n"
    assert fake_go.read_text().splitlines() == [f"install {PRISM_PACKAGE}@{BEAM_PRISM}"]
    prism.install(bin_dir)  # up to date: no second build
    assert len(fake_go.read_text().splitlines()) == 1
    (bin_dir / ".prism-version").write_text("v2.60.0\n")
    prism.install(bin_dir)  # another Beam: built again
    assert len(fake_go.read_text().splitlines()) == 2
    assert {path.name for path in bin_dir.iterdir()} == {"prism", ".prism-version"}


def test_a_failed_build_leaves_nothing_half_written(fake_go, tmp_path, monkeypatch):
    monkeypatch.setenv("FAIL", "1")
    bin_dir = tmp_path / "bin"
    with pytest.raises(PrismNotFound, match=r"`go install .*` failed \(exit 3\)"):
        prism.install(bin_dir)
    assert list(bin_dir.iterdir()) == []


def test_without_go_make_runners_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setattr(prism, "_GO_FALLBACK", str(tmp_path / "no-go"))
    assert prism.main(["install", "--bin-dir", str(tmp_path / "bin")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "Go is not installed" in err and "https://go.dev/dl/" in err


# -- the real thing: the project's Prism runs the summing job, offline ----------------------


def project_prism_or_fail() -> Path:
    """The binary `make runners` built; a missing one fails the test with how to build it."""
    try:
        binary = prism.prism_binary()
    except PrismNotFound as error:
        pytest.fail(str(error))
    assert binary == prism.project_prism(), f"expected the project's Prism, not {binary}"
    return binary


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_summing_from_an_archive_on_the_projects_prism(
    mongo_db, redis_prefix, tmp_path, monkeypatch
):
    monkeypatch.delenv(PRISM_ENV, raising=False)
    binary = project_prism_or_fail()

    def no_download(url, *args, **kwargs):
        raise AssertionError(f"Beam tried to download Prism from {url}")

    monkeypatch.setattr(prism_runner, "urlopen", no_download)
    arrays = {}
    lines = []
    for values in ([3, 1, 4, 1, 5], [2**31 - 1] * 7, [-(2**31)] * 3 + [17], list(range(200))):
        array_id, events = split_array(values)
        arrays[array_id] = 2 * sum(values)
        lines += [event.to_json() for event in events]
    half = len(lines) // 2
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines[:half]) + b"\n")
    # the second file repeats some packets of the first: they must count once
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(lines[half:] + lines[:9] + [b"{oops"]) + b"\n")

    result = summing.run(
        [
            f"--source=file://{tmp_path}/*.jsonl",
            "--runner=prism",
            f"--mongo-db={mongo_db.name}",
            f"--redis-prefix={redis_prefix}",
        ]
    )

    assert result.state == PipelineState.DONE
    stored = {doc["_id"]: (doc["sum"], doc["status"]) for doc in mongo_db.sums.find()}
    assert stored == {array_id: (total, "complete") for array_id, total in arrays.items()}
    client = redis_io.connect()
    for array_id, total in arrays.items():
        assert client.hget(redis_key(array_id, redis_prefix), "sum") == str(total)
    assert [letter["payload"] for letter in mongo_db.deadletters.find()] == ["{oops"]
    # ...and the Prism that ran it is the project's binary, a child of this process
    running = {Path(child.exe()) for child in psutil.Process().children(recursive=True)}
    assert binary.resolve() in running, (binary, running, sys.executable)
