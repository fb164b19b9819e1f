"""The line's measured pace: megapixels of model work per second while any was running."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

WINDOW = 32  # completions the pace is measured over


class Pace:
    """Work done per busy second over the last `WINDOW` completions, and seconds per unit of
    work of one inference (what a running entry's remaining time is estimated from)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._busy_s = 0.0  # time with at least one slot in use
        self._running = 0
        self._changed_at = clock()
        # (busy_s at its end, its duration, its work)
        self._done: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)
        self._work_per_s: float | None = None
        self._seconds_per_work: float | None = None

    def started(self) -> None:
        self._tick()
        self._running += 1

    def stopped(self, duration_s: float | None, work: float) -> None:
        """A slot freed; `duration_s` if it did model work (hits and refusals do not count)."""
        self._tick()
        self._running -= 1
        if duration_s is not None:
            self._done.append((self._busy_s, duration_s, work))
            self._measure()

    def work_per_s(self) -> float | None:
        """Megapixels finished per busy second (all slots together)."""
        return self._work_per_s

    def seconds_per_work(self) -> float | None:
        """Seconds one inference takes per megapixel."""
        return self._seconds_per_work

    def _measure(self) -> None:
        """Both figures, once per completion: the line asks for them far more often."""
        done = self._done
        busy_s = done[-1][0] - done[0][0]
        self._work_per_s = (
            sum(work for _, _, work in list(done)[1:]) / busy_s
            if len(done) >= 2 and busy_s > 0
            else None
        )
        work = sum(w for _, _, w in done)
        self._seconds_per_work = sum(d for _, d, _ in done) / work if work > 0 else None

    def _tick(self) -> None:
        now = self.clock()
        if self._running > 0:
            self._busy_s += now - self._changed_at
        self._changed_at = now
