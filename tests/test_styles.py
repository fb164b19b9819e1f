"""The style list in-process: asked once at a time, trusted while fresh, and its refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from deployments.core.errors import Overloaded, StyleNotReady, UnknownStyle
from deployments.core.results import StyleStatus
from deployments.core.styles import StyleList

T = TypeVar("T")
STATUSES = [
    StyleStatus("paprika", "scenes", ready=True, verified=True, sha1="ab" * 20),
    StyleStatus("celeba_distill", "faces", ready=False, error="the file is cut short"),
]


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 10))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ModelStyles:
    """The model deployment's `styles`: counts its asks; each waits for `gate`; may fail."""

    def __init__(self) -> None:
        self.asks = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.failing = False

    async def __call__(self) -> list[StyleStatus]:
        self.asks += 1
        await self.gate.wait()
        if self.failing:
            raise ConnectionError("the replica is restarting")
        return STATUSES


def test_many_waiting_for_the_first_list_share_one_ask() -> None:
    async def scenario() -> None:
        model = ModelStyles()
        model.gate.clear()
        styles = StyleList(model)
        waiting = [asyncio.create_task(styles.get(wait_s=5)) for _ in range(20)]
        await asyncio.sleep(0.01)
        model.gate.set()
        assert all(found == STATUSES for found in await asyncio.gather(*waiting))
        assert model.asks == 1

    run(scenario)


def test_the_list_is_trusted_while_fresh_then_asked_again_in_the_background() -> None:
    async def scenario() -> None:
        clock = Clock()
        model = ModelStyles()
        styles = StyleList(model, fresh_s=5, clock=clock)
        await styles.get()
        clock.now += 4
        await styles.get()
        assert model.asks == 1
        clock.now += 2
        assert await styles.get() == STATUSES  # answered at once from what it has
        await asyncio.sleep(0.01)
        assert model.asks == 2

    run(scenario)


def test_a_failed_ask_keeps_the_last_list_and_is_tried_again() -> None:
    async def scenario() -> None:
        clock = Clock()
        model = ModelStyles()
        styles = StyleList(model, fresh_s=5, clock=clock)
        await styles.get()
        model.failing = True
        clock.now += 6
        assert await styles.get() == STATUSES
        await asyncio.sleep(0.01)
        assert await styles.get() == STATUSES  # still stale: asked again
        await asyncio.sleep(0.01)
        assert model.asks == 3

    run(scenario)


def test_weights_identity_of_a_ready_style_and_the_refusals_of_the_others() -> None:
    async def scenario() -> None:
        model = ModelStyles()
        styles = StyleList(model)
        assert await styles.weights_identity("paprika", wait_s=1) == "ab" * 20
        with pytest.raises(StyleNotReady, match="cut short"):
            await styles.weights_identity("celeba_distill", wait_s=1)
        with pytest.raises(UnknownStyle):
            await styles.weights_identity("hayao", wait_s=1)

    run(scenario)


def test_before_the_model_answers_a_request_is_told_to_retry() -> None:
    async def scenario() -> None:
        model = ModelStyles()
        model.gate.clear()
        styles = StyleList(model)
        with pytest.raises(Overloaded, match="still starting"):
            await styles.weights_identity("paprika", wait_s=0.05)
        model.gate.set()

    run(scenario)
