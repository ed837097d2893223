"""blogflow users link: the token stored encrypted in the real MongoDB, never shown."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from blogflow.cli import cli
from blogflow.io.users import UserNotLinkedError, link_user, load_link
from blogflow.tokens import Secret, TokenError

pytestmark = pytest.mark.integration

KEY = "test-secret-key-" + "x" * 32
TOKEN = "ghp_TopSecretToken0123456789"


@pytest.fixture
def secret_key(monkeypatch):
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    return KEY


def test_link_stores_the_token_encrypted(mongo_db, secret_key):
    result = CliRunner().invoke(
        cli,
        [
            "users",
            "link",
            "u1",
            "--repo",
            "alice/blog-backup",
            "--token-stdin",
            "--mongo-db",
            mongo_db.name,
        ],
        input=TOKEN + "\n",
    )
    assert result.exit_code == 0, result.output
    assert "linked u1 to alice/blog-backup" in result.output and TOKEN not in result.output
    doc = mongo_db.users.find_one({"_id": "u1"})
    assert doc["githubRepo"] == "alice/blog-backup"
    assert TOKEN not in str(doc)
    link = load_link(mongo_db, "u1")
    assert link.repo == "alice/blog-backup" and link.token == Secret(TOKEN)
    assert TOKEN not in repr(link)


def test_relinking_replaces_repo_and_token(mongo_db, secret_key):
    link_user(mongo_db, "u1", "alice/one", Secret("t1"))
    link_user(mongo_db, "u1", "alice/two", Secret("t2"))
    link = load_link(mongo_db, "u1")
    assert (link.repo, link.token.reveal()) == ("alice/two", "t2")
    assert mongo_db.users.count_documents({}) == 1


def test_bad_input_is_refused_without_showing_the_token(mongo_db, secret_key, monkeypatch):
    runner = CliRunner()
    args = ["users", "link", "u1", "--token-stdin", "--mongo-db", mongo_db.name]
    for repo in ("not-a-repo", "alice/../etc", "/x"):
        bad = runner.invoke(cli, [*args, "--repo", repo], input=TOKEN + "\n")
        assert bad.exit_code != 0 and TOKEN not in bad.output
    empty = runner.invoke(cli, [*args, "--repo", "alice/b"], input="\n")
    assert empty.exit_code == 2 and "no token" in empty.output
    monkeypatch.delenv("BLOGFLOW_SECRET_KEY")
    nokey = runner.invoke(cli, [*args, "--repo", "alice/b"], input=TOKEN + "\n")
    assert nokey.exit_code == 1 and "BLOGFLOW_SECRET_KEY is not set" in nokey.output
    assert TOKEN not in nokey.output
    with pytest.raises(UserNotLinkedError, match="no GitHub repository"):
        load_link(mongo_db, "nobody")


def test_a_token_stored_under_another_key_is_refused(mongo_db, secret_key):
    link_user(mongo_db, "u1", "alice/b", Secret(TOKEN), secret_key="another-key-" + "y" * 30)
    with pytest.raises(TokenError, match="cannot be decrypted") as caught:
        load_link(mongo_db, "u1")
    assert TOKEN not in str(caught.value)


def test_the_most_verbose_log_shows_no_stored_token(mongo_db, secret_key):
    # At -vv pymongo's own command log printed the users documents, ciphertext and all.
    done = subprocess.run(
        [sys.executable, "-m", "blogflow.cli", "-vv", "users", "link", "u1"]
        + ["--repo", "alice/b", "--token-stdin", "--mongo-db", mongo_db.name],
        input=TOKEN + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert done.returncode == 0, done.stderr
    assert "DEBUG" in done.stderr  # the log really was at its most verbose
    stored = mongo_db.users.find_one({"_id": "u1"})["githubToken"]
    ciphertext = stored.decode() if isinstance(stored, bytes) else str(stored)
    assert ciphertext[:40] not in done.stderr + done.stdout
    assert TOKEN not in done.stderr + done.stdout
