"""Warming the examples at start-up: every example in every ready style, through the line.

One at a time, and each sent only once nobody is queued for the model (again if the line filled
meanwhile): warming never crowds out real requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .errors import AnimeGANError, Overloaded, UnknownExample
from .examples import Example
from .results import Stylized
from .styles import StyleList

log = logging.getLogger("ray.serve")

WARM_POLL_S = 1.0  # how often the warming looks whether the line has emptied

Queued = Callable[[], Awaitable[int | None]]  # entries waiting in the line; None: unknown
Stylize = Callable[[bytes, str], Awaitable[Stylized]]  # an example's data in one style


class Warming:
    """The examples, and the result key of each (example, style) warmed so far."""

    def __init__(
        self,
        examples: list[Example],
        *,
        styles: StyleList,
        queued: Queued,
        stylize: Stylize,
        poll_s: float = WARM_POLL_S,
    ) -> None:
        self.examples = examples
        self.styles = styles
        self.queued = queued
        self.stylize = stylize
        self.poll_s = poll_s
        self.warmed: dict[tuple[str, str], str] = {}  # (example, style) -> result key

    async def run(self) -> None:
        """Warm them all, once the model deployment lists its styles."""
        while True:  # the model deployment may still be starting
            statuses = await self.styles.get()
            if statuses:
                break
            await asyncio.sleep(self.poll_s)
        for example in self.examples:
            for style in (s.name for s in statuses if s.ready):
                await self._warm(example, style)
        log.info("%d examples warmed", len(self.examples))

    def results(self, name: str) -> dict[str, str]:
        """style -> result key, for the styles `name` is warmed in."""
        return {style: key for (example, style), key in self.warmed.items() if example == name}

    def example(self, name: str) -> Example:
        """One example picture, by name."""
        for example in self.examples:
            if example.name == name:
                return example
        raise UnknownExample(f"no example {name[:100]!r}; GET /v1/examples lists them")

    async def _warm(self, example: Example, style: str) -> None:
        """One example in one style, sent once the line is empty (again if it filled meanwhile)."""
        while True:
            if await self.queued() == 0:
                try:
                    result = await self.stylize(example.data, style)
                except Overloaded:
                    pass  # the line filled meanwhile: later
                except AnimeGANError as exc:
                    log.warning("example %s (%s): %s", example.name, style, exc.message)
                    return
                else:
                    self.warmed[(example.name, style)] = result.key
                    return
            await asyncio.sleep(self.poll_s)
