"""``blogflow demo`` end to end, in a subprocess with a stack of its own."""

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_prints_right_sums_and_a_feed(tmp_path):
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "MONGODB_URI"}}
    code = (
        "from blogflow.local.demo import run_demo; "
        f"raise SystemExit(0 if run_demo(print, {str(state)!r}) else 1)"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "blogflow.cli", "local", "down", "--state-dir", str(state)],
            env=env,
            capture_output=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("expected 28 OK") == 1 and "expected 200 OK" in done.stdout
    assert "feed of demo-reader" in done.stdout
    ranked = [
        line for line in done.stdout.splitlines() if line.startswith("  ") and ". post-" in line
    ]
    assert len(ranked) == 6
