"""A GitHub REST API stand-in that PyGithub can talk to, with git-exact object SHAs.

It keeps users, repositories and git objects in memory and serves the routes the backup
pipeline needs: ``/user``, ``/user/repos``, ``/repos/{o}/{r}``, the contents API and the
Git Data API (refs, commits, trees, blobs). It answers as GitHub does where it matters:
401 for a missing or revoked token, 404 for someone else's repository, 409 for a stale
content ``sha``, 422 for a ref update that is not a fast forward, and 403 with a
``retry-after`` header past the secondary rate limit on content-creating requests.

Admin routes for tests (no token needed)::

    GET  /_admin/requests   the request log: [{method, path, status, token_login}]
    POST /_admin/reset      forget repositories, revoked tokens, the log and rate windows
    POST /_admin/revoke     {"token": T}: T gets 401 from now on
    POST /_admin/users      {"token": T, "login": L}: T authenticates as L
    POST /_admin/config     {"rate_limit_per_minute": N, "fail_next": [{"status": 502}]}

``fail_next`` replaces the queue of injected faults. Each is ``{"status", "message",
"headers", "method", "path", "skip", "after"}``, all but ``status`` optional: a request
takes the first fault it matches (``method`` equal, ``path`` a regular expression found
in the request's path; both match anything when absent), which is then used up, unless
its ``skip`` is still above 0: then the request passes and ``skip`` counts down. The
request is answered with the fault's status, message and headers instead of being
served; with ``"after": true`` it is served first and its answer replaced, like a lost
response (the write happened, the client sees the failure). For example ``{"status":
422, "method": "POST", "path": "/git/trees$", "skip": 2}`` fails the third tree creation
from now, ``{"status": 403, "message": "secondary rate limit", "headers":
{"retry-after": "1"}}`` throttles the next request.

Run it with ``python -m blogflow.local.github --host 127.0.0.1 --port 8080``, or in a
thread with `GitHubStandIn`::

    with GitHubStandIn() as server:
        gh = github.Github(auth=github.Auth.Token("t"), base_url=server.url)
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import math
import re
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = [
    "DEFAULT_RATE_LIMIT_PER_MINUTE",
    "GitHubStandIn",
    "blob_sha",
    "commit_object",
    "git_object_sha",
    "login_for_token",
    "main",
    "tree_object",
]

_LOGGER = logging.getLogger(__name__)

DEFAULT_RATE_LIMIT_PER_MINUTE = 80
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_TREE_MODE = "40000"
_BLOB_MODE = "100644"


# --------------------------------------------------------------------------- git objects


def git_object_sha(kind: str, body: bytes) -> str:
    """Returns the git SHA-1 of an object of `kind` ("blob", "tree", "commit")."""
    return hashlib.sha1(b"%s %d\0" % (kind.encode(), len(body)) + body).hexdigest()


def blob_sha(data: bytes) -> str:
    """Returns the git SHA-1 of a blob, as ``git hash-object`` prints it."""
    return git_object_sha("blob", data)


def tree_object(entries: list[tuple[str, str, str]]) -> bytes:
    """Serialises tree entries ``(mode, name, sha)`` exactly as git does.

    Entries are sorted git's way: by name, a subtree's name compared as if it ended
    in ``/``; a subtree's mode is ``40000``.
    """

    def key(entry: tuple[str, str, str]) -> bytes:
        mode, name, _ = entry
        return name.encode() + (b"/" if mode == _TREE_MODE else b"")

    return b"".join(
        f"{mode} {name}".encode() + b"\0" + bytes.fromhex(sha)
        for mode, name, sha in sorted(entries, key=key)
    )


def commit_object(
    tree: str, parents: list[str], author: str, committer: str, message: str
) -> bytes:
    """Serialises a commit as git does; `author`/`committer` are ``Name <email> ts +0000``."""
    lines = [f"tree {tree}"] + [f"parent {parent}" for parent in parents]
    lines += [f"author {author}", f"committer {committer}"]
    return ("\n".join(lines) + "\n\n" + message).encode()


def login_for_token(token: str) -> str:
    """Returns the login a token authenticates as unless one was registered for it."""
    return "user-" + hashlib.sha256(token.encode()).hexdigest()[:8]


# --------------------------------------------------------------------------- state


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class _Commit:
    tree: str
    parents: list[str]
    author: dict[str, str]
    committer: dict[str, str]
    message: str


@dataclass
class _Repo:
    id: int
    owner: str
    name: str
    private: bool
    refs: dict[str, str] = field(default_factory=dict)  # "heads/main" -> commit sha
    blobs: dict[str, bytes] = field(default_factory=dict)
    trees: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)
    commits: dict[str, _Commit] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put_blob(self, data: bytes) -> str:
        sha = blob_sha(data)
        self.blobs[sha] = data
        return sha

    def put_tree(self, entries: list[tuple[str, str, str]]) -> str:
        sha = git_object_sha("tree", tree_object(entries))
        self.trees[sha] = list(entries)
        return sha

    def put_commit(self, commit: _Commit) -> str:
        def sig(person: dict[str, str]) -> str:
            return f"{person['name']} <{person['email']}> {person['_ts']} +0000"

        body = commit_object(
            commit.tree, commit.parents, sig(commit.author), sig(commit.committer), commit.message
        )
        sha = git_object_sha("commit", body)
        self.commits[sha] = commit
        return sha

    def flatten(self, tree_sha: str, prefix: str = "") -> dict[str, tuple[str, str]]:
        """Returns ``{path: (mode, blob sha)}`` for every blob under a tree."""
        files: dict[str, tuple[str, str]] = {}
        for mode, name, sha in self.trees[tree_sha]:
            if mode == _TREE_MODE:
                files.update(self.flatten(sha, f"{prefix}{name}/"))
            else:
                files[f"{prefix}{name}"] = (mode, sha)
        return files

    def build(self, files: dict[str, tuple[str, str]]) -> str:
        """Writes nested tree objects for ``{path: (mode, sha)}`` and returns the root."""
        direct: list[tuple[str, str, str]] = []
        children: dict[str, dict[str, tuple[str, str]]] = {}
        for path, (mode, sha) in files.items():
            head, sep, rest = path.partition("/")
            if sep:
                children.setdefault(head, {})[rest] = (mode, sha)
            else:
                direct.append((mode, head, sha))
        for name, sub in children.items():
            direct.append((_TREE_MODE, name, self.build(sub)))
        return self.put_tree(direct)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        seen: set[str] = set()
        todo = [descendant]
        while todo:
            sha = todo.pop()
            if sha == ancestor:
                return True
            if sha in seen or sha not in self.commits:
                continue
            seen.add(sha)
            todo.extend(self.commits[sha].parents)
        return False


class _State:
    def __init__(self, rate_limit_per_minute: int) -> None:
        self.lock = threading.Lock()
        self.rate_limit_per_minute = rate_limit_per_minute
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.repos: dict[tuple[str, str], _Repo] = {}
            self.logins: dict[str, str] = {}
            self.user_ids: dict[str, int] = {}
            self.revoked: set[str] = set()
            self.windows: dict[str, deque[float]] = {}
            self.fail_next: list[dict[str, Any]] = []
            self.log: list[dict[str, Any]] = []
            self.next_id = 1

    def new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def user(self, login: str) -> dict[str, Any]:
        with self.lock:
            if login not in self.user_ids:
                self.next_id += 1
                self.user_ids[login] = self.next_id
            return {"login": login, "id": self.user_ids[login], "type": "User"}


def _fault_error(fault: dict[str, Any]) -> _HTTPError:
    headers = {str(k): str(v) for k, v in (fault.get("headers") or {}).items()}
    return _HTTPError(
        int(fault.get("status", 502)), str(fault.get("message", "Server Error")), headers
    )


# --------------------------------------------------------------------------- handler


_Route = tuple[str, re.Pattern[str], str]
_REPO = r"/repos/(?P<owner>[^/]+)/(?P<repo>[^/]+)"
_ROUTES: list[_Route] = [
    ("GET", re.compile(r"/user"), "get_user"),
    ("POST", re.compile(r"/user/repos"), "create_repo"),
    ("GET", re.compile(_REPO), "get_repo"),
    ("GET", re.compile(_REPO + r"/contents/(?P<path>.*)"), "get_contents"),
    ("PUT", re.compile(_REPO + r"/contents/(?P<path>.+)"), "put_contents"),
    ("GET", re.compile(_REPO + r"/git/refs?/(?P<ref>heads/.+)"), "get_ref"),
    ("PATCH", re.compile(_REPO + r"/git/refs/(?P<ref>heads/.+)"), "update_ref"),
    ("POST", re.compile(_REPO + r"/git/refs"), "create_ref"),
    ("GET", re.compile(_REPO + r"/git/commits/(?P<sha>[0-9a-f]{40})"), "get_commit"),
    ("POST", re.compile(_REPO + r"/git/commits"), "create_commit"),
    ("GET", re.compile(_REPO + r"/git/trees/(?P<sha>[0-9a-f]{40})"), "get_tree"),
    ("POST", re.compile(_REPO + r"/git/trees"), "create_tree"),
    ("GET", re.compile(_REPO + r"/git/blobs/(?P<sha>[0-9a-f]{40})"), "get_blob"),
    ("POST", re.compile(_REPO + r"/git/blobs"), "create_blob"),
]


def _now() -> tuple[int, str]:
    ts = int(time.time())
    return ts, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib name)
        _LOGGER.debug("%s " + format, self.address_string(), *args)

    # ---- plumbing

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    @property
    def state(self) -> _State:
        return self.server.state

    def _base(self) -> str:
        host = self.headers.get("Host")
        if not host:
            address, port = self.server.server_address[:2]
            host = f"{address!s}:{port}"
        return f"http://{host}"

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        path = parsed.path.rstrip("/") or "/"
        self.query = urllib.parse.parse_qs(parsed.query)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path.startswith("/_admin/") or path == "/":
            self._admin(path, raw)
            return
        login: str | None = None
        try:
            try:
                self.body = json.loads(raw) if raw else {}
            except ValueError as error:
                raise _HTTPError(400, "Problems parsing JSON") from error
            token = self._token()
            login = self._authenticate(token)
            fault = self._fault(path)
            if fault is not None and not fault.get("after"):
                raise _fault_error(fault)
            if self.command in _WRITE_METHODS:
                self._rate_limit(token)
            status, body = self._route(path, login)
            if fault is not None:
                raise _fault_error(fault)  # served, yet the client sees the fault
            headers = None
        except _HTTPError as error:
            status = error.status
            body = {"message": error.message, "documentation_url": "https://docs.github.com"}
            headers = error.headers
        # logged before the reply is sent, so a client that has its answer finds it in the log
        with self.state.lock:
            self.state.log.append(
                {
                    "method": self.command,
                    "path": path,
                    "status": status,
                    "token_login": login,
                    "at": time.time(),
                }
            )
        self._send(status, body, headers)

    def _token(self) -> str | None:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip():
            return value.strip()
        return None

    def _authenticate(self, token: str | None) -> str:
        if token is None or token in self.state.revoked:
            raise _HTTPError(401, "Bad credentials")
        return self.state.logins.get(token) or login_for_token(token)

    def _fault(self, path: str) -> dict[str, Any] | None:
        """Takes the first injected fault this request matches off the queue."""
        with self.state.lock:
            for n, fault in enumerate(self.state.fail_next):
                if fault.get("method", self.command).upper() != self.command:
                    continue
                if "path" in fault and not re.search(str(fault["path"]), path):
                    continue
                if int(fault.get("skip") or 0) > 0:
                    fault["skip"] = int(fault["skip"]) - 1
                    return None
                return self.state.fail_next.pop(n)
        return None

    def _rate_limit(self, token: str | None) -> None:
        now = time.monotonic()
        with self.state.lock:
            window = self.state.windows.setdefault(token or "", deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.state.rate_limit_per_minute:
                retry = max(1, math.ceil(window[0] + 60 - now)) if window else 60
                raise _HTTPError(
                    403,
                    "You have exceeded a secondary rate limit. Please wait a few minutes "
                    "before you try again.",
                    {"retry-after": str(retry)},
                )
            window.append(now)

    def _route(self, path: str, login: str) -> tuple[int, Any]:
        allowed = False
        for method, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            allowed = True
            if method == self.command:
                handler: Callable[..., tuple[int, Any]] = getattr(self, f"_{name}")
                return handler(login, **match.groupdict())
        raise _HTTPError(405 if allowed else 404, "Not Found")

    def _admin(self, path: str, raw: bytes) -> None:
        state = self.state
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._send(400, {"message": "Problems parsing JSON"})
            return
        if path == "/" and self.command == "GET":
            self._send(200, {"current_user_url": f"{self._base()}/user"})
        elif path == "/_admin/requests" and self.command == "GET":
            with state.lock:
                self._send(200, list(state.log))
        elif path == "/_admin/reset" and self.command == "POST":
            state.reset()
            self._send(200, {"ok": True})
        elif path == "/_admin/revoke" and self.command == "POST":
            with state.lock:
                state.revoked.add(str(body["token"]))
            self._send(200, {"ok": True})
        elif path == "/_admin/users" and self.command == "POST":
            with state.lock:
                state.logins[str(body["token"])] = str(body["login"])
            self._send(200, {"ok": True})
        elif path == "/_admin/config" and self.command == "POST":
            with state.lock:
                if "rate_limit_per_minute" in body:
                    state.rate_limit_per_minute = int(body["rate_limit_per_minute"])
                    state.windows.clear()
                if "fail_next" in body:
                    state.fail_next = [dict(fault) for fault in body["fail_next"]]
                config = {
                    "rate_limit_per_minute": state.rate_limit_per_minute,
                    "fail_next": list(state.fail_next),
                }
            self._send(200, config)
        else:
            self._send(404, {"message": "Not Found"})

    # ---- JSON shapes

    def _repo_url(self, repo: _Repo) -> str:
        return f"{self._base()}/repos/{repo.owner}/{repo.name}"

    def _repo_json(self, repo: _Repo) -> dict[str, Any]:
        url = self._repo_url(repo)
        return {
            "id": repo.id,
            "name": repo.name,
            "full_name": f"{repo.owner}/{repo.name}",
            "owner": self.state.user(repo.owner),
            "private": repo.private,
            "url": url,
            "html_url": url,
            "default_branch": "main",
        }

    def _commit_json(self, repo: _Repo, sha: str) -> dict[str, Any]:
        commit = repo.commits[sha]
        url = self._repo_url(repo)

        def person(p: dict[str, str]) -> dict[str, str]:
            return {key: value for key, value in p.items() if not key.startswith("_")}

        return {
            "sha": sha,
            "url": f"{url}/git/commits/{sha}",
            "html_url": f"{url}/commit/{sha}",
            "message": commit.message,
            "author": person(commit.author),
            "committer": person(commit.committer),
            "tree": {"sha": commit.tree, "url": f"{url}/git/trees/{commit.tree}"},
            "parents": [{"sha": p, "url": f"{url}/git/commits/{p}"} for p in commit.parents],
        }

    def _ref_json(self, repo: _Repo, ref: str) -> dict[str, Any]:
        url = self._repo_url(repo)
        sha = repo.refs[ref]
        return {
            "ref": f"refs/{ref}",
            "url": f"{url}/git/refs/{ref}",
            "object": {"sha": sha, "type": "commit", "url": f"{url}/git/commits/{sha}"},
        }

    def _content_json(self, repo: _Repo, path: str, sha: str) -> dict[str, Any]:
        url = self._repo_url(repo)
        data = repo.blobs[sha]
        return {
            "type": "file",
            "encoding": "base64",
            "size": len(data),
            "name": path.rsplit("/", 1)[-1],
            "path": path,
            "content": base64.b64encode(data).decode(),
            "sha": sha,
            "url": f"{url}/contents/{path}",
            "git_url": f"{url}/git/blobs/{sha}",
            "html_url": f"{url}/blob/main/{path}",
            "download_url": None,
        }

    # ---- helpers

    def _repo(self, login: str, owner: str, repo: str) -> _Repo:
        found = self.state.repos.get((owner, repo))
        if found is None or found.owner != login:
            raise _HTTPError(404, "Not Found")
        return found

    def _person(self, login: str, given: Any) -> dict[str, str]:
        ts, date = _now()
        person = {"name": login, "email": f"{login}@users.noreply.github.com", "date": date}
        if isinstance(given, dict):
            person.update({k: str(v) for k, v in given.items() if k in ("name", "email")})
        person["_ts"] = str(ts)
        return person

    def _commit(self, repo: _Repo, login: str, tree: str, parents: list[str], message: str) -> str:
        me = self._person(login, None)
        return repo.put_commit(_Commit(tree, parents, me, dict(me), message))

    # ---- routes

    def _get_user(self, login: str) -> tuple[int, Any]:
        return 200, self.state.user(login)

    def _create_repo(self, login: str) -> tuple[int, Any]:
        name = str(self.body.get("name") or "")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise _HTTPError(422, "Repository creation failed.")
        with self.state.lock:
            if (login, name) in self.state.repos:
                raise _HTTPError(422, "Repository creation failed.")
            self.state.next_id += 1
            repo = _Repo(self.state.next_id, login, name, bool(self.body.get("private")))
            self.state.repos[(login, name)] = repo
        if self.body.get("auto_init"):
            readme = repo.put_blob(f"# {name}\n".encode())
            tree = repo.put_tree([(_BLOB_MODE, "README.md", readme)])
            repo.refs["heads/main"] = self._commit(repo, login, tree, [], "Initial commit")
        return 201, self._repo_json(repo)

    def _get_repo(self, login: str, owner: str, repo: str) -> tuple[int, Any]:
        return 200, self._repo_json(self._repo(login, owner, repo))

    def _get_contents(self, login: str, owner: str, repo: str, path: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        ref = self.query.get("ref", ["main"])[0].removeprefix("refs/").removeprefix("heads/")
        path = urllib.parse.unquote(path).strip("/")
        with found.lock:
            head = found.refs.get(f"heads/{ref}") or (ref if ref in found.commits else None)
            if head is None:
                raise _HTTPError(404, "Not Found")
            files = found.flatten(found.commits[head].tree)
            if path in files:
                return 200, self._content_json(found, path, files[path][1])
            prefix = f"{path}/" if path else ""
            listing = sorted(p for p in files if p.startswith(prefix))
            if not listing:
                raise _HTTPError(404, "Not Found")
            names = {p[len(prefix) :].split("/", 1)[0] for p in listing}
            items = []
            for name in sorted(names):
                full = f"{prefix}{name}"
                if full in files:
                    item = self._content_json(found, full, files[full][1])
                    del item["content"], item["encoding"]
                else:
                    item = {"type": "dir", "name": name, "path": full, "sha": None}
                items.append(item)
            return 200, items

    def _put_contents(self, login: str, owner: str, repo: str, path: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        path = urllib.parse.unquote(path).strip("/")
        branch = str(self.body.get("branch") or "main")
        message = str(self.body.get("message") or "")
        if not message or "content" not in self.body:
            raise _HTTPError(422, 'Invalid request.\n\n"message" and "content" are required.')
        try:
            data = base64.b64decode(str(self.body["content"]), validate=True)
        except ValueError as error:
            raise _HTTPError(422, "content is not valid Base64") from error
        given = self.body.get("sha")
        with found.lock:
            head = found.refs.get(f"heads/{branch}")
            files = found.flatten(found.commits[head].tree) if head else {}
            current = files.get(path)
            if current is not None and not given:
                raise _HTTPError(422, 'Invalid request.\n\n"sha" wasn\'t supplied.')
            if given and (current is None or current[1] != given):
                raise _HTTPError(409, f"{path} does not match {given}")
            sha = found.put_blob(data)
            files[path] = (_BLOB_MODE, sha)
            tree = found.build(files)
            commit = self._commit(found, login, tree, [head] if head else [], message)
            found.refs[f"heads/{branch}"] = commit
            body = {
                "content": self._content_json(found, path, sha),
                "commit": self._commit_json(found, commit),
            }
        return (200 if current else 201), body

    def _get_ref(self, login: str, owner: str, repo: str, ref: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        with found.lock:
            if ref not in found.refs:
                raise _HTTPError(404, "Not Found")
            return 200, self._ref_json(found, ref)

    def _create_ref(self, login: str, owner: str, repo: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        ref = str(self.body.get("ref") or "").removeprefix("refs/")
        sha = str(self.body.get("sha") or "")
        with found.lock:
            if not ref.startswith("heads/") or sha not in found.commits:
                raise _HTTPError(422, "Object does not exist")
            if ref in found.refs:
                raise _HTTPError(422, "Reference already exists")
            found.refs[ref] = sha
            return 201, self._ref_json(found, ref)

    def _update_ref(self, login: str, owner: str, repo: str, ref: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        sha = str(self.body.get("sha") or "")
        force = bool(self.body.get("force"))
        with found.lock:
            if ref not in found.refs:
                raise _HTTPError(422, "Reference does not exist")
            if sha not in found.commits:
                raise _HTTPError(422, "Object does not exist")
            if not force and not found.is_ancestor(found.refs[ref], sha):
                raise _HTTPError(422, "Update is not a fast forward")
            found.refs[ref] = sha
            return 200, self._ref_json(found, ref)

    def _get_commit(self, login: str, owner: str, repo: str, sha: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        with found.lock:
            if sha not in found.commits:
                raise _HTTPError(404, "Not Found")
            return 200, self._commit_json(found, sha)

    def _create_commit(self, login: str, owner: str, repo: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        tree = str(self.body.get("tree") or "")
        parents = [str(p) for p in self.body.get("parents") or []]
        message = str(self.body.get("message") or "")
        with found.lock:
            if tree not in found.trees or any(p not in found.commits for p in parents):
                raise _HTTPError(422, "Tree SHA does not exist")
            author = self._person(login, self.body.get("author"))
            committer = self._person(login, self.body.get("committer") or self.body.get("author"))
            sha = found.put_commit(_Commit(tree, parents, author, committer, message))
            return 201, self._commit_json(found, sha)

    def _get_tree(self, login: str, owner: str, repo: str, sha: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        recursive = self.query.get("recursive", ["0"])[0] not in ("0", "false", "")
        url = self._repo_url(found)
        with found.lock:
            if sha not in found.trees:
                raise _HTTPError(404, "Not Found")
            entries: list[dict[str, Any]] = []

            def walk(tree_sha: str, prefix: str) -> None:
                for mode, name, entry_sha in sorted(found.trees[tree_sha], key=lambda e: e[1]):
                    is_tree = mode == _TREE_MODE
                    entry: dict[str, Any] = {
                        "path": prefix + name,
                        "mode": "040000" if is_tree else mode,
                        "type": "tree" if is_tree else "blob",
                        "sha": entry_sha,
                        "url": f"{url}/git/{'trees' if is_tree else 'blobs'}/{entry_sha}",
                    }
                    if not is_tree:
                        entry["size"] = len(found.blobs[entry_sha])
                    entries.append(entry)
                    if is_tree and recursive:
                        walk(entry_sha, f"{prefix}{name}/")

            walk(sha, "")
        return 200, {
            "sha": sha,
            "url": f"{url}/git/trees/{sha}",
            "tree": entries,
            "truncated": False,
        }

    def _create_tree(self, login: str, owner: str, repo: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        base = self.body.get("base_tree")
        with found.lock:
            if base and base not in found.trees:
                raise _HTTPError(422, "base_tree is not a valid tree oid")
            files = found.flatten(str(base)) if base else {}
            for item in self.body.get("tree") or []:
                path = str(item.get("path") or "").strip("/")
                mode = str(item.get("mode") or _BLOB_MODE)
                kind = item.get("type", "blob")
                if not path:
                    raise _HTTPError(422, "tree.path is required")
                if "content" in item and item["content"] is not None:
                    files[path] = (mode, found.put_blob(str(item["content"]).encode()))
                elif item.get("sha") is None:
                    files = {p: v for p, v in files.items() if p != path}
                    files = {p: v for p, v in files.items() if not p.startswith(f"{path}/")}
                elif kind == "tree":
                    if item["sha"] not in found.trees:
                        raise _HTTPError(422, "tree.sha is not a valid tree")
                    files = {p: v for p, v in files.items() if not p.startswith(f"{path}/")}
                    for sub, value in found.flatten(str(item["sha"])).items():
                        files[f"{path}/{sub}"] = value
                else:
                    if item["sha"] not in found.blobs:
                        raise _HTTPError(422, "tree.sha is not a valid blob")
                    files[path] = (mode, str(item["sha"]))
            sha = found.build(files)
        return 201, self._get_tree(login, owner, repo, sha)[1]

    def _get_blob(self, login: str, owner: str, repo: str, sha: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        with found.lock:
            if sha not in found.blobs:
                raise _HTTPError(404, "Not Found")
            data = found.blobs[sha]
        return 200, {
            "sha": sha,
            "size": len(data),
            "encoding": "base64",
            "content": base64.b64encode(data).decode(),
            "url": f"{self._repo_url(found)}/git/blobs/{sha}",
        }

    def _create_blob(self, login: str, owner: str, repo: str) -> tuple[int, Any]:
        found = self._repo(login, owner, repo)
        content = str(self.body.get("content") or "")
        if self.body.get("encoding") == "base64":
            data = base64.b64decode(content)
        else:
            data = content.encode()
        with found.lock:
            sha = found.put_blob(data)
        return 201, {"sha": sha, "url": f"{self._repo_url(found)}/git/blobs/{sha}"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


# --------------------------------------------------------------------------- wrapper


class GitHubStandIn:
    """The stand-in served from a thread on a free loopback port, for unit tests.

    Args:
        host: The address to bind.
        port: The port; 0 picks a free one.
        rate_limit_per_minute: The secondary rate limit on content-creating requests,
            per token.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit_per_minute: int = DEFAULT_RATE_LIMIT_PER_MINUTE,
    ) -> None:
        self._server = _Server((host, port), _State(rate_limit_per_minute))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="github-stand-in", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def requests(self) -> list[dict[str, Any]]:
        """Returns the request log: ``{method, path, status, token_login, at}`` per request
        (``at``: when it was answered, Unix seconds)."""
        return self._admin("GET", "/_admin/requests")  # type: ignore[no-any-return]

    def configure(self, **config: Any) -> dict[str, Any]:
        """Posts ``/_admin/config``: ``rate_limit_per_minute``, ``fail_next`` (see the
        module's docstring); returns the configuration in force."""
        return self._admin("POST", "/_admin/config", config)  # type: ignore[no-any-return]

    def pending_faults(self) -> list[dict[str, Any]]:
        """The injected faults no request has matched yet."""
        return self.configure()["fail_next"]  # type: ignore[no-any-return]

    def revoke(self, token: str) -> None:
        """Makes every later request with `token` answer 401."""
        self._admin("POST", "/_admin/revoke", {"token": token})

    def reset(self) -> None:
        """Forgets repositories, revoked tokens, the request log and rate windows."""
        self._admin("POST", "/_admin/reset", {})

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            return json.loads(response.read())

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> GitHubStandIn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    """Serves the stand-in until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m blogflow.local.github", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="Address to bind.")
    parser.add_argument("--port", type=int, default=0, help="Port to bind; 0 picks one.")
    parser.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=DEFAULT_RATE_LIMIT_PER_MINUTE,
        help="Content-creating requests each token may make per minute before a 403.",
    )
    parser.add_argument("--log-file", default=None, help="Write the server's log here.")
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    server = _Server((args.host, args.port), _State(args.rate_limit_per_minute))
    host, port = server.server_address[:2]
    _LOGGER.info("GitHub stand-in listening on http://%s:%d", host, port)
    print(f"GitHub stand-in listening on http://{host!s}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
