"""``blogflow demo`` end to end, in a subprocess with a stack of its own."""

import os
import re
import subprocess
import sys
import urllib.request

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_prints_right_sums_a_feed_and_a_backup_with_its_page(tmp_path):
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
        pages = re.findall(r"progress page \(valid for an hour\): (\S+)", done.stdout)
        if pages:  # served by the stack's notifier while it still runs
            with urllib.request.urlopen(pages[0], timeout=5) as response:  # noqa: S310
                page = (response.status, response.headers["Content-Type"])
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
    assert re.search(r"backup backup-\w+: done, 6/6 posts backed up, 0 failed", done.stdout)
    assert done.stdout.count("  committed ") == 6
    assert len(pages) == 1 and "/backups/backup-" in pages[0] and "?token=" in pages[0]
    assert page[0] == 200 and page[1].startswith("text/html")
