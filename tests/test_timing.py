"""Latency statistics and the round plan, on known samples (no clock in the assertions)."""

from __future__ import annotations

import pytest

from harness.measure.timing import MAX_ROUNDS, MIN_ROUNDS, LatencyStats, RoundPlan, plan_rounds, time_rounds


def test_percentiles_and_throughput_of_known_samples() -> None:
    stats = LatencyStats([i / 1000 for i in range(1, 101)], batch_size=32)  # 1..100 ms
    record = stats.as_record()
    assert record["latency_p50_ms"] == pytest.approx(50.5)
    assert record["latency_p90_ms"] == pytest.approx(90.1)
    assert record["latency_p99_ms"] == pytest.approx(99.01)
    assert record["latency_mean_ms"] == pytest.approx(50.5)
    assert record["throughput_ips"] == pytest.approx(32 / 0.0505)
    assert record["rounds"] == 100 and record["latency_samples_ms"][:3] == [1.0, 2.0, 3.0]


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no latency samples"):
        LatencyStats([], batch_size=1)


def test_plan_warms_up_and_bounds_rounds() -> None:
    calls = {"setup": 0, "step": 0}
    plan = plan_rounds(lambda: calls.__setitem__("step", calls["step"] + 1), lambda: calls.__setitem__("setup", calls["setup"] + 1), budget_s=1e-9)
    assert plan.rounds == MIN_ROUNDS and plan.warmup_rounds == 0
    assert calls["step"] >= 3 and calls["setup"] == calls["step"]
    assert plan_rounds(lambda: None, lambda: None, budget_s=1e6).rounds == MAX_ROUNDS


def test_time_rounds_calls_setup_before_every_timed_step() -> None:
    order: list[str] = []
    samples = time_rounds(lambda: order.append("step"), lambda: order.append("setup"), RoundPlan(warmup_rounds=1, rounds=3, estimate_s=0.0))
    assert len(samples) == 3 and all(s >= 0 for s in samples)
    assert order == ["setup", "step"] * 4
