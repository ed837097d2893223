"""Connection URLs made safe to show."""

from __future__ import annotations

__all__ = ["redact_url"]


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***``, for logs and display data."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
