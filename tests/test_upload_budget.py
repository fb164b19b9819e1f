"""The upload budget in-process: reservations by declared size, refusals before reading."""

from __future__ import annotations

import pytest

from deployments.core.errors import Overloaded
from deployments.core.upload_budget import UploadBudget


def test_uploads_are_refused_once_the_budget_is_spent_and_taken_again_after() -> None:
    budget = UploadBudget(30, max_upload_bytes=20)
    with budget.reserve(15), budget.reserve(15):
        with pytest.raises(Overloaded) as refused, budget.reserve(1):
            pass
        assert refused.value.retry_after_s == 1.0 and budget.refused == 1
    assert budget.used == 0
    with budget.reserve(None):  # no Content-Length: the upload limit is reserved
        assert budget.used == 20


def test_one_upload_always_fits_and_a_declared_size_counts_no_more_than_the_limit() -> None:
    budget = UploadBudget(5, max_upload_bytes=20)
    with budget.reserve(10**9):
        assert budget.used == 20
