"""Latency: how many rounds to time, the timing loop, and the statistics of the samples.

Inside pytest the rounds are timed by pytest-benchmark itself (``benchmark.pedantic``), with
the device synchronised in the untimed ``setup`` and at the end of the timed step. Outside a
timing pytest-benchmark session (a notebook, an xdist worker, where pytest-benchmark disables
itself) :func:`time_rounds` runs the same protocol: warm-up rounds, then ``setup`` untimed and
``step`` timed with ``time.perf_counter``, one call per round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

# Warm-up runs until both bounds are met: 3 calls let lazy init and allocator growth settle;
# 0.1 s lets CPU frequency governors and cuDNN autotuning settle.
_WARMUP_CALLS = 3
_WARMUP_S = 0.1
# 20 rounds is the least that gives a usable p90 and a rank test with power against a 25%
# slowdown; 2000 caps the JSON size of the raw samples.
MIN_ROUNDS = 20
MAX_ROUNDS = 2000


@dataclass(frozen=True)
class RoundPlan:
    """How many untimed warm-up and timed rounds a case runs."""

    warmup_rounds: int
    rounds: int
    estimate_s: float


def plan_rounds(step: Callable[[], object], setup: Callable[[], object], budget_s: float) -> RoundPlan:
    """Warm ``step`` up and choose a round count that fills ``budget_s`` seconds of timing.

    The warm-up calls run here (they are not timed by anyone); the returned plan asks the
    timer for zero further warm-up rounds.
    """
    calls, spent, last = 0, 0.0, math.inf
    while calls < _WARMUP_CALLS or spent < _WARMUP_S:
        setup()
        start = time.perf_counter()
        step()
        last = time.perf_counter() - start
        spent += last
        calls += 1
    rounds = int(min(MAX_ROUNDS, max(MIN_ROUNDS, budget_s / max(last, 1e-9))))
    return RoundPlan(warmup_rounds=0, rounds=rounds, estimate_s=last)


def time_rounds(step: Callable[[], object], setup: Callable[[], object], plan: RoundPlan) -> list[float]:
    """The timing protocol of ``benchmark.pedantic`` for use outside a timing pytest session."""
    for _ in range(plan.warmup_rounds):
        setup()
        step()
    samples: list[float] = []
    for _ in range(plan.rounds):
        setup()
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return samples


@dataclass(frozen=True)
class LatencyStats:
    """Raw per-call latencies (seconds) of a batch, with statistics computed on demand."""

    samples_s: Sequence[float]
    batch_size: int

    def __post_init__(self) -> None:
        if not self.samples_s:
            raise ValueError("no latency samples: the case ran no timed round")

    @cached_property
    def _ms(self) -> np.ndarray:
        return np.asarray(self.samples_s, dtype=np.float64) * 1e3

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile latency in ms (linear interpolation between samples)."""
        return float(np.percentile(self._ms, q))

    @property
    def p50_ms(self) -> float:
        return self.percentile_ms(50)

    @property
    def mean_ms(self) -> float:
        return float(self._ms.mean())

    @property
    def throughput_ips(self) -> float:
        """Images per second at the median latency: the sustained rate of back-to-back batches."""
        return self.batch_size / (self.p50_ms / 1e3)

    def as_record(self) -> dict[str, object]:
        """The latency keys of the JSON contract."""
        return {
            "latency_p50_ms": self.p50_ms,
            "latency_p90_ms": self.percentile_ms(90),
            "latency_p99_ms": self.percentile_ms(99),
            "latency_mean_ms": self.mean_ms,
            "throughput_ips": self.throughput_ips,
            "rounds": len(self.samples_s),
            "latency_samples_ms": [round(float(v), 6) for v in self._ms],
        }
