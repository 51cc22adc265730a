"""Dense work: a linear segmentation probe (BatchNorm + 1x1 conv, DINOv2's) on a frozen backbone's
multi-scale features: backbone (and weights) x segmentation dataset x device x resolution x precision.

Each case records mIoU, pixel accuracy and per-class IoU on the dataset's val split (mean over seeds),
and the latency of backbone + head at the dense resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.matrix.cases import CaseSpec


def test_dense(dense_case: CaseSpec, measure_dense: Callable[[], dict[str, Any]]) -> None:
    record = measure_dense()
    assert 0.0 <= record["miou"] <= 100.0 and record["latency_p50_ms"] > 0
