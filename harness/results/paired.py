"""Verdicts of an A/B job: base and head measured in alternating processes on one machine, judged per round.

``python -m harness ab`` runs the two arms in turns (A B, B A, A B, …), so whatever the machine does
over the job (a neighbour's load, thermal drift, a slower host) lands on both arms of a round alike.
Each round gives one ratio head/base per case and metric; the job judges the rounds' ratios, paired:

- timed metrics (latency): the geometric mean of the ratios and a one-sided t-test on their logs
  (processes on a shared VM move 12-18 % each, and their log-ratios are close to normal); a
  regression needs the mean ratio past the tolerance **and** p < :data:`ALPHA`, and the confidence
  interval of the ratio is printed;
- exact metrics (instructions, params, GMACs, memory): the median of the ratios against the tolerance,
  since the rounds only repeat a count.

Every verdict also says the smallest change in the bad direction this job could have flagged with
its rounds and their spread (asv's ``continuous`` and Bencher's relative mode judge this way).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

from harness.contract import METRICS
from harness.results.runs import Run
from harness.results.tolerances import Tolerances

# One-sided level of the paired test: the gate's rank test level (harness.results.noise.ALPHA), so a
# job over ~20 cases raises a false latency alarm about once in five jobs at worst, usually far less.
ALPHA = 0.01
# Two-sided confidence of the printed interval of the ratio: 98 %, the interval whose lower end is the
# one-sided 1 % bound the verdict uses.
CONFIDENCE = 1 - 2 * ALPHA


@dataclass(frozen=True)
class PairedRow:
    """One case and metric over the job's rounds."""

    case_id: str
    metric: str
    base: float  # the median over rounds of the base arm
    head: float
    ratio: float  # head/base: geometric mean of the per-round ratios (timed), their median (exact)
    low: float  # the confidence interval of the ratio (equal to it for exact metrics)
    high: float
    p: float | None  # one-sided p that head is worse (timed metrics only)
    rounds: int
    detectable: float  # the smallest worse ratio this job could have flagged (inf: none)
    verdict: str  # "regression" | "improvement" | "within noise"

    def change(self) -> str:
        return f"{(self.ratio - 1) * 100:+.2f}%"


def _worse(metric: str, ratio: float) -> float:
    """``ratio`` turned so that above 1 is worse (a throughput's drop is a rise)."""
    return ratio if METRICS[metric].better == "lower" else 1 / ratio


def judge(case_id: str, metric: str, base: Sequence[float], head: Sequence[float], tolerance_pct: float) -> PairedRow:
    """The verdict on one case's metric from its per-round values (``base[i]`` and ``head[i]`` of round ``i``)."""
    pairs = [(b, h) for b, h in zip(base, head, strict=True) if b > 0 and h > 0]
    if not pairs:
        raise ValueError(f"{case_id} {metric}: no round measured both arms")
    limit = 1 + tolerance_pct / 100
    logs = [math.log(h / b) for b, h in pairs]
    n = len(logs)
    base_mid, head_mid = statistics.median(b for b, _ in pairs), statistics.median(h for _, h in pairs)
    if METRICS[metric].noise != "timed":
        ratio = math.exp(statistics.median(logs))
        worse = _worse(metric, ratio)
        verdict = "regression" if worse > limit else "improvement" if worse < 1 / limit else "within noise"
        return PairedRow(case_id, metric, base_mid, head_mid, ratio, ratio, ratio, None, n, limit, verdict)
    mean = statistics.fmean(logs)
    sd = statistics.stdev(logs) if n > 1 else math.inf
    se = sd / math.sqrt(n)
    crit = float(student_t.ppf(1 - ALPHA, n - 1)) if n > 1 else math.inf
    ratio = math.exp(mean)
    low, high = (math.exp(mean - crit * se), math.exp(mean + crit * se)) if n > 1 else (0.0, math.inf)
    signed = mean if METRICS[metric].better == "lower" else -mean  # > 0: head is worse
    p = _one_sided_p(signed, se, n)
    worse = _worse(metric, ratio)
    if worse > limit and p < ALPHA:
        verdict = "regression"
    elif worse < 1 / limit and _one_sided_p(-signed, se, n) < ALPHA:
        verdict = "improvement"
    else:
        verdict = "within noise"
    # Flagged at this spread: past the tolerance and past the test's critical value.
    detectable = max(limit, math.exp(crit * se)) if math.isfinite(se) else math.inf
    return PairedRow(case_id, metric, base_mid, head_mid, ratio, low, high, p, n, detectable, verdict)


def _one_sided_p(signed_mean: float, se: float, n: int) -> float:
    if n < 2 or not math.isfinite(se):
        return 1.0
    if se == 0:
        return 0.0 if signed_mean > 0 else 1.0
    return float(student_t.sf(signed_mean / se, n - 1))


def paired_rows(base_runs: Sequence[Run], head_runs: Sequence[Run], tolerances: Tolerances, metrics: Sequence[str]) -> list[PairedRow]:
    """Every case both arms measured, judged on each of ``metrics`` that has a percent or exact tolerance, over
    the rounds that measured it in both arms (an instruction count may be taken in the first round only)."""
    gated = {t.metric: (t.amount if t.form == "%" else 0.0) for t in tolerances.active() if t.form in ("%", "exact")}
    rows = []
    for case_id in [c for c in base_runs[0].cases if all(c in run.cases for run in (*base_runs, *head_runs))]:
        for metric in (m for m in metrics if m in gated):
            pairs = [(b, h) for b_run, h_run in zip(base_runs, head_runs, strict=True)
                     if (b := b_run.cases[case_id].value(metric)) is not None and (h := h_run.cases[case_id].value(metric)) is not None]
            if pairs:  # none: not measured in this job (no --count-instructions)
                rows.append(judge(case_id, metric, [b for b, _ in pairs], [h for _, h in pairs], gated[metric]))
    return rows


def smallest_detectable(rows: Sequence[PairedRow]) -> Mapping[str, float]:
    """Per metric, the largest of its rows' detectable ratios: the smallest change the job could see in every case."""
    out: dict[str, float] = {}
    for row in rows:
        out[row.metric] = max(out.get(row.metric, 0.0), row.detectable)
    return out
