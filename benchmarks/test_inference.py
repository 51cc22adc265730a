"""Inference profiling: backbone × device × batch × resolution × precision (× runtime).

Each case records params, GMACs, peak memory, and latency timed by pytest-benchmark
(p50/p90/p99, throughput) into the run's JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.matrix.cases import CaseSpec


def test_inference(inference_case: CaseSpec, measure_inference: Callable[[], dict[str, Any]]) -> None:
    record = measure_inference()
    assert record["latency_p50_ms"] > 0 and record["params"] > 0
