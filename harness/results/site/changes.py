"""Change points in one comparable stretch of a metric: the runs where its level steps.

Method: ruptures' ``KernelCPD`` with the linear kernel, which is the least-squares (``l2``)
segmentation solved exactly by PELT for a penalty, in ruptures' C code: a series of 200 runs
takes a fraction of a millisecond, where ruptures' pure-Python ``Pelt(model="l2")`` takes about
a second, too slow for a site of hundreds of cases. Exact PELT rather than ``Binseg``: a greedy
binary split can place the first cut between two real steps and keep it. Not asv's step
detection (``asv.step_detect``): the same idea (an L1 Potts fit with a noise-scaled penalty),
but it would bring asv itself into the install for one function.

The penalty is scaled by the noise, so one rule fits latency in milliseconds and top-1 in
percent. The noise of a series is its run-to-run spread, estimated robustly from the first
differences (1.4826 × their median absolute value / √2: a step moves one difference only, so
the estimate ignores it), floored at :data:`REL_FLOOR` of the series' level. On the values in
units of that noise, the penalty per change point is ``PENALTY × ln(n)``. A fit's neighbouring
levels (segment medians) closer than :data:`MIN_STEP` noise units are then joined: a
step no larger than the noise is not worth a mark.

Calibration (``harness.results.site.changes.change_points`` on 300 simulated series each, noise
3% of the level): with Gaussian noise, 0.7% of A/A series of 10 runs and none of 30 or 200 runs
get a change point; a 30% step halfway is found at its exact run in 99% of series of 10 and all
of 30 and 200. With heavy-tailed noise (Student t, 3 dof: single runs far off) at most 1% of A/A
series get a mark, and the step is found at its exact run in 93-97%. ``exact`` metrics have
no noise: every change of value is a change point, as compare judges them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import numpy as np
import ruptures

from harness.contract import NoiseClass

# Least run-to-run noise assumed, relative to the series' level: 1%. A pinned, quiet machine still
# drifts a few percent between sessions (contract.py's latency tolerance), and a perfectly flat
# stretch would otherwise make the noise zero and every tiny wobble a step.
REL_FLOOR = 0.01
# Penalty per change point in squared noise units, times ln(runs): 10 keeps A/A series of 10-200
# Gaussian runs at or below 1% false marks (BIC's 2 ln n gives ~15% on 10 runs).
PENALTY = 10.0
# Neighbouring levels closer than 3 noise units are one level: about a one-sided 0.1% z-test.
MIN_STEP = 3.0
# Each level at least 3 runs, whose median is its level: one or two odd runs (a noisy neighbour, a
# p90 that caught the interrupts) are outliers, not a new level. A step shows once 3 runs are past it.
MIN_SIZE = 3


def noise_of(values: Sequence[float]) -> float:
    """The run-to-run noise of ``values``: robust spread of the first differences, floored at
    :data:`REL_FLOOR` of the median level (and above zero)."""
    level = abs(statistics.median(values))
    diffs = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
    spread = 1.4826 * statistics.median(diffs) / math.sqrt(2) if diffs else 0.0
    return max(spread, REL_FLOOR * level, 1e-12)


def change_points(values: Sequence[float], noise: NoiseClass) -> list[int]:
    """Indices into ``values`` where a new level starts (never 0), in increasing order.

    ``values`` must be one comparable stretch (same case, same settings digest). ``exact``
    metrics change wherever a value differs from the one before; ``timed`` and ``seeded`` ones
    where the penalised least-squares fit puts a step (see the module docstring). Fewer than
    ``2 × MIN_SIZE`` runs cannot hold two levels: none.
    """
    if noise == "exact":
        return [i for i in range(1, len(values)) if not math.isclose(values[i], values[i - 1], rel_tol=1e-9)]
    if len(values) < 2 * MIN_SIZE:
        return []
    sigma = noise_of(values)
    signal = np.asarray(values, dtype=float).reshape(-1, 1) / sigma
    ends = [int(e) for e in ruptures.KernelCPD(kernel="linear", min_size=MIN_SIZE).fit(signal).predict(pen=PENALTY * math.log(len(values)))]
    return _join_small_steps(list(values), ends, sigma)[:-1]


def _join_small_steps(values: list[float], ends: list[int], sigma: float) -> list[int]:
    """``ends`` (segment ends, the last = len) less those whose two levels differ by under
    ``MIN_STEP × sigma``, the smallest step first, until every step is larger."""
    while len(ends) > 1:
        starts = [0, *ends[:-1]]
        levels = [statistics.median(values[s:e]) for s, e in zip(starts, ends, strict=True)]
        steps = [abs(b - a) for a, b in zip(levels, levels[1:], strict=False)]
        smallest = min(range(len(steps)), key=steps.__getitem__)
        if steps[smallest] >= MIN_STEP * sigma:
            break
        del ends[smallest]
    return ends
