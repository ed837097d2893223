"""Bounded waits for tests: poll a condition, never sleep a guess."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["wait_for"]


def wait_for(condition: Callable[[], Any], within: float, what: str, every: float = 0.05) -> Any:
    """Polls ``condition`` until it answers truthy and returns that answer; raises
    AssertionError naming ``what`` once ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        time.sleep(every)
