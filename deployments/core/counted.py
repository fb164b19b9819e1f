"""One way of counting answers for the metrics, for HTTP routes and handle calls alike."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .errors import AnimeGANError

Observe = Callable[[str, str, int, float], None]  # (route, outcome, HTTP status, seconds)


@dataclass
class Answer:
    """What the counted block answered: its outcome (a cache outcome, `queued`, `ok`) and status."""

    outcome: str = "ok"
    status: int = 200


@contextlib.contextmanager
def counted(observe: Observe, route: str) -> Iterator[Answer]:
    """Count and time the block under `route`: as the block sets its `Answer`, or by the
    refusal's code and status, or as `internal` (500) for a fault."""
    start = time.perf_counter()
    answer = Answer()
    try:
        yield answer
    except AnimeGANError as exc:
        observe(route, exc.code, exc.http_status, time.perf_counter() - start)
        raise
    except Exception:
        observe(route, "internal", 500, time.perf_counter() - start)
        raise
    observe(route, answer.outcome, answer.status, time.perf_counter() - start)
