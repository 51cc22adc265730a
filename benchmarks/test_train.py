"""Small-data training: backbone × dataset subset × device (× train batch size × precision).

Each case trains from scratch with the family's default recipe on a stratified subset and
records accuracy (top-1/top-5/macro-F1, per class, across seeds), convergence and cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.cases import CaseSpec


def test_train(train_case: CaseSpec, measure_training: Callable[[], dict[str, Any]]) -> None:
    record = measure_training()
    assert 0.0 <= record["top1"] <= 100.0 and record["train_size"] > 0
