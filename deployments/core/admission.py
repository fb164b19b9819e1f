"""Admission of cache misses: shed a request before any work when the model cannot take it.

The model deployment refuses work past its queue bound (BackPressureError), but only after
the ingress has claimed the key and decoded the picture for it. Under overload most requests
end that way, and that wasted work halves what the machine serves. So the ingress remembers
how many of its calls were running when the model last refused one, and for a short while
refuses at once when as many are running again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Admission:
    """Counts a replica's model calls and remembers the level at which the model refused."""

    def __init__(self, memory_s: float = 1.0) -> None:
        self.memory_s = memory_s
        self.running = 0
        self.shed = 0
        self._refused_at: float | None = None
        self._refused_level = 0

    def admit(self, now: float | None = None) -> bool:
        """False if the model refused a call moments ago with as many running as now."""
        now = time.monotonic() if now is None else now
        full = (self._refused_at is not None and now - self._refused_at < self.memory_s
                and self.running >= self._refused_level)
        self.shed += full
        return not full

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one model call."""
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1

    def refused(self, now: float | None = None) -> None:
        """Inside `call()`: the model refused this call (its own slot is not capacity)."""
        self._refused_at = time.monotonic() if now is None else now
        self._refused_level = self.running - 1
