"""The shed hold with a hand-driven clock: it repeats the line's refusal for a moment, no longer."""

from __future__ import annotations

import pytest

from deployments.core.errors import Overloaded
from deployments.core.shed_hold import ShedHold


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_nothing_is_refused_before_the_line_has_refused() -> None:
    hold = ShedHold(clock=Clock())
    hold.check()
    assert not hold.holding() and hold.refused == 0


def test_the_lines_refusal_is_repeated_until_the_hold_ends() -> None:
    clock = Clock()
    hold = ShedHold(hold_s=1.0, clock=clock)
    hold.start(Overloaded("the queue is full (5 waiting); retry later", retry_after_s=7))
    for _ in range(3):
        with pytest.raises(Overloaded) as refused:
            hold.check()
        assert (refused.value.message, refused.value.retry_after_s) == (
            "the queue is full (5 waiting); retry later",
            7,
        )
    assert hold.refused == 3
    clock.now += 1.0
    hold.check()  # over: the next request asks the line again
    assert hold.refused == 3


def test_asking_whether_it_holds_refuses_nothing() -> None:
    hold = ShedHold(clock=Clock())
    hold.start(Overloaded("busy"))
    assert hold.holding() and hold.holding()
    assert hold.refused == 0
