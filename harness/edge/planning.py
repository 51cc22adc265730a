"""Find the largest batch that fits a memory budget, by a linear estimate and by search.

``measure(batch)`` returns the peak bytes one step at that batch needs (``harness.kinds.plan``
passes the project's memory probe). The estimate fits ``peak = fixed + per_sample * batch`` to a
few small probes and is cheap; the search measures until it brackets the answer and is exact for
any monotone measure. Their ratio says how far the linear model can be trusted.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from harness.errors import OUT_OF_MEMORY

Measure = Callable[[int], int]


class PlanningError(ValueError):
    """The probes cannot support a batch-size estimate; the message says what to change."""


@dataclass(frozen=True)
class Estimate:
    """A linear memory model and the largest batch it allows under the budget."""

    max_batch: int
    fixed_bytes: float
    per_sample_bytes: float
    budget_bytes: int
    probes: tuple[tuple[int, int], ...]  # (batch, peak bytes) as measured


def _release_after_oom() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def estimate_max_batch(measure: Measure, budget_bytes: int, probe_batches: Sequence[int] = (1, 2)) -> Estimate:
    """Fit fixed + per-sample bytes to ``measure`` at ``probe_batches`` (least squares, exact
    rational arithmetic) and return the largest batch whose predicted peak is within budget."""
    batches = sorted(set(probe_batches))
    if len(batches) < 2 or batches[0] < 1:
        raise PlanningError(f"probe_batches must hold at least two distinct batches >= 1, got {tuple(probe_batches)}")
    probes = []
    for batch in batches:
        try:
            probes.append((batch, int(measure(batch))))
        except OUT_OF_MEMORY as error:
            _release_after_oom()
            raise PlanningError(f"probe batch {batch} ran out of memory ({type(error).__name__}); probe smaller batches") from error
    n = len(probes)
    mean_b = Fraction(sum(b for b, _ in probes), n)
    mean_m = Fraction(sum(m for _, m in probes), n)
    per_sample = sum((b - mean_b) * (m - mean_m) for b, m in probes) / sum((b - mean_b) ** 2 for b, _ in probes)
    if per_sample <= 0:
        raise PlanningError(
            f"peak memory did not grow with batch ({probes}); the probe may be dominated by cached or "
            "resident memory: probe batches further apart, e.g. (1, 8)"
        )
    fixed = mean_m - per_sample * mean_b
    max_batch = max(0, math.floor((budget_bytes - fixed) / per_sample))
    return Estimate(max_batch, float(fixed), float(per_sample), budget_bytes, tuple(probes))


def search_max_batch(measure: Measure, budget_bytes: int, start: int = 1, limit: int = 4096, least: int = 1) -> int:
    """Largest batch in ``[least, limit]`` whose measured peak fits the budget (0: not even ``least``).

    Doubles from ``start`` while batches fit, then bisects between the last fit and the first
    failure. A failure is a peak over budget, ``torch.OutOfMemoryError`` or ``MemoryError``.
    Assumes peak memory does not shrink as the batch grows. ``least`` is the smallest batch
    that can run at all (training with batch norm needs 2), never measured below.
    """
    if not 1 <= least <= start <= limit:
        raise ValueError(f"need 1 <= least <= start <= limit, got least={least}, start={start}, limit={limit}")
    seen: dict[int, bool] = {}

    def fits(batch: int) -> bool:
        if batch not in seen:
            try:
                seen[batch] = int(measure(batch)) <= budget_bytes
            except OUT_OF_MEMORY:
                _release_after_oom()
                seen[batch] = False
        return seen[batch]

    if fits(start):
        low, high = start, start * 2
        while high <= limit and fits(high):
            low, high = high, high * 2
        high = min(high, limit + 1)
    else:
        low, high = least - 1, start
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fits(mid) else (low, mid)
    return low if low >= least else 0

