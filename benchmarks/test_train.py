"""Small-data training: backbone (and weights) × dataset subset × protocol × device (× train batch,
resolution, precision).

Each case uses the backbone as its protocol says (from scratch, fine-tuned from pretrained
weights, a linear probe or k-NN on frozen features) on a stratified subset, and records accuracy
(top-1/top-5/macro-F1, per class, across seeds), convergence and cost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.matrix.cases import CaseSpec


def test_train(train_case: CaseSpec, measure_training: Callable[[], dict[str, Any]]) -> None:
    record = measure_training()
    assert 0.0 <= record["top1"] <= 100.0 and record["train_size"] > 0
