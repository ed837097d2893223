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
- :class:`KeySource`: where a pipeline's workers read the secret key -- a file
  (``--secret-key-file``), a Google Secret Manager version (``--secret-key-secret``) or
  the launching process's memory (``BLOGFLOW_SECRET_KEY`` at launch, for workers in that
  process only). It is a reference: pickled into a DoFn, it carries no key.
- :func:`seal` / :func:`unseal`: a credential a worker needs (a URL with a password, an
  AWS secret key) travels through options and the job graph only as a Fernet token made
  with a key derived from the secret key (its own HKDF label) plus the key's
  :class:`KeySource`, and is opened on the worker. :func:`shown` is what may be displayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "SECRET_KEY_VARIABLE",
    "SECRET_NAME_PATTERN",
    "KeySource",
    "Secret",
    "TokenError",
    "decrypt_token",
    "encrypt_token",
    "is_sealed",
    "seal",
    "shown",
    "sign_user",
    "unseal",
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
    # None: the command line and tests, which run where BLOGFLOW_SECRET_KEY is set; a
    # pipeline's workers always pass the key their KeySource loaded.
    key = secret_key if secret_key is not None else os.environ.get(SECRET_KEY_VARIABLE)
    if not key:
        raise TokenError(f"{SECRET_KEY_VARIABLE} is not set; blogflow needs it for secrets")
    _check_key(key, SECRET_KEY_VARIABLE)
    return key.encode()


def _check_key(key: str, where: str) -> None:
    if len(key) < _MIN_KEY_LENGTH:
        raise TokenError(f"{where} must be at least {_MIN_KEY_LENGTH} characters")


#: A Secret Manager secret version, as ``--secret-key-secret`` takes it.
SECRET_NAME_PATTERN = re.compile(r"projects/[^/\s]+/secrets/[^/\s]+/versions/[^/\s]+")

#: Keys of :class:`KeySource` s of the kind ``process``, by handle: this process only.
_PROCESS_KEYS: dict[str, str] = {}
#: Keys loaded from files and Secret Manager, by (kind, ref): read once per process.
_LOADED: dict[tuple[str, str], str] = {}
_KEYS_LOCK = threading.Lock()


class KeySource:
    """Where blogflow's secret key is read: a reference that never holds the key.

    Kinds:

    - ``file``: a file of the key (one line; surrounding whitespace is ignored), read
      where :meth:`load` runs: every worker must have it at that path.
    - ``secret-manager``: a Google Secret Manager version,
      ``projects/P/secrets/S/versions/V``, read with ``google-cloud-secret-manager``
      (``pip install 'blogflow[gcp-secrets]'``) and the worker's Google credentials.
    - ``process``: a key held in this process's memory (:meth:`in_memory`); pickled it is a
      random handle, so it opens only in the process that made it -- the launcher, and the
      workers that run inside it (FnApiRunner, ``LOOPBACK``).

    Instances compare, hash and pickle by ``(kind, ref)``; ``repr`` names the file or the
    secret version, never a key.
    """

    FILE = "file"
    SECRET_MANAGER = "secret-manager"
    PROCESS = "process"
    KINDS = (FILE, SECRET_MANAGER, PROCESS)

    __slots__ = ("kind", "ref")

    def __init__(self, kind: str, ref: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown secret key source {kind!r}; choose from {self.KINDS}")
        if not ref:
            raise ValueError(f"a {kind} secret key source needs a reference")
        if kind == self.SECRET_MANAGER and not SECRET_NAME_PATTERN.fullmatch(ref):
            raise ValueError(
                f"--secret-key-secret must name a secret version, "
                f"projects/PROJECT/secrets/SECRET/versions/VERSION, got {ref!r}"
            )
        self.kind = kind
        self.ref = ref

    @classmethod
    def file(cls, path: str | os.PathLike[str]) -> KeySource:
        """The key in the file at ``path`` (made absolute: workers read it there)."""
        return cls(cls.FILE, os.path.abspath(os.fspath(path)))

    @classmethod
    def secret_manager(cls, name: str) -> KeySource:
        """The key in the Secret Manager version ``projects/P/secrets/S/versions/V``."""
        return cls(cls.SECRET_MANAGER, name.strip())

    @classmethod
    def in_memory(cls, key: str, *, where: str = SECRET_KEY_VARIABLE) -> KeySource:
        """``key``, kept in this process's memory under a random handle.

        Raises:
            TokenError: if the key is shorter than 32 characters (``where`` names it).
        """
        _check_key(key, where)
        handle = secrets.token_hex(16)
        with _KEYS_LOCK:
            _PROCESS_KEYS[handle] = key
        return cls(cls.PROCESS, handle)

    @property
    def in_process(self) -> bool:
        """Whether only this process can load the key."""
        return self.kind == self.PROCESS

    def load(self) -> str:
        """The key, read from the source (a file or a secret once per process).

        Raises:
            TokenError: one line naming the source and the fix; never the key.
        """
        if self.kind == self.PROCESS:
            with _KEYS_LOCK:
                key = _PROCESS_KEYS.get(self.ref)
            if key is None:
                raise TokenError(
                    "the secret key was given to the launching process (BLOGFLOW_SECRET_KEY), "
                    "which this worker is not: launch with --secret-key-file PATH or "
                    "--secret-key-secret projects/P/secrets/S/versions/V"
                )
            return key
        with _KEYS_LOCK:
            key = _LOADED.get((self.kind, self.ref))
        if key is None:
            key = self._read_file() if self.kind == self.FILE else self._read_secret()
            with _KEYS_LOCK:
                _LOADED[(self.kind, self.ref)] = key
        return key

    def _read_file(self) -> str:
        try:
            key = Path(self.ref).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise TokenError(f"cannot read the secret key file {self.ref}: {reason}") from None
        if not key:
            raise TokenError(f"the secret key file {self.ref} is empty")
        _check_key(key, f"the secret key in {self.ref}")
        return key

    def _read_secret(self) -> str:
        try:
            from google.cloud import secretmanager  # type: ignore[attr-defined]
        except ImportError:
            raise TokenError(
                "--secret-key-secret needs google-cloud-secret-manager where the key is read: "
                "pip install 'blogflow[gcp-secrets]', or use --secret-key-file"
            ) from None
        try:
            client = secretmanager.SecretManagerServiceClient()
            payload = client.access_secret_version(name=self.ref).payload.data
            key = bytes(payload).decode("utf-8").strip()
        except Exception as error:  # noqa: BLE001 - any client error, said in one line
            raise TokenError(
                f"cannot read the secret key from {self.ref}: {type(error).__name__}"
            ) from None
        _check_key(key, f"the secret key in {self.ref}")
        return key

    def __repr__(self) -> str:
        if self.kind == self.PROCESS:
            return "KeySource('process')"
        return f"KeySource({self.kind!r}, {self.ref!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeySource) and (self.kind, self.ref) == (other.kind, other.ref)

    def __hash__(self) -> int:
        return hash(("KeySource", self.kind, self.ref))

    def __reduce__(self) -> tuple[type[KeySource], tuple[str, str]]:
        return (KeySource, (self.kind, self.ref))


#: A sealed value reads ``<shown> <blogflow-sealed:v1:<source>:<Fernet token>>``.
_SEALED = " <blogflow-sealed:v1:"


def _sealing_fernet(key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(_derive(key, b"blogflow worker credentials")))


def seal(value: str, source: KeySource, *, shown: str) -> str:
    """``value`` sealed for a pipeline's workers: the string ``<shown> <blogflow-sealed:v1:
    SOURCE:TOKEN>``, with ``shown`` what may be displayed (e.g. the URL with its password as
    ``***``), SOURCE the :class:`KeySource` and TOKEN a Fernet token of ``value``;
    :func:`unseal` opens it where ``source`` loads.

    Raises:
        TokenError: if the key cannot be loaded here.
    """
    if not value:
        raise TokenError("cannot seal an empty value")
    token = _sealing_fernet(source.load()).encrypt(value.encode()).decode("ascii")
    meta = _b64(json.dumps([source.kind, source.ref], separators=(",", ":")).encode())
    return f"{shown}{_SEALED}{meta}:{token}>"


def is_sealed(value: object) -> bool:
    """Whether ``value`` is a string :func:`seal` made."""
    return isinstance(value, str) and value.endswith(">") and _SEALED in value


def _parts(value: str) -> tuple[KeySource, str, str]:
    display, _, sealed = value.rpartition(_SEALED)
    meta, _, token = sealed[:-1].partition(":")
    try:
        kind, ref = json.loads(_unb64(meta))
        return KeySource(kind, ref), display, token
    except (ValueError, TypeError):
        raise TokenError("a sealed value is malformed") from None


def unseal(value: str) -> str:
    """The value :func:`seal` sealed (a string that is not sealed is returned as it is).

    Raises:
        TokenError: if its key cannot be loaded here, or it was altered.
    """
    if not is_sealed(value):
        return value
    source, display, token = _parts(value)
    try:
        return _sealing_fernet(source.load()).decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeError, ValueError):
        raise TokenError(f"the sealed value of {display} cannot be opened with this key") from None


def shown(value: str) -> str:
    """What may be displayed of ``value``: a sealed value's ``shown``, else ``value``."""
    return _parts(value)[1] if is_sealed(value) else value


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
