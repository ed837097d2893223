"""Secrets: encrypted GitHub tokens, signed browser tokens, and a Secret that hides itself."""

import logging
import pickle

import pytest

from blogflow.tokens import (
    Secret,
    TokenError,
    decrypt_token,
    encrypt_token,
    sign_user,
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
