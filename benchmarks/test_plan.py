"""Batch-size planning: the largest inference and training batch per backbone under a memory budget.

The estimate (fixed + per-sample bytes from two probe batches) is checked by running it, and
compared with the true largest batch found by search; both are recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.matrix.cases import CaseSpec


def test_batch_plan(plan_case: CaseSpec, measure_plan: Callable[[], dict[str, Any]]) -> None:
    record = measure_plan()
    for what in ("inference", "train"):
        if record[f"plan_{what}_searched_max_batch"] == 0:  # not even the smallest batch fits the budget
            assert record[f"plan_{what}_estimated_max_batch"] == 0, f"the {what} estimate is above 0 where no batch fits"
            continue
        assert record[f"plan_{what}_estimate_fits"], f"the {what} estimate did not fit when run"
        assert record[f"plan_{what}_searched_over_estimate"] <= 2.0, f"the {what} estimate is under half the searched maximum"
