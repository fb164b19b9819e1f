"""Work a request need not wait for (publishing a result, settling a claim), run beside it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    """Tasks started for their effect, each referenced until it ends (asyncio keeps only a
    weak reference: an unreferenced task can vanish before it runs)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Until every task started so far, and any they start, has ended."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
