"""After the line refuses one request, refuse the next ones here for a moment, without asking.

A refusal made here costs no call to the line's actor, and the line cannot drain meanwhile: a
second of holding is far shorter than any wait the line refuses.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .errors import Overloaded

SHED_HOLD_S = 1.0


class ShedHold:
    """Repeats the line's last refusal for `hold_s` after it was made."""

    def __init__(
        self, *, hold_s: float = SHED_HOLD_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_s = hold_s
        self.clock = clock
        self.refused = 0  # refusals made here, inside a hold
        self._last: Overloaded | None = None
        self._until = 0.0

    def start(self, refusal: Overloaded) -> None:
        """The line has just refused with `refusal`: hold for `hold_s`."""
        self._last = refusal
        self._until = self.clock() + self.hold_s

    def holding(self) -> bool:
        """Whether a refusal of the line's is being repeated now (a query: refuses nothing)."""
        return self._last is not None and self.clock() < self._until

    def check(self) -> None:
        """Raise the line's last refusal again while the hold lasts (counted as made here)."""
        last = self._last
        if last is not None and self.holding():
            self.refused += 1
            raise Overloaded(last.message, retry_after_s=last.retry_after_s)
