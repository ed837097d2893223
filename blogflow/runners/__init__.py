"""Runner profiles and the runners blogflow sets up itself (Prism)."""

from __future__ import annotations

__all__ = ["RunnerError"]


class RunnerError(ValueError):
    """A runner that cannot be used as asked; the message is one line naming the fix."""
