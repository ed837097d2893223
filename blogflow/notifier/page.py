"""The live backup progress page the notifier serves at ``/backups/<backupId>``.

One self-contained HTML document (inline CSS and plain JavaScript, nothing fetched from
anywhere else). The document is the same for every backup and every user: the script
reads the backup id from its own path and the token from its own query string
(``/backups/b-42?token=...``), opens ``ws(s)://<same host>/ws?token=...`` and shows only
the messages of that backup:

* ``backup_progress`` (live, and the latest one at connect): the count ``k/N posts
  backed up`` (``k`` never goes down: the largest ``done`` seen), the bar, and a ✓ for a
  committed or unchanged post, a ✗ and its status for a failed one;
* ``backup_posts`` (at connect, :func:`blogflow.io.progress.replay`): the last status of
  the backup's other posts, so a page opened late still lists every post.

A dropped socket is reopened with exponential backoff (1 s doubling to 30 s, jittered);
close code 4401 (missing, forged or expired token) shows "not signed in" and stops.
Data only ever reaches the page through ``textContent``.

Because the document is constant, its Content-Security-Policy allows exactly its own
inline style and script by hash (:func:`content_security_policy`), and nothing else but
the WebSocket connection.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable

__all__ = ["BACKUP_ID_PATTERN", "PAGE_HTML", "content_security_policy"]

#: The backup ids the page is served for (anything else is a 404).
BACKUP_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")

_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --muted: #6e7781;
  --line: #d0d7de; --chip: #f6f8fa; }
@media (prefers-color-scheme: dark) { :root { --ok: #3fb950; --bad: #f85149;
  --muted: #8b949e; --line: #30363d; --chip: #161b22; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 44rem; margin: 2.5rem auto; padding: 0 1.25rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
#backup { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; color: var(--muted);
  margin: 0 0 1.5rem; overflow-wrap: anywhere; }
#count { font-size: 1.35rem; font-weight: 600; margin: 0 0 .5rem; }
#count.complete { color: var(--ok); }
.bar { display: flex; align-items: center; gap: .75rem; }
progress { flex: 1; height: 1.1rem; accent-color: var(--ok); }
#percent { min-width: 3.5rem; text-align: right; font-variant-numeric: tabular-nums; }
#failed { color: var(--bad); font-weight: 600; margin: .5rem 0 0; }
#posts { list-style: none; padding: 0; margin: 1.5rem 0; display: grid; gap: .4rem;
  grid-template-columns: repeat(auto-fill, minmax(8.5rem, 1fr)); align-items: start; }
#posts li { border: 1px solid var(--line); background: var(--chip); border-radius: .4rem;
  padding: .2rem .5rem; font-size: .9rem; overflow-wrap: anywhere; }
#posts .mark { font-weight: 700; margin-right: .35rem; }
#posts li.ok .mark { color: var(--ok); }
#posts li.bad { border-color: var(--bad); color: var(--bad); }
#posts .why:not(:empty)::before { content: " ("; }
#posts .why:not(:empty)::after { content: ")"; }
#status { color: var(--muted); font-size: .9rem; border-top: 1px solid var(--line);
  padding-top: .75rem; }
#status::before { content: "\\25CF\\00A0"; }
#status[data-state="live"]::before { color: var(--ok); }
#status[data-state="offline"]::before, #status[data-state="unauthorized"]::before {
  color: var(--bad); }
#status[data-state="unauthorized"] { color: var(--bad); font-weight: 600; }
"""

_SCRIPT = """
"use strict";
(function () {
  var UNAUTHORIZED = 4401;
  var OK = new Set(["committed", "unchanged"]);
  var byId = function (id) { return document.getElementById(id); };
  var backupId = "";
  try { backupId = decodeURIComponent(location.pathname.split("/")[2] || ""); } catch (e) {}
  var token = new URLSearchParams(location.search).get("token") || "";
  var done = 0, total = 0;
  var statuses = new Map();  // postId -> status
  var items = new Map();  // postId -> <li>
  var liveThisConnection = new Set();
  var retries = 0, openedAt = 0;

  byId("backup").textContent = "Backup " + backupId;

  function setStatus(text, state) {
    var el = byId("status");
    el.textContent = text;
    el.dataset.state = state;
  }

  // The list is kept in the order posts were backed up, whatever order the messages come
  // in (at connect, the latest message comes first): by "done", and a failed post (which
  // leaves "done" as it was) after the post that made it so.
  function setPost(postId, status, done) {
    var order = 2 * done + (OK.has(status) ? 0 : 1);
    var li = items.get(postId);
    if (!li) {
      li = document.createElement("li");
      li.dataset.order = String(order);
      items.set(postId, li);
      var list = byId("posts"), next = null;
      for (var el = list.lastElementChild; el && Number(el.dataset.order) > order;
           el = el.previousElementSibling) {
        next = el;
      }
      list.insertBefore(li, next);
    }
    statuses.set(postId, status);
    var ok = OK.has(status);
    li.className = ok ? "ok" : "bad";
    li.dataset.status = status;
    li.replaceChildren(
      span("mark", ok ? "\\u2713" : "\\u2717"),
      span("name", postId),
      span("why", ok ? "" : status));
  }

  function span(className, text) {
    var el = document.createElement("span");
    el.className = className;
    el.textContent = text;
    return el;
  }

  function render() {
    var failed = 0;
    statuses.forEach(function (status) { if (status === "failed") failed += 1; });
    var count = byId("count"), bar = byId("bar"), shown = Math.min(done, total);
    count.textContent = total > 0 ? shown + "/" + total + " posts backed up"
                                  : "Waiting for progress\\u2026";
    count.classList.toggle("complete", total > 0 && shown === total);
    bar.max = Math.max(total, 1);
    bar.value = shown;
    byId("percent").textContent = total > 0 ? Math.floor(100 * shown / total) + "%" : "";
    byId("failed").textContent = failed === 1 ? "1 post failed" : failed + " posts failed";
    byId("failed").hidden = failed === 0;
  }

  function isCount(n) { return typeof n === "number" && Number.isFinite(n) && n >= 0; }

  function onMessage(event) {
    var m;
    try { m = JSON.parse(event.data); } catch (e) { return; }
    if (!m || typeof m !== "object" || m.backupId !== backupId) return;
    if (m.type === "backup_progress") {
      if (m.postId !== undefined && m.postId !== null) {
        setPost(String(m.postId), String(m.status), isCount(m.done) ? m.done : 0);
        liveThisConnection.add(String(m.postId));
      }
      if (isCount(m.total)) total = m.total;
      if (isCount(m.done)) done = Math.max(done, m.done);
    } else if (m.type === "backup_posts" && Array.isArray(m.posts)) {
      m.posts.forEach(function (p) {
        if (!p || p.postId === undefined || p.postId === null) return;
        var postId = String(p.postId);
        if (!liveThisConnection.has(postId)) {
          setPost(postId, String(p.status), isCount(p.done) ? p.done : 0);
        }
      });
    } else {
      return;
    }
    render();
  }

  function signedOut() {
    if (total === 0) byId("count").textContent = "No progress to show";
    setStatus("Not signed in, or this link has expired: open the backup page from the "
              + "site again.", "unauthorized");
  }

  function connect() {
    setStatus("Connecting\\u2026", "connecting");
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var socket;
    try {
      socket = new WebSocket(scheme + "//" + location.host + "/ws?token="
                             + encodeURIComponent(token));
    } catch (e) {
      return retry();
    }
    socket.onopen = function () {
      openedAt = Date.now();
      liveThisConnection = new Set();
      setStatus("Connected: updates are live", "live");
    };
    socket.onmessage = onMessage;
    socket.onclose = function (event) {
      if (event.code === UNAUTHORIZED) return signedOut();
      if (openedAt && Date.now() - openedAt > 10000) retries = 0;  // it was a good one
      openedAt = 0;
      retry();
    };
  }

  function retry() {
    var delay = Math.min(30000, 1000 * Math.pow(2, retries)) * (0.5 + Math.random() / 2);
    retries += 1;
    setStatus("Disconnected: reconnecting in " + Math.ceil(delay / 1000) + " s\\u2026",
              "offline");
    setTimeout(connect, delay);
  }

  render();
  if (token) connect(); else signedOut();
})();
"""

#: The page, as served (UTF-8).
PAGE_HTML = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Backup progress</title>
<style>"""
    + _STYLE
    + """</style>
</head>
<body>
<main>
<h1>Backing up your posts</h1>
<p id="backup"></p>
<p id="count" aria-live="polite"></p>
<div class="bar"><progress id="bar" max="1" value="0"></progress><span id="percent"></span></div>
<p id="failed" hidden></p>
<ul id="posts" aria-label="Posts"></ul>
<p id="status" role="status" data-state="connecting">Connecting\u2026</p>
</main>
<script>"""
    + _SCRIPT
    + """</script>
</body>
</html>
"""
).encode()


def _hash_source(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def content_security_policy(connect_sources: Iterable[str] = ()) -> str:
    """The page's Content-Security-Policy: its own inline style and script (by hash), the
    WebSocket connection to ``'self'`` and to ``connect_sources`` (e.g.
    ``ws://host:port``), and nothing else."""
    connect = " ".join(["'self'", *connect_sources])
    return (
        "default-src 'none'; "
        f"style-src {_hash_source(_STYLE)}; "
        f"script-src {_hash_source(_SCRIPT)}; "
        f"connect-src {connect}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
