"""The live backup progress page: served over plain HTTP, and watched in a real browser.

The browser is Debian's chromium driven by playwright (no browser download); the
progress comes from a real Beam pipeline through NotifyProgress and the real Redis.
"""

import asyncio
import http.client
import os
import threading
import time
from pathlib import Path

import pytest

from blogflow.io import progress
from blogflow.io import redis as redis_io
from blogflow.notifier.server import Notifier
from blogflow.tokens import sign_user
from blogflow.transforms.backups import progress_message

pytestmark = pytest.mark.integration

KEY = "notifier-page-test-key-" + "k" * 30
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[1] / "artifacts" / "backup-progress.png"
BACKUP = "b-2026-11-21_ab12"


class _NotifierThread:
    """A Notifier on its own asyncio loop in a background thread."""

    def __init__(self, prefix):
        self._prefix = prefix
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._notifier = None

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    def start(self):
        self._thread.start()

        async def start():
            self._notifier = Notifier(prefix=self._prefix, secret_key=KEY)
            return await self._notifier.start(port=0)

        return self._call(start())

    def stop(self):
        try:
            if self._notifier is not None:
                self._call(self._notifier.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)
            self._loop.close()


@pytest.fixture
def notifier_port(local_stack, redis_prefix):
    """The port of a Notifier serving this test's Redis prefix, stopped after the test."""
    server = _NotifierThread(redis_prefix)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium under playwright, for the module."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"chromium is not installed at {CHROMIUM}: run `make system-deps` "
            "(or `apt-get install chromium`) -- the page must be tested in a real browser"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_page(browser):
    """Opens a URL in a fresh browser context; fails the test on script or CSP errors."""
    contexts, problems = [], []

    def open_(url):
        context = browser.new_context(viewport={"width": 900, "height": 700})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        page.on(
            "console",
            lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert problems == []


def page_url(port, token, backup_id=BACKUP):
    return f"http://127.0.0.1:{port}/backups/{backup_id}?token={token}"


def message(backup_id, post_id, done, total, status="committed"):
    return progress_message(backup_id, post_id, status, done, total)


def get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


# -- plain HTTP --------------------------------------------------------------------------


def test_the_page_is_served_as_html_with_security_headers(notifier_port):
    status, headers, body = get(notifier_port, f"/backups/{BACKUP}?token=secret-token")
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert int(headers["Content-Length"]) == len(body)
    policy = dict(
        part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"].startswith("'sha256-") and " " not in policy["script-src"]
    assert policy["style-src"].startswith("'sha256-") and " " not in policy["style-src"]
    host = f"127.0.0.1:{notifier_port}"
    assert policy["connect-src"] == f"'self' ws://{host} wss://{host}"
    assert policy["frame-ancestors"] == "'none'"
    html = body.decode()
    assert 'id="count"' in html and "<progress" in html and "/ws?token=" in html
    assert "secret-token" not in html and BACKUP not in html  # one constant document
    assert "http://" not in html and "https://" not in html and "innerHTML" not in html


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/favicon.ico",
        "/backups",
        "/backups/",
        "/backups/" + "a" * 129,
        "/backups/b1/extra",
        "/backups/b%201",
        "/backups/b.1",
        "/backups/..%2Fhealthz",
        "/ws/",
        "/healthz/",
    ],
)
def test_unknown_paths_and_bad_backup_ids_are_404(notifier_port, path):
    status, headers, body = get(notifier_port, path)
    assert status == 404, path
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_healthz_and_a_plain_get_to_the_websocket_endpoint(notifier_port):
    assert get(notifier_port, "/healthz")[::2] == (200, b"ok\n")
    status, headers, _ = get(notifier_port, "/ws?token=x")
    assert (status, headers["Upgrade"]) == (426, "websocket")
    assert get(notifier_port, "/backups/" + "a" * 128)[0] == 200  # still serving
    assert get(notifier_port, "/healthz")[0] == 200


# -- in the browser ----------------------------------------------------------------------


def run_notify_pipeline(sent, redis_url, prefix):
    """Publishes ``(userId, message)`` in order through NotifyProgress on FnApiRunner."""
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from blogflow.io.notify import NotifyProgress

    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (
            p
            | "Messages" >> beam.Create(sent, reshuffle=False)  # in order, one bundle
            | "Notify" >> NotifyProgress("redis", redis_url=redis_url, prefix=prefix)
        )


def wait_until_registered(user_id, prefix, timeout=10.0):
    """Waits until the notifier has registered a connection of ``user_id`` in Redis."""
    client = redis_io.connect()
    try:
        deadline = time.monotonic() + timeout
        while user_id not in client.hgetall(f"{prefix}notifier:connections").values():
            assert time.monotonic() < deadline, f"no connection of {user_id} registered"
            time.sleep(0.05)
    finally:
        client.close()


def assert_complete(page, expect, post_ids):
    expect(page.locator("#count")).to_have_text(f"{len(post_ids)}/{len(post_ids)} posts backed up")
    expect(page.locator("#posts li")).to_have_count(len(post_ids))
    assert page.locator("#posts li.ok .mark").all_text_contents() == ["✓"] * len(post_ids)
    assert page.locator("#posts li .name").all_text_contents() == post_ids  # in order
    assert page.locator("#bar").evaluate("bar => [bar.value, bar.max]") == [len(post_ids)] * 2
    expect(page.locator("#percent")).to_have_text("100%")
    expect(page.locator("#failed")).to_be_hidden()


def test_the_page_shows_its_backups_progress_live_and_to_late_browsers(
    local_stack, redis_prefix, notifier_port, open_page
):
    from playwright.sync_api import expect

    started = time.monotonic()
    token = sign_user("reader", secret_key=KEY)
    page = open_page(page_url(notifier_port, token))
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page.locator("#count")).to_have_text("Waiting for progress…")
    wait_until_registered("reader", redis_prefix)

    post_ids = [f"post-{n:02d}" for n in range(1, 31)]
    sent = []
    for n, post_id in enumerate(post_ids, start=1):
        status = "unchanged" if n % 7 == 0 else "committed"
        sent.append(("reader", message(BACKUP, post_id, n, 30, status)))
        if n % 10 == 5:  # interleaved: another user's progress of the same backup id ...
            sent.append(("mallory", message(BACKUP, f"mallory-{n}", 31, 31, "failed")))
            # ... and this user's progress of another backup
            sent.append(("reader", message("b-other", f"other-{n}", 99, 99, "failed")))
    run_notify_pipeline(sent, local_stack.env["REDIS_URL"], redis_prefix)

    assert_complete(page, expect, post_ids)
    expect(page.locator("#count")).to_have_class("complete")
    expect(page.locator("#status")).to_have_attribute("data-state", "live")  # no reconnect

    # A browser opened afterwards sees every post at once, from what Redis kept.
    late = open_page(page_url(notifier_port, token))
    assert_complete(late, expect, post_ids)
    assert time.monotonic() - started < 30


def test_a_real_backup_of_30_posts_reaches_30_of_30_in_the_browser(
    local_stack, redis_prefix, notifier_port, open_page, mongo_db, tmp_path, monkeypatch
):
    """The whole path: request → backup pipeline → GitHub stand-in → Redis → notifier →
    chromium."""
    from github import Auth, Github
    from playwright.sync_api import expect

    from blogflow.events import make_event
    from blogflow.io.backups import store_publication
    from blogflow.io.users import link_user
    from blogflow.local.github import GitHubStandIn
    from blogflow.pipelines import backup
    from blogflow.tokens import Secret

    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    github_token = "ghp_page_test_token_0123456789"
    post_ids = [f"p{n:02d}" for n in range(1, 31)]
    store_publication(mongo_db, "pub", "reader")  # only its owner or members may back it up
    mongo_db.posts.insert_many(
        [
            {"_id": post_id, "publicationId": "pub", "slug": f"post {post_id}", "title": post_id}
            for post_id in post_ids
        ]
    )
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(
        make_event(
            "backup_requested", {"backupId": BACKUP, "publicationId": "pub"}, user_id="reader"
        ).to_json()
    )
    with GitHubStandIn() as github:
        client = Github(
            auth=Auth.Token(github_token),
            base_url=github.url,
            retry=None,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )
        repo = client.get_user().create_repo("blog-backup", auto_init=True)
        link_user(mongo_db, "reader", repo.full_name, Secret(github_token))
        page = open_page(page_url(notifier_port, sign_user("reader", secret_key=KEY)))
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        wait_until_registered("reader", redis_prefix)
        backup.run(
            [
                f"--source=file://{requests}",
                f"--mongo-db={mongo_db.name}",
                f"--redis-prefix={redis_prefix}",
                f"--github-api-url={github.url}",
                "--write-interval=0",
                "--posts-per-commit=10",
            ]
        )
        client.close()
    assert_complete(page, expect, post_ids)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_failed_posts_are_marked_and_data_is_shown_as_text(
    local_stack, redis_prefix, notifier_port, open_page
):
    from playwright.sync_api import expect

    nasty = '<img src=x id="injected">'
    client = redis_io.connect()
    try:
        for sent in (
            message("b7", "p1", 1, 3),
            message("b7", nasty, 1, 3, "failed"),
            message("b7", "p3", 2, 3, "unchanged"),
        ):
            progress.publish_progress(client, "writer", sent, redis_prefix)
    finally:
        client.close()
    page = open_page(page_url(notifier_port, sign_user("writer", secret_key=KEY), "b7"))
    expect(page.locator("#count")).to_have_text("2/3 posts backed up")
    expect(page.locator("#posts li")).to_have_count(3)
    expect(page.locator("#failed")).to_have_text("1 post failed")
    assert page.locator("#posts li .name").all_text_contents() == ["p1", nasty, "p3"]
    bad = page.locator("#posts li.bad")
    expect(bad).to_have_count(1)
    expect(bad.locator(".mark")).to_have_text("✗")
    expect(bad.locator(".why")).to_have_text("failed")
    assert page.locator("#injected").count() == 0
    assert page.locator("#bar").evaluate("bar => [bar.value, bar.max]") == [2, 3]


@pytest.mark.parametrize("token", ["forged.token", ""])
def test_a_forged_or_missing_token_shows_not_signed_in(notifier_port, open_page, token):
    from playwright.sync_api import expect

    page = open_page(page_url(notifier_port, token))
    status = page.locator("#status")
    expect(status).to_have_attribute("data-state", "unauthorized")
    expect(status).to_contain_text("Not signed in")
    expect(page.locator("#count")).to_have_text("No progress to show")
    expect(page.locator("#posts li")).to_have_count(0)
