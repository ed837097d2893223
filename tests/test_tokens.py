"""Secrets: encrypted GitHub tokens, signed browser tokens, and a Secret that hides itself."""

import logging
import pickle

import pytest

from blogflow.tokens import (
    KeySource,
    Secret,
    TokenError,
    decrypt_token,
    encrypt_token,
    is_sealed,
    seal,
    shown,
    sign_user,
    unseal,
    verify_user,
)

KEY = "k" * 40
OTHER = "o" * 40


def test_tokens_round_trip_and_are_never_stored_in_clear():
    stored = encrypt_token("ghp_realtoken123", secret_key=KEY)
    assert "ghp_realtoken123" not in stored
    assert encrypt_token("ghp_realtoken123", secret_key=KEY) != stored  # random IV
    assert decrypt_token(stored, secret_key=KEY).reveal() == "ghp_realtoken123"


def test_another_key_or_a_changed_byte_cannot_decrypt():
    stored = encrypt_token(Secret("ghp_x"), secret_key=KEY)
    with pytest.raises(TokenError, match="cannot be decrypted") as caught:
        decrypt_token(stored, secret_key=OTHER)
    assert KEY not in str(caught.value) and "ghp_x" not in str(caught.value)
    tampered = stored[:-5] + ("A" if stored[-5] != "A" else "B") + stored[-4:]
    with pytest.raises(TokenError):
        decrypt_token(tampered, secret_key=KEY)


def test_a_missing_or_short_key_is_refused_clearly(monkeypatch):
    monkeypatch.delenv("BLOGFLOW_SECRET_KEY", raising=False)
    with pytest.raises(TokenError, match="BLOGFLOW_SECRET_KEY is not set"):
        encrypt_token("t")
    with pytest.raises(TokenError, match="at least 32"):
        encrypt_token("t", secret_key="short")
    monkeypatch.setenv("BLOGFLOW_SECRET_KEY", KEY)
    assert decrypt_token(encrypt_token("t")).reveal() == "t"


def test_a_secret_never_shows_itself(caplog):
    secret = Secret("ghp_hidden")
    assert "ghp_hidden" not in repr(secret) and "ghp_hidden" not in str(secret)
    assert "ghp_hidden" not in f"{secret} {secret!r} {[secret]} { ({'t': secret}) }"
    with caplog.at_level(logging.INFO):
        logging.getLogger("t").info("token is %s / %r", secret, secret)
    assert "ghp_hidden" not in caplog.text
    assert pickle.loads(pickle.dumps(secret)) == secret


def test_signed_tokens_carry_the_user_until_they_expire():
    token = sign_user("u1", ttl=60, now=1000, secret_key=KEY)
    assert verify_user(token, now=1059, secret_key=KEY) == "u1"
    with pytest.raises(TokenError, match="expired"):
        verify_user(token, now=1060, secret_key=KEY)


@pytest.mark.parametrize(
    "forge",
    [
        lambda t: "",
        lambda t: "garbage",
        lambda t: t.split(".")[0] + ".",
        lambda t: t.split(".")[0] + ".AAAA",
        lambda t: sign_user("u1", ttl=60, now=1000, secret_key=OTHER),
        # another user's payload with u1's signature
        lambda t: (
            sign_user("u2", ttl=60, now=1000, secret_key=KEY).split(".")[0] + "." + t.split(".")[1]
        ),
    ],
)
def test_forged_or_altered_tokens_are_refused(forge):
    token = sign_user("u1", ttl=60, now=1000, secret_key=KEY)
    with pytest.raises(TokenError):
        verify_user(forge(token), now=1001, secret_key=KEY)


# ------------------------------------------------------ key sources and sealed credentials


def test_a_key_file_is_read_where_it_is_loaded_and_never_shown(tmp_path):
    path = tmp_path / "blogflow.key"
    path.write_text(KEY + "\n")
    source = KeySource.file(path)
    assert source.load() == KEY
    assert KEY not in repr(source) and str(path) in repr(source)
    assert KEY.encode() not in pickle.dumps(source)
    assert pickle.loads(pickle.dumps(source)) == source


def test_an_unreadable_or_short_key_file_is_one_line(tmp_path):
    with pytest.raises(TokenError, match=r"cannot read the secret key file .*missing: No such"):
        KeySource.file(tmp_path / "missing").load()
    (tmp_path / "short").write_text("short")
    with pytest.raises(TokenError, match="at least 32 characters"):
        KeySource.file(tmp_path / "short").load()


def test_secret_manager_names_are_checked_and_the_library_is_optional():
    with pytest.raises(ValueError, match="projects/PROJECT/secrets/SECRET/versions/VERSION"):
        KeySource.secret_manager("projects/p/secrets/s")
    source = KeySource.secret_manager("projects/p/secrets/s/versions/latest")
    assert repr(source) == "KeySource('secret-manager', 'projects/p/secrets/s/versions/latest')"
    # google-cloud-secret-manager is not installed here (the gcp-secrets extra)
    with pytest.raises(TokenError) as caught:
        source.load()
    assert str(caught.value) == (
        "--secret-key-secret needs google-cloud-secret-manager where the key is read: "
        "pip install 'blogflow[gcp-secrets]', or use --secret-key-file"
    )


def test_a_key_in_memory_opens_in_this_process_only():
    source = KeySource.in_memory(KEY)
    assert source.in_process and source.load() == KEY
    assert KEY not in repr(source) and KEY.encode() not in pickle.dumps(source)
    elsewhere = KeySource(KeySource.PROCESS, "f" * 32)  # a handle this process never made
    with pytest.raises(TokenError, match="--secret-key-file PATH") as caught:
        elsewhere.load()
    assert "\n" not in str(caught.value)
    with pytest.raises(TokenError, match="at least 32"):
        KeySource.in_memory("short")


def test_sealed_values_show_only_their_shown_form_and_open_with_their_key(tmp_path):
    url = "mongodb://bob:hunter2-pw@db:27017/"
    sealed = seal(url, KeySource.in_memory(KEY), shown="mongodb://bob:***@db:27017/")
    assert is_sealed(sealed) and "hunter2-pw" not in sealed
    assert shown(sealed) == "mongodb://bob:***@db:27017/" and shown(url) == url
    assert unseal(sealed) == url and unseal(url) == url and not is_sealed(url)
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(TokenError, match=r"sealed value of mongodb://bob:\*\*\*@db") as caught:
        unseal(tampered)
    assert "hunter2-pw" not in str(caught.value)
    path = tmp_path / "key"
    path.write_text(OTHER)
    from_file = seal("s3cr3t", KeySource.file(path), shown="***")
    assert unseal(from_file) == "s3cr3t"
