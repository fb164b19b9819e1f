"""The model's style list as the ingress knows it: asked once at start-up, refreshed when stale.

It is never asked on the request path: asking the model deployment queues behind inference, so
a first request that had to ask would wait for a whole batch. However many requests wait for
the first answer, the model is asked once at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from .errors import Overloaded, StyleNotReady, UnknownStyle
from .results import StyleStatus

log = logging.getLogger("ray.serve")

STYLES_FRESH_S = 5.0  # how long the model's style list is trusted
STYLES_WAIT_S = 5.0  # how long a request waits for the first list

Fetch = Callable[[], Awaitable[list[StyleStatus]]]


class StyleList:
    """The statuses `fetch` (the model deployment) last gave, and each ready style's identity."""

    def __init__(
        self,
        fetch: Fetch,
        *,
        fresh_s: float = STYLES_FRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetch = fetch
        self.fresh_s = fresh_s
        self.clock = clock
        self.statuses: list[StyleStatus] = []
        self._fetched_at: float | None = None
        self._refresh: asyncio.Task[None] | None = None

    def refresh(self, wait_s: float) -> None:
        """Ask now, in the background, unless an ask is under way."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._ask(wait_s))

    async def get(self, *, wait_s: float = STYLES_WAIT_S) -> list[StyleStatus]:
        """The statuses; while none are known yet, waits up to `wait_s` for the ask under way."""
        if self._fetched_at is None or self.clock() - self._fetched_at > self.fresh_s:
            self.refresh(wait_s)
        if not self.statuses and self._refresh is not None:
            with contextlib.suppress(TimeoutError):  # one ask at a time, however many wait
                await asyncio.wait_for(asyncio.shield(self._refresh), wait_s)
        return self.statuses

    async def weights_identity(self, style: str, *, wait_s: float) -> str:
        """The git blob SHA-1 of `style`'s weights; raises if the style cannot serve."""
        for status in await self.get(wait_s=wait_s):
            if status.name == style:
                if not status.ready or status.sha1 is None:
                    raise StyleNotReady(f"style {style!r} is not ready: {status.error}")
                return status.sha1
        if self.statuses:
            raise UnknownStyle(f"unknown style {style!r}")
        raise Overloaded("the model deployment is still starting; retry in a few seconds")

    async def _ask(self, wait_s: float) -> None:
        try:
            self.statuses = await asyncio.wait_for(self.fetch(), wait_s)
            self._fetched_at = self.clock()
        except Exception as exc:  # busy, restarting or unreachable: asked again when needed
            log.warning("model deployment did not list its styles: %s", type(exc).__name__)
