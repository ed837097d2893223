"""Secrets: users' GitHub tokens encrypted at rest, and signed browser tokens.

Both derive their keys from one secret, ``BLOGFLOW_SECRET_KEY`` (any string of at least
32 characters; ``python -c "import secrets; print(secrets.token_urlsafe(48))"`` makes
one), with HKDF and a different label each, so a key of one never serves the other.

- :func:`encrypt_token` / :func:`decrypt_token`: Fernet (AES-128-CBC + HMAC-SHA256, from
  ``cryptography``) for the GitHub tokens stored in MongoDB ``users``.
- :func:`sign_user` / :func:`verify_user`: ``<payload>.<signature>``, an HMAC-SHA256 over
  the user id and an expiry, for browsers connecting to the notifier.
- :class:`Secret`: holds a plaintext token; its ``repr`` and ``str`` never show it, so it
  cannot leak through logs, exceptions or display data by accident.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "SECRET_KEY_VARIABLE",
    "Secret",
    "TokenError",
    "decrypt_token",
    "encrypt_token",
    "sign_user",
    "verify_user",
]

#: The environment variable that holds blogflow's secret key.
SECRET_KEY_VARIABLE = "BLOGFLOW_SECRET_KEY"
_MIN_KEY_LENGTH = 32


class TokenError(ValueError):
    """A token could not be used: missing key, forged, tampered with or expired.

    The message never contains the token or the key.
    """


class Secret:
    """A secret string that does not show itself: ``repr`` and ``str`` give ``'***'``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise TokenError("a secret must not be empty")
        self._value = value

    def reveal(self) -> str:
        """The plaintext, for the one call that needs it (e.g. a GitHub client)."""
        return self._value

    def digest(self) -> str:
        """A SHA-256 hex digest: tells secrets apart (e.g. as a cache key) without
        keeping them."""
        return hashlib.sha256(self._value.encode()).hexdigest()

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        return hash(("Secret", hashlib.sha256(self._value.encode()).digest()))

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # Pickled (e.g. into a Beam bundle) as itself, still hidden from repr.
        return (Secret, (self._value,))


def _secret_key(secret_key: str | None) -> bytes:
    key = secret_key if secret_key is not None else os.environ.get(SECRET_KEY_VARIABLE)
    if not key:
        raise TokenError(f"{SECRET_KEY_VARIABLE} is not set; blogflow needs it for secrets")
    if len(key) < _MIN_KEY_LENGTH:
        raise TokenError(f"{SECRET_KEY_VARIABLE} must be at least {_MIN_KEY_LENGTH} characters")
    return key.encode()


def _derive(secret_key: str | None, label: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(
        _secret_key(secret_key)
    )


def _fernet(secret_key: str | None) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derive(secret_key, b"blogflow github token")))


def encrypt_token(token: Secret | str, *, secret_key: str | None = None) -> str:
    """Encrypts a token for storage; a new ciphertext every call (random IV)."""
    plain = token.reveal() if isinstance(token, Secret) else token
    if not plain:
        raise TokenError("cannot store an empty token")
    return _fernet(secret_key).encrypt(plain.encode()).decode("ascii")


def decrypt_token(stored: str, *, secret_key: str | None = None) -> Secret:
    """Decrypts a stored token. Raises TokenError if it was made with another key or altered."""
    try:
        return Secret(_fernet(secret_key).decrypt(stored.encode("ascii")).decode())
    except (InvalidToken, UnicodeError, ValueError):
        raise TokenError("the stored token cannot be decrypted with this secret key") from None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_user(
    user_id: str, *, ttl: float = 3600, now: float | None = None, secret_key: str | None = None
) -> str:
    """A token that lets a browser act as ``user_id`` for ``ttl`` seconds."""
    if not user_id:
        raise TokenError("a token needs a user id")
    expires = int((time.time() if now is None else now) + ttl)
    payload = _b64(json.dumps({"u": user_id, "exp": expires}, separators=(",", ":")).encode())
    mac = hmac.new(_derive(secret_key, b"blogflow notifier"), payload.encode(), hashlib.sha256)
    return f"{payload}.{_b64(mac.digest())}"


def verify_user(token: str, *, now: float | None = None, secret_key: str | None = None) -> str:
    """The user id a token was signed for. Raises TokenError if forged, altered or expired."""
    payload, dot, signature = (token or "").partition(".")
    if not dot or not payload or not signature:
        raise TokenError("malformed token")
    mac = hmac.new(_derive(secret_key, b"blogflow notifier"), payload.encode(), hashlib.sha256)
    try:
        given = _unb64(signature)
    except ValueError:
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(mac.digest(), given):
        raise TokenError("bad signature")
    try:
        claims = json.loads(_unb64(payload))
        user_id, expires = claims["u"], claims["exp"]
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed token") from None
    if not isinstance(user_id, str) or not isinstance(expires, int):
        raise TokenError("malformed token")
    if (time.time() if now is None else now) >= expires:
        raise TokenError("token expired")
    return user_id
