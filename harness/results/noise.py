"""What a change must clear before it counts: the noise of rounds, of seeds and of sessions.

- Rounds: one session's timed rounds of a case; a one-sided Mann-Whitney U test at :data:`ALPHA`
  says whether the current rounds are slower (or faster) than the baseline's.
- Seeds: an accuracy change must exceed :data:`SEED_NOISE_FACTOR` times the pooled seed std.
- Sessions: within one pytest session the rounds cluster tightly, so the rank test finds a 2%
  shift significant. Between sessions on a shared or virtualised machine the whole case can
  move 10-40% (measured here: 19 registry backbones over 6 smoke runs on a 2-vCPU VM, median
  latency ranging up to 1.68x). The stored runs of the same baseline key, for the same case
  with the same settings, show that spread; a change inside it is not evidence of a regression.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import mannwhitneyu
from scipy.stats import t as student_t

from harness.contract import LATENCY_SAMPLES, METRICS
from harness.results.runs import Run

# 0.01, not 0.05: a full suite gates ~50-100 latency cases, so at 0.05 a quiet machine would still
# raise a significance flag on a few cases per run; the tolerance filter then has to catch them all.
ALPHA = 0.01
# An accuracy drop must exceed twice the pooled seed std: with the usual 3 seeds per side this is
# t = 2*sqrt(3/2) = 2.45 on 4 dof (one-sided p ~ 0.035), a t-test with 2-3 points has almost no power.
SEED_NOISE_FACTOR = 2.0
# Stored runs of a case on the same machine needed before their spread counts as the machine's
# run-to-run noise: three is the least that gives a standard deviation with two degrees of freedom.
HISTORY_MIN = 3
# One-sided level of the run-to-run prediction bound: 0.5%, so a suite of ~20 latency cases
# raises a false alarm from session noise in about one run in ten at worst, usually far fewer.
NOISE_ALPHA = 0.005
# The metrics the history judges: read from the raw latency rounds, worse when they rise (latency).
HISTORY_METRICS = tuple(m.key for m in METRICS.values() if m.samples == LATENCY_SAMPLES and m.better == "lower")
# Relative precision of the smallest flagged shift: far below the 0.1% the compare table shows,
# reached in about 20 rank tests.
_SHIFT_PRECISION = 1e-5


def slower_p(base: Sequence[float], cur: Sequence[float], *, slower: bool = True) -> float:
    """One-sided Mann-Whitney p that the ``cur`` rounds are slower (``slower=False``: faster) than ``base``."""
    return float(mannwhitneyu(cur, base, alternative="greater" if slower else "less").pvalue)


def smallest_flagged_slowdown(base: Sequence[float], cur: Sequence[float]) -> float:
    """The smallest factor ``f`` such that the rounds ``cur`` times ``f`` are significantly slower
    than ``base`` at :data:`ALPHA`; ``inf`` when no factor is (too few rounds for the level).

    Exact on the actual rounds: scaling ``cur`` up only turns pairs in its favour, so the rank
    statistic, and with it the p-value, is monotone in ``f``; bisection finds the step.
    """
    if not base or not cur or min(min(base), min(cur)) <= 0:
        return math.inf
    lo = min(base) / max(cur)  # at most one pair is slower here: the U statistic is ~0
    hi = max(base) / min(cur) * (1 + _SHIFT_PRECISION)  # every pair is slower: the smallest p there is
    if slower_p(base, [c * hi for c in cur]) >= ALPHA:
        return math.inf
    while hi / lo > 1 + _SHIFT_PRECISION:
        mid = math.sqrt(lo * hi)
        if slower_p(base, [c * mid for c in cur]) < ALPHA:
            hi = mid
        else:
            lo = mid
    return hi


def pooled_std(*groups: Sequence[float] | None) -> float | None:
    """The pooled sample standard deviation of the groups with at least two values, or ``None``."""
    usable = [g for g in groups if g is not None and len(g) >= 2]
    if not usable:
        return None
    dof = sum(len(g) - 1 for g in usable)
    return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in usable) / dof)


@dataclass(frozen=True)
class RunNoise:
    """A timed metric of one case across the stored runs of its machine (log scale)."""

    runs: int
    mean_log: float
    sd_log: float

    def upper_pct(self) -> float:
        """How far above the runs' geometric mean a new run may land by chance: a one-sided
        99.5% prediction bound, t(0.995, n-1) * sd * sqrt(1 + 1/n), as a percentage."""
        t = float(student_t.ppf(1 - NOISE_ALPHA, self.runs - 1))
        return (math.exp(t * self.sd_log * math.sqrt(1 + 1 / self.runs)) - 1) * 100

    def upper_value(self) -> float:
        """The value at the prediction bound: anything above it is outside the run-to-run noise."""
        return math.exp(self.mean_log) * (1 + self.upper_pct() / 100)

    def excess_pct(self, value: float) -> float:
        """``value`` against the runs' geometric mean, in percent."""
        return (value / math.exp(self.mean_log) - 1) * 100


def run_noise(history: Sequence[Run], base: Run, metrics: Sequence[str] = HISTORY_METRICS) -> dict[tuple[str, str], RunNoise]:
    """Per (case_id, metric in ``metrics``), the session-to-session noise over the baseline and the
    stored ``history`` runs of its machine (cases with at least ``HISTORY_MIN`` runs).

    Only comparable runs pool: a history case counts when its settings digest (and, for an own backbone,
    its code digest) is the baseline case's, so a run made with other threads, epochs or code never
    widens (or narrows) the bound.
    """
    values: dict[tuple[str, str], list[float]] = {}
    for run in (base, *history):
        for case_id, case in run.cases.items():
            own = base.cases.get(case_id)
            # Another version of a team's own backbone is another model: its runs are not this one's noise.
            if own is None or case.settings_digest != own.settings_digest or case.code_digest != own.code_digest:
                continue
            for metric in metrics:
                value = case.value(metric)
                if value is not None and value > 0:
                    values.setdefault((case_id, metric), []).append(math.log(value))
    return {
        key: RunNoise(len(logs), statistics.fmean(logs), statistics.stdev(logs))
        for key, logs in values.items()
        if len(logs) >= HISTORY_MIN
    }
