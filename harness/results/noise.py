"""Session-to-session noise of timed metrics, read from a machine's stored runs.

Within one pytest session the timed rounds of a case cluster tightly, so a rank test on them
finds a 2% shift significant. Between sessions on a shared or virtualised machine the whole
case can move 10-40% (measured here: 19 registry backbones over 6 smoke runs on a 2-vCPU VM,
median latency ranging up to 1.68x). The stored runs of the same baseline key show that
spread, and a change inside it is not evidence of a regression.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

from harness.results.runs import Run

# Stored runs of a case on the same machine needed before their spread counts as the machine's
# run-to-run noise: three is the least that gives a standard deviation with two degrees of freedom.
HISTORY_MIN = 3
# One-sided level of the run-to-run prediction bound: 0.5%, so a suite of ~20 latency cases
# raises a false alarm from session noise in about one run in ten at worst, usually far fewer.
NOISE_ALPHA = 0.005


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

    def excess_pct(self, value: float) -> float:
        """``value`` against the runs' geometric mean, in percent."""
        return (value / math.exp(self.mean_log) - 1) * 100


def run_noise(history: Sequence[Run], base: Run, metrics: Sequence[str]) -> dict[tuple[str, str], RunNoise]:
    """Per (case_id, metric in ``metrics``), the session-to-session noise over the baseline and the
    stored ``history`` runs of its machine (cases with at least ``HISTORY_MIN`` runs).

    Rounds within one session are tightly clustered, but on shared or virtualised machines a
    whole session can run 10-40% slower or faster than the next (co-tenants, frequency, memory
    placement). A rank test on one session's rounds cannot see that; the stored runs can.
    """
    values: dict[tuple[str, str], list[float]] = {}
    for run in (base, *history):
        for case_id, case in run.cases.items():
            for metric in metrics:
                value = case.value(metric)
                if value is not None and value > 0:
                    values.setdefault((case_id, metric), []).append(math.log(value))
    return {
        key: RunNoise(len(logs), statistics.fmean(logs), statistics.stdev(logs))
        for key, logs in values.items()
        if len(logs) >= HISTORY_MIN
    }
