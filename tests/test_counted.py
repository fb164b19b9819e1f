"""Counting answers for the metrics: what a block answered, a refusal's code, a fault."""

from __future__ import annotations

import pytest

from deployments.core.counted import counted
from deployments.core.errors import TooManyJobs


class Observed(list[tuple[str, str, int]]):
    def __call__(self, route: str, outcome: str, status: int, seconds: float) -> None:
        assert seconds >= 0
        self.append((route, outcome, status))


def test_an_answer_is_counted_as_the_block_set_it() -> None:
    observed = Observed()
    with counted(observed, "handle") as answer:
        answer.outcome = "shared"
    with counted(observed, "results"):
        pass
    assert observed == [("handle", "shared", 200), ("results", "ok", 200)]


def test_a_refusal_is_counted_by_its_code_and_status_and_raised() -> None:
    observed = Observed()
    with pytest.raises(TooManyJobs), counted(observed, "handle_jobs"):
        raise TooManyJobs("you have 16 jobs waiting")
    assert observed == [("handle_jobs", "too_many_jobs", 429)]


def test_a_fault_is_counted_as_internal() -> None:
    observed = Observed()
    with pytest.raises(KeyError), counted(observed, "stylize"):
        raise KeyError("bug")
    assert observed == [("stylize", "internal", 500)]
