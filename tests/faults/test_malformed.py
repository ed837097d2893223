"""The fault suite's corpus of malformed messages: every bad message dead-lettered once,
with its reason; the good events around them with exactly their effect.

For each pipeline (summing, feed, backup) a seeded corpus (:mod:`tests.faults.corpus`) of
bad messages of every class the README lists, mixed with good events, goes through a real
source twice:

- ``archive``: ~300 bad messages (every variant of every class) and the good events as a
  JSON-lines archive, read twice.
- ``sqs``: over SQS (moto), a smaller corpus of the same classes (4 of each, ~50 bad
  messages): moto's ReceiveMessage costs ~2 ms per message in the queue (0.9 s a call at
  a depth of 400), so a deep queue alone would take minutes. Messages SQS cannot carry
  (invalid UTF-8, raw control characters) are left out. The first drain loses its
  acknowledgements (as a job killed after committing its bundles, before SQS was told),
  so every message is delivered again, under the same message id, to a second drain.

After both runs: one dead letter per bad message (``sourceId`` the SQS message id or
``file@offset``), none for a good one, none twice; each with the stage that must reject
it and a one-line ``error`` naming the class of problem; the payload as sent, cut at
64 KiB (``truncated``) for oversized ones; the queue empty. The good events' effect is
compared with a computation (sums, backups) or a run of the good events alone (feeds).
"""

from __future__ import annotations

import collections
import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from apache_beam.metrics.metric import MetricsFilter
from github import Auth, Github

from blogflow.io import redis as redis_io
from blogflow.io import sqs
from blogflow.io.backups import load_backup, load_items, store_publication
from blogflow.io.feeds import read_all_feeds
from blogflow.io.github import create_repository
from blogflow.io.sums import redis_key
from blogflow.io.users import link_user
from blogflow.local.github import GitHubStandIn
from blogflow.pipelines import backup, feed, summing
from blogflow.tokens import Secret
from tests.faults.corpus import (
    BACKUP_KINDS,
    FEED_KINDS,
    FEW,
    MAX_STORED_PAYLOAD,
    SUMMING_KINDS,
    Message,
    backup_corpus,
    feed_corpus,
    summing_corpus,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SEED = 20261201
AS_OF = dt.datetime(2026, 11, 21, 12, 30, tzinfo=dt.timezone.utc)
KEY = "malformed-corpus-test-key-" + "k" * 30
TOKEN = "ghp_malformed_corpus_token_0123456789"
_BIG = 200_000  # bodies above this go to SQS one by one, not in a batch


# ------------------------------------------------------------------------- deliveries


class _SQSDelivery:
    """The corpus over SQS; the first drain's acknowledgements are lost."""

    name = "sqs"

    def __init__(self, client: Any, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self._client = client
        self._url = url
        self._monkeypatch = monkeypatch
        self.source = f"sqs://{url}"
        self.args = ("--drain", "--idle-timeout=1")
        self.sent: dict[str, Message] = {}

    def send(self, messages: Sequence[Message]) -> None:
        batch: list[Message] = []

        def flush() -> None:
            if not batch:
                return
            entries = [
                {"Id": str(i), "MessageBody": m.payload.decode()} for i, m in enumerate(batch)
            ]
            answer = self._client.send_message_batch(QueueUrl=self._url, Entries=entries)
            assert not answer.get("Failed"), answer["Failed"]
            for ok in answer["Successful"]:
                self.sent[ok["MessageId"]] = batch[int(ok["Id"])]
            batch.clear()

        for m in messages:
            if not m.sqs_text:
                continue
            if len(m.payload) > _BIG:
                sent = self._client.send_message(QueueUrl=self._url, MessageBody=m.payload.decode())
                self.sent[sent["MessageId"]] = m
                continue
            if len(batch) == 10 or sum(len(b.payload) for b in batch) + len(m.payload) > _BIG:
                flush()
            batch.append(m)
        flush()
        assert len(self.sent) == sum(1 for m in messages if m.sqs_text)

    def twice(
        self, run: Callable[[Sequence[str]], Any], args: Sequence[str], between: Callable[[], None]
    ) -> Any:
        """Runs the job, its acknowledgements lost, calls ``between``, then runs it again
        over the redelivered messages; returns the first run's result."""
        kept: list[tuple[str, list[str]]] = []

        def ack_lost(reader: Any, url: str, handles: Sequence[str]) -> None:
            kept.append((url, list(handles)))

        with self._monkeypatch.context() as patch:
            patch.setattr(sqs._ReadQueueFn, "_delete", ack_lost)
            first = run([f"--source={self.source}", *self.args, *args])
        between()
        handles = [h for _, hs in kept for h in hs]
        assert len(handles) == len(self.sent), "the first drain did not read every message"
        for start in range(0, len(handles), 10):
            entries = [
                {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": 0}
                for i, h in enumerate(handles[start : start + 10])
            ]
            answer = self._client.change_message_visibility_batch(
                QueueUrl=self._url, Entries=entries
            )
            assert not answer.get("Failed"), answer["Failed"]
        visible, _ = self.depth()
        deadline = time.monotonic() + 20
        while visible < len(self.sent) and time.monotonic() < deadline:
            time.sleep(0.2)
            visible, _ = self.depth()
        assert visible == len(self.sent), "the messages did not come back for redelivery"
        run([f"--source={self.source}", *self.args, *args])
        return first

    def depth(self) -> tuple[int, int]:
        """Messages visible and in flight."""
        attributes = self._client.get_queue_attributes(
            QueueUrl=self._url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return (
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
        )

    def leftover(self) -> str | None:
        visible, in_flight = self.depth()
        if visible or in_flight:
            return f"the queue is not empty: {visible} visible, {in_flight} in flight"
        return None


class _ArchiveDelivery:
    """The corpus as a JSON-lines archive, read twice."""

    name = "archive"

    def __init__(self, path: Path) -> None:
        self._path = path
        self.source = f"file://{path}"
        self.args: tuple[str, ...] = ()
        self.sent: dict[str, Message] = {}

    def send(self, messages: Sequence[Message]) -> None:
        offset = 0
        with self._path.open("wb") as out:
            for m in messages:
                self.sent[f"{self._path}@{offset}"] = m
                out.write(m.payload + b"\n")
                offset += len(m.payload) + 1

    def twice(
        self, run: Callable[[Sequence[str]], Any], args: Sequence[str], between: Callable[[], None]
    ) -> Any:
        first = run([f"--source={self.source}", *args])
        between()
        run([f"--source={self.source}", *args])
        return first

    def leftover(self) -> str | None:
        return None


@pytest.fixture(params=["sqs", "archive"])
def delivery(request, local_stack, sqs_client, unique_name, tmp_path, monkeypatch):
    if request.param == "archive":
        yield _ArchiveDelivery(tmp_path / "corpus.jsonl")
        return
    # The visibility timeout outlasts a drain: no message comes back before we release it.
    url = sqs.create_queue(unique_name, visibility_timeout=300)
    yield _SQSDelivery(sqs_client, url, monkeypatch)
    sqs_client.delete_queue(QueueUrl=url)


# ----------------------------------------------------------------------- dead letters


def _raw(stored: Any) -> bytes:
    return stored.encode() if isinstance(stored, str) else bytes(stored)


def _example(m: Message) -> str:
    return f"{m.kind}: {m.payload[:160]!r}"


def dead_letter_problems(db: Any, pipeline: str, sent: dict[str, Message]) -> list[str]:
    """What is wrong with ``deadletters`` for the messages ``sent`` (source id → message)."""
    letters = list(db.deadletters.find())
    problems: list[str] = []
    by_source: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for letter in letters:
        by_source[letter.get("sourceId")].append(letter)
    bad = {sid: m for sid, m in sent.items() if m.bad}

    if len(letters) != len(bad):
        problems.append(f"{len(letters)} dead letters for {len(bad)} bad messages sent")
    missing = [sid for sid in bad if sid not in by_source]
    if missing:
        kinds = collections.Counter(bad[sid].kind for sid in missing)
        problems.append(
            f"{len(missing)} bad messages have no dead letter under their source id, by "
            f"class {dict(kinds)}; e.g. {_example(bad[missing[0]])}"
        )
    good_ones = [sid for sid in by_source if sid in sent and not sent[sid].bad]
    if good_ones:
        first = by_source[good_ones[0]][0]
        problems.append(
            f"{len(good_ones)} good messages were dead-lettered, e.g. "
            f"{sent[good_ones[0]].payload[:160]!r}: {first.get('error')!r}"
        )
    strangers = [sid for sid in by_source if sid not in sent]
    if strangers:
        stages = collections.Counter(d.get("stage") for sid in strangers for d in by_source[sid])
        first = by_source[strangers[0]][0]
        problems.append(
            f"{len(strangers)} dead letters under a source id no message was sent with, by "
            f"stage {dict(stages)}; e.g. sourceId={first.get('sourceId')!r} "
            f"error={first.get('error')!r} payload={_raw(first.get('payload', b''))[:160]!r}"
        )
    twice = [sid for sid, found in by_source.items() if len(found) > 1]
    if twice:
        problems.append(f"{len(twice)} messages were dead-lettered more than once")

    wrong: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for sid, m in bad.items():
        for letter in by_source.get(sid, [])[:1]:
            error = letter.get("error")
            checks = {
                "pipeline": letter.get("pipeline") == pipeline,
                "stage": letter.get("stage") == m.stage,
                "one-line error": isinstance(error, str)
                and error.strip() != ""
                and "\n" not in error
                and len(error) < 1000,
                "error names the problem": isinstance(error, str)
                and all(part in error for part in m.expect),
                "payload as sent": _raw(letter.get("payload", b""))
                == m.payload[:MAX_STORED_PAYLOAD],
                "payloadBytes": letter.get("payloadBytes") == len(m.payload),
                "truncated": letter.get("truncated") is (len(m.payload) > MAX_STORED_PAYLOAD),
                "receivedAt": isinstance(letter.get("receivedAt"), dt.datetime),
            }
            for check, ok in checks.items():
                if not ok:
                    wrong[(check, m.kind)].append(
                        f"{_example(m)} → stage={letter.get('stage')!r} error={error!r}"
                    )
    for (check, kind), examples in sorted(wrong.items()):
        problems.append(f"{check}: wrong for {len(examples)} {kind} message(s), e.g. {examples[0]}")
    return problems


def letters_by_id(db: Any) -> dict[str, tuple[Any, ...]]:
    return {
        d["_id"]: (d.get("sourceId"), d.get("stage"), d.get("error"), d.get("receivedAt"))
        for d in db.deadletters.find({}, {"payload": 0})
    }


def ids(collection: Any) -> set[str]:
    return {d["_id"] for d in collection.find({}, {"_id": 1})}


def counter(result: Any, name: str) -> int:
    found = result.metrics().query(MetricsFilter().with_name(name))
    return sum(c.committed for c in found["counters"])


def send_and_run_twice(
    delivery: Any,
    messages: Sequence[Message],
    kinds: Sequence[str],
    run: Callable[[Sequence[str]], Any],
    args: Sequence[str],
    db: Any,
    pipeline: str,
) -> list[str]:
    """Sends the corpus and runs the job over it twice (the second time a redelivery of
    every message); returns what is wrong with the dead letters then."""
    delivery.send(messages)
    sent = delivery.sent
    expected_kinds = set(kinds) - ({"invalid_utf8"} if delivery.name == "sqs" else set())
    assert {m.kind for m in sent.values() if m.bad} == expected_kinds
    after_first: list[dict[str, tuple[Any, ...]]] = []
    first = delivery.twice(run, args, lambda: after_first.append(letters_by_id(db)))

    problems = dead_letter_problems(db, pipeline, sent)
    parse_bad = sum(1 for m in sent.values() if m.bad and m.stage == "parse")
    rejected = counter(first, "events_rejected")
    if rejected != parse_bad:
        problems.append(f"events_rejected counted {rejected} for {parse_bad} bad messages")
    now = letters_by_id(db)
    if now != after_first[0]:
        added = len(set(now) - set(after_first[0]))
        changed = sum(1 for i in after_first[0] if now.get(i) != after_first[0][i])
        problems.append(
            f"the redelivery stored {added} new dead letters and changed {changed} of the "
            f"{len(after_first[0])} the first run stored"
        )
    leftover = delivery.leftover()
    if leftover:
        problems.append(leftover)
    return problems


# ---------------------------------------------------------------------------- summing


def sum_problems(db: Any, redis_prefix: str, arrays: dict[str, list[int]]) -> list[str]:
    """How the stored sums differ from the good packets' (2 x the sum of each array)."""
    problems = []
    client = redis_io.connect()
    try:
        for array_id, values in arrays.items():
            doc = db.sums.find_one({"_id": array_id}) or {}
            expected = (2 * sum(values), "complete", len(values), len(values))
            got = tuple(doc.get(f) for f in ("sum", "status", "packetsSeen", "arrayLength"))
            cached = client.hgetall(redis_key(array_id, redis_prefix))
            mirrored = (cached.get("sum"), cached.get("status"))
            if got != expected or mirrored != (str(expected[0]), "complete"):
                problems.append(
                    f"array {array_id}: (sum, status, packetsSeen, arrayLength) {got} in "
                    f"MongoDB and {mirrored} in Redis, expected {expected}"
                )
    finally:
        client.close()
    ghosts = ids(db.sums) - set(arrays)
    if ghosts:
        problems.append(f"sums of arrays no good packet named: {sorted(ghosts)[:5]}")
    return problems


def test_summing_dead_letters_every_bad_message_once_and_sums_the_good_exactly(
    delivery, mongo_db, redis_prefix
):
    if delivery.name == "sqs":
        corpus = summing_corpus(SEED, arrays=6, counts=FEW)
    else:
        corpus = summing_corpus(SEED)
    assert all(m.sqs_text for m in corpus.messages if not m.bad)
    args = [f"--mongo-db={mongo_db.name}", f"--redis-prefix={redis_prefix}"]

    problems = send_and_run_twice(
        delivery, corpus.messages, SUMMING_KINDS, summing.run, args, mongo_db, "summing"
    )

    problems += sum_problems(mongo_db, redis_prefix, corpus.arrays)
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------- feed


def feeds_under(prefix: str) -> dict[str, list[tuple[str, float]]]:
    client = redis_io.connect()
    try:
        return read_all_feeds(client, prefix)
    finally:
        client.close()


def feed_problems(got: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    def same(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
        return [p for p, _ in a] == [p for p, _ in b] and [s for _, s in a] == pytest.approx(
            [s for _, s in b], rel=1e-9
        )

    differing = sorted(
        u for u in {*got, *expected} if not same(got.get(u, []), expected.get(u, []))
    )
    if not differing:
        return []
    user = differing[0]
    return [
        f"{len(differing)} of {len(expected)} feeds differ from those of the good events "
        f"alone, e.g. {user}: {got.get(user)} != {expected.get(user)}"
    ]


def feed_args(mongo_db: Any, prefix: str) -> list[str]:
    return [
        f"--as-of={AS_OF.isoformat()}",
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={prefix}",
    ]


def test_feed_dead_letters_every_bad_message_once_and_gives_the_good_events_feeds(
    delivery, mongo_db, redis_prefix, tmp_path
):
    if delivery.name == "sqs":
        corpus = feed_corpus(SEED, AS_OF, posts=5, users=8, engagement=40, counts=FEW)
    else:
        corpus = feed_corpus(SEED, AS_OF)
    assert all(m.sqs_text for m in corpus.good)
    good_only = tmp_path / "good.jsonl"
    good_only.write_bytes(b"".join(m.payload + b"\n" for m in corpus.good))
    feed.run([f"--source=file://{good_only}", *feed_args(mongo_db, f"{redis_prefix}good:")])
    expected = feeds_under(f"{redis_prefix}good:")
    assert len(expected) >= 8 and mongo_db.deadletters.count_documents({}) == 0
    prefix = f"{redis_prefix}{delivery.name}:"

    problems = send_and_run_twice(
        delivery,
        corpus.messages,
        FEED_KINDS,
        feed.run,
        feed_args(mongo_db, prefix),
        mongo_db,
        "feed",
    )

    problems += feed_problems(feeds_under(prefix), expected)  # no ghost user, no ghost post
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- backup


PUBLICATIONS = {  # publication: (owner, members, posts)
    "pub-a": ("alice", (), 7),
    "pub-b": ("bob", ("carol",), 4),
    "pub-c": ("carol", (), 3),
}
REQUESTS = [  # backupId, publicationId, userId
    ("b-alice", "pub-a", "alice"),
    ("b-bob", "pub-b", "bob"),
    ("b-carol-b", "pub-b", "carol"),  # a member
    ("b-carol", "pub-c", "carol"),
]
TAKEN = ("b-zoe", "pub-zoe", "zoe")  # a backup stored before: zoe's, of pub-zoe


def tree_paths(github: GitHubStandIn, repo_name: str) -> set[str]:
    client = Github(auth=Auth.Token(TOKEN), base_url=github.url, retry=None)
    try:
        repo = client.get_repo(repo_name)
        head = repo.get_git_commit(repo.get_git_ref(f"heads/{repo.default_branch}").object.sha)
        tree = repo.get_git_tree(head.tree.sha, recursive=True).tree
        return {entry.path for entry in tree if entry.type == "blob"}
    finally:
        client.close()


@pytest.fixture
def backup_site(mongo_db, unique_name, monkeypatch) -> Iterator[tuple[GitHubStandIn, dict]]:
    """Users linked to repositories of their own on the GitHub stand-in, publications
    (MongoDB ``publications``: owner and members) with posts, and zoe's finished backup
    ``b-zoe``."""
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    with GitHubStandIn() as github:
        repos = {}
        for user in ("alice", "bob", "carol"):
            repos[user] = create_repository(
                f"{unique_name}-{user}", Secret(TOKEN), api_url=github.url
            )
            link_user(mongo_db, user, repos[user], Secret(TOKEN))
        updated = dt.datetime(2026, 11, 20, 9, 30, tzinfo=dt.timezone.utc)
        for publication, (owner, members, count) in {
            **PUBLICATIONS,
            "pub-zoe": ("zoe", (), 1),
        }.items():
            store_publication(mongo_db, publication, owner, members)
            mongo_db.posts.insert_many(
                [
                    {
                        "_id": f"{publication}-p{i}",
                        "publicationId": publication,
                        "authorId": owner,
                        "title": f"Post {i} of {publication}",
                        "slug": f"post-{i}",
                        "tags": ["backup"],
                        "contentMarkdown": f"# Post {i}\n\nBody {i}.\n",
                        "updatedAt": updated,
                    }
                    for i in range(count)
                ]
            )
        backup_id, publication, owner = TAKEN
        mongo_db.backups.insert_one(
            {
                "_id": backup_id,
                "userId": owner,
                "publicationId": publication,
                "total": 1,
                "done": 1,
                "failed": 0,
                "status": "done",
                "error": None,
                "startedAt": updated,
                "updatedAt": updated,
                "finishedAt": updated,
            }
        )
        yield github, repos


def backup_problems(db: Any, github: GitHubStandIn, repos: dict[str, str]) -> list[str]:
    """How the backups differ from the good requests': each done, with every post of its
    publication in the requester's repository."""
    problems = []
    for backup_id, publication, user in REQUESTS:
        total = PUBLICATIONS[publication][2]
        stored = load_backup(db, backup_id) or {}
        got = tuple(stored.get(f) for f in ("status", "userId", "total", "done", "failed"))
        if got != ("done", user, total, total, 0):
            problems.append(f"backup {backup_id}: (status, userId, total, done, failed) {got}")
        items = load_items(db, backup_id)
        posts = [f"{publication}-p{i}" for i in range(total)]
        if [i["postId"] for i in items] != posts:
            problems.append(f"backup {backup_id}: items {[i['postId'] for i in items]}")
        if not {i["status"] for i in items} <= {"committed", "unchanged"}:
            problems.append(f"backup {backup_id}: item statuses {[i['status'] for i in items]}")
        missing = {i["path"] for i in items} - tree_paths(github, repos[user])
        if missing:
            problems.append(f"backup {backup_id}: not in {repos[user]}: {sorted(missing)}")
    ghosts = ids(db.backups) - {TAKEN[0], *(b for b, _, _ in REQUESTS)}
    if ghosts:
        problems.append(f"backups no good request asked for: {sorted(ghosts)[:5]}")
    return problems


def test_backup_dead_letters_every_bad_request_once_and_backs_up_the_good_ones(
    delivery, backup_site, mongo_db, redis_prefix
):
    github, repos = backup_site
    counts = FEW if delivery.name == "sqs" else None
    corpus = backup_corpus(SEED, REQUESTS, taken=TAKEN, counts=counts)
    assert all(m.sqs_text for m in corpus.messages if not m.bad)
    taken_before = load_backup(mongo_db, TAKEN[0])
    args = [
        f"--mongo-db={mongo_db.name}",
        f"--redis-prefix={redis_prefix}",
        f"--github-api-url={github.url}",
        "--write-interval=0",
    ]

    problems = send_and_run_twice(
        delivery, corpus.messages, BACKUP_KINDS, backup.run, args, mongo_db, "backup"
    )

    problems += backup_problems(mongo_db, github, repos)
    if load_backup(mongo_db, TAKEN[0]) != taken_before:
        problems.append(f"the stored backup {TAKEN[0]} was changed by requests naming it")
    assert not problems, "\n".join(problems)
