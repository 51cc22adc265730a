"""Compare two runs case by case: tolerances, noise-aware statistics and regression verdicts.

``compare_runs`` matches cases by ``case_id`` and judges every metric that has a tolerance.
A change is a regression only when it exceeds the tolerance *and* (where repeated measurements
exist) is larger than the measurement noise: latency uses a one-sided Mann-Whitney U test on the
raw per-round samples, accuracy compares the drop with the seed-to-seed spread.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy.stats import mannwhitneyu

from harness.results.noise import RunNoise, run_noise
from harness.results.runs import Case, Run, RunError

HIGHER_IS_BETTER = ("top1", "top5", "macro_f1", "throughput_ips", "train_ips")
LOWER_IS_BETTER = (
    "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "peak_mem_bytes",
    "peak_train_mem_bytes", "train_time_s", "params", "gmacs", "energy_mj_per_img",
)
METRICS = HIGHER_IS_BETTER + LOWER_IS_BETTER
# Percentage points per unit of the metric: top1/top5 are stored in percent, macro_f1 as a 0-1 fraction.
PP_SCALE = {"top1": 1.0, "top5": 1.0, "macro_f1": 100.0}
# Metrics derived from the timed rounds, so the raw latency samples can test their significance.
TIMED = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "throughput_ips")
SEEDED = {"top1": "top1_per_seed"}
# 0.01, not 0.05: a full suite gates ~50-100 latency cases, so at 0.05 a quiet machine would still
# raise a significance flag on a few cases per run; the tolerance filter then has to catch them all.
ALPHA = 0.01
# An accuracy drop must exceed twice the pooled seed std: with the usual 3 seeds per side this is
# t = 2*sqrt(3/2) = 2.45 on 4 dof (one-sided p ~ 0.035), a t-test with 2-3 points has almost no power.
SEED_NOISE_FACTOR = 2.0
# Defaults. latency 10%: run-to-run drift of a pinned, quiet machine is a few percent and smaller
# slowdowns do not change which backbone a team ships. Memory 5%: allocator block rounding moves
# peaks by 1-2%. params/gmacs 0: fixed by the architecture, any change means the model changed.
# top1 -1pp: the smallest drop a small-data user acts on (seed noise is checked separately).
# throughput_ips is not gated by default: it is batch/latency from the same rounds, so gating it
# would report every slowdown twice; opt in with throughput_ips:-10%.
DEFAULT_SPEC = "latency_p50_ms:10%,peak_mem_bytes:5%,peak_train_mem_bytes:5%,params:0,gmacs:0,top1:-1pp"
FORMS = "METRIC:N% (relative change), METRIC:Npp (absolute percentage points; top1/top5/macro_f1), METRIC:0 (exact), METRIC:off"
VERDICTS = ("failed", "regression", "missing", "new", "improvement", "within noise")
Form = Literal["%", "pp", "exact", "off"]
_AMOUNT = re.compile(r"^(?P<sign>[+-]?)(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<unit>%|pp)?$")


@dataclass(frozen=True)
class Tolerance:
    """How far ``metric`` may move in its bad direction: ``amount`` percent, percentage points, or exactly 0."""

    metric: str
    form: Form
    amount: float = 0.0

    def __str__(self) -> str:
        sign = "-" if self.metric in HIGHER_IS_BETTER and self.form in ("%", "pp") else ""
        text = {"exact": "0", "off": "off"}.get(self.form, f"{sign}{self.amount:g}{self.form}")
        return f"{self.metric}:{text}"


@dataclass(frozen=True)
class Tolerances:
    """The gated metrics, in spec order; a metric that is absent or ``off`` is not judged."""

    items: Mapping[str, Tolerance]

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.items.values())

    def active(self) -> list[Tolerance]:
        return [t for t in self.items.values() if t.form != "off"]


def _bad_spec(item: str, why: str) -> ValueError:
    return ValueError(f"bad tolerance {item!r}: {why}. Forms: {FORMS}. Metrics: {', '.join(METRICS)}")


def _parse_item(item: str) -> Tolerance:
    metric, colon, value = (part.strip() for part in item.partition(":"))
    if not colon:
        raise _bad_spec(item, "expected METRIC:AMOUNT")
    if metric not in METRICS:
        raise _bad_spec(item, f"unknown metric {metric!r}")
    if value == "off":
        return Tolerance(metric, "off")
    m = _AMOUNT.match(value)
    if m is None:
        raise _bad_spec(item, f"cannot read amount {value!r}")
    amount, unit = float(m["num"]), m["unit"]
    if unit is None:
        if amount != 0:
            raise _bad_spec(item, "a non-zero amount needs a unit, % or pp")
        return Tolerance(metric, "exact")
    if unit == "pp" and metric not in PP_SCALE:
        raise _bad_spec(item, f"pp applies only to {', '.join(PP_SCALE)}; use % for {metric}")
    bad_sign = "+" if metric in HIGHER_IS_BETTER else "-"
    if m["sign"] == bad_sign:
        worse = "drop" if metric in HIGHER_IS_BETTER else "rise"
        raise _bad_spec(item, f"{metric} is worse when it {worse}s; write the amount unsigned or with the other sign")
    return Tolerance(metric, unit, amount)  # type: ignore[arg-type]  # unit is '%' or 'pp' here


def parse_tolerances(spec: str | None) -> Tolerances:
    """Parse ``"latency_p50_ms:10%,top1:-1pp,gmacs:0"`` on top of :data:`DEFAULT_SPEC` (``None``: defaults)."""
    items: dict[str, Tolerance] = {}
    for source in (DEFAULT_SPEC, spec or ""):
        seen: set[str] = set()
        for item in filter(None, (part.strip() for part in source.split(","))):
            tol = _parse_item(item)
            if tol.metric in seen:
                raise _bad_spec(item, f"{tol.metric} is given twice")
            seen.add(tol.metric)
            items[tol.metric] = tol
    return Tolerances(items)


@dataclass(frozen=True)
class Row:
    """One verdict: a metric of a case, or the case itself (``metric='case'``) when it is new/missing/failed."""

    case_id: str
    metric: str
    baseline: float | None
    current: float | None
    change: str
    verdict: str
    note: str = ""


def _change(tol: Tolerance, base: float, cur: float) -> float:
    """The change in the tolerance's unit (percent, percentage points, or raw units for exact)."""
    if tol.form == "pp":
        return (cur - base) * PP_SCALE[tol.metric]
    if tol.form == "%":
        if base == 0:
            return 0.0 if cur == 0 else math.copysign(math.inf, cur)
        return (cur - base) / abs(base) * 100
    return 0.0 if math.isclose(cur, base, rel_tol=1e-9) else cur - base  # exact: ignore float repr noise


def _latency_p(base: list[float], cur: list[float], slower: bool) -> float:
    return float(mannwhitneyu(cur, base, alternative="greater" if slower else "less").pvalue)


def _pooled_std(*groups: list[float] | None) -> float | None:
    usable = [g for g in groups if g is not None and len(g) >= 2]
    if not usable:
        return None
    dof = sum(len(g) - 1 for g in usable)
    return math.sqrt(sum((len(g) - 1) * statistics.variance(g) for g in usable) / dof)


def _judge(tol: Tolerance, base_case: Case, cur_case: Case, noise: RunNoise | None = None) -> Row | None:
    metric, base, cur = tol.metric, base_case.value(tol.metric), cur_case.value(tol.metric)
    cid = cur_case.case_id
    if base is None and cur is None:
        return None
    if base is None or cur is None:
        which = "new" if base is None else "missing"
        return Row(cid, metric, base, cur, "", which, f"metric {'not in baseline' if base is None else 'no longer reported'}")
    delta = _change(tol, base, cur)
    unit = {"%": "%", "pp": "pp"}.get(tol.form, "")
    change = f"{delta:+.2f}{unit}" if tol.form != "exact" else f"{delta:+.6g}"
    bad = delta if metric in LOWER_IS_BETTER else -delta
    worse, better = bad > tol.amount, -bad > tol.amount
    note = "exact" if tol.form == "exact" else ""
    if (worse or better) and metric in TIMED:
        b_s, c_s = base_case.samples("latency_samples_ms"), cur_case.samples("latency_samples_ms")
        if b_s and c_s:
            # Worse means slower rounds for every timed metric (throughput = batch / latency).
            p = _latency_p(b_s, c_s, slower=worse)
            note = f"Mann-Whitney one-sided p={p:.2g}"
            if p >= ALPHA:
                worse = better = False
                note += f" >= {ALPHA}: not significant"
        else:
            note = "no latency_samples_ms: tolerance only"
        if worse and noise is not None and tol.metric.startswith("latency") and noise.excess_pct(cur) <= noise.upper_pct():
            worse = False
            note += (
                f"; within this machine's run-to-run noise ({noise.excess_pct(cur):+.0f}% vs the mean of "
                f"{noise.runs} stored runs, bound +{noise.upper_pct():.0f}%)"
            )
    elif (worse or better) and metric in SEEDED:
        seeds = (base_case.samples(SEEDED[metric]), cur_case.samples(SEEDED[metric]))
        std = _pooled_std(*seeds)
        if std is None:
            note = "1 seed: tolerance only"
        else:
            seed_noise = SEED_NOISE_FACTOR * std * PP_SCALE[metric]
            note = f"seed noise {SEED_NOISE_FACTOR:g}x std = {seed_noise:.2f}pp"
            if abs(cur - base) * PP_SCALE[metric] <= seed_noise:
                worse = better = False
                note += ": within seed noise"
    verdict = "regression" if worse else "improvement" if better else "within noise"
    return Row(cid, metric, base, cur, change, verdict, note)


# Machine facts that change the measured hardware (refuse to gate) versus software stack (warn).
_DEVICE_FACTS = ("baseline_key", "device_kind", "gpu_name", "edge_profile")
_LIBRARY_FACTS = ("torch", "torchvision", "timm", "fvcore", "cuda")


def _show(value: object) -> str:
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])  # an edge profile record is named by its profile
    return "none" if value is None else str(value)


def _facts(run: Run) -> dict[str, tuple[str, bool]]:
    """Comparable facts of a run: name -> (shown value, blocks gating when it differs)."""
    info = run.machine_info
    facts = {key: (_show(info.get(key)), True) for key in _DEVICE_FACTS}
    facts.update({key: (_show(info.get(key)), False) for key in _LIBRARY_FACTS})
    # The CPU model decides CPU latency; under a GPU or Jetson run it only moves host overheads.
    facts["cpu_model"] = (_show(info.get("cpu_model")), info.get("device_kind") == "cpu")
    raw = info.get("jetson")
    jetson = raw if isinstance(raw, dict) else {}
    facts["jetson power_mode"] = (_show(jetson.get("power_mode")), True)
    facts["jetson clocks_locked"] = (_show(jetson.get("clocks_locked")), False)
    return facts


def _fact_differences(base: Run, cur: Run) -> list[tuple[str, bool]]:
    b_facts, c_facts = _facts(base), _facts(cur)
    return [
        (f"{name}: {b_facts[name][0]} (baseline) vs {c_facts[name][0]} (current)", b_facts[name][1] or c_facts[name][1])
        for name in b_facts
        if b_facts[name][0] != c_facts[name][0]
    ]


def differences(base: Run, cur: Run) -> list[str]:
    """What differs between the machines/software of two runs, one line per fact."""
    return [text for text, _ in _fact_differences(base, cur)]


@dataclass(frozen=True)
class Comparison:
    """All verdicts of one comparison plus the warnings that qualify them."""

    baseline: str
    current: str
    tolerances: Tolerances
    rows: tuple[Row, ...]
    warnings: tuple[str, ...] = ()
    fail_on_missing: bool = False

    @property
    def regressions(self) -> list[Row]:
        """Rows that fail the gate: regressions, failed cases, and missing ones under ``fail_on_missing``."""
        failing = {"regression", "failed"} | ({"missing"} if self.fail_on_missing else set())
        return [row for row in self.rows if row.verdict in failing]

    @property
    def exit_code(self) -> int:
        """0 when nothing regressed, 1 otherwise (usage errors are the CLI's exit 2)."""
        return 1 if self.regressions else 0

    def counts(self) -> dict[str, int]:
        return {v: n for v in VERDICTS if (n := sum(row.verdict == v for row in self.rows))}

    def render(self, markdown: bool = False) -> str:
        """A terminal table (or GitHub Markdown) with worst verdicts first and a one-line summary."""
        head = ["Case", "Metric", "Baseline", "Current", "Change", "Verdict", "Note"]
        body = [
            [r.case_id, r.metric, _fmt(r.metric, r.baseline), _fmt(r.metric, r.current), r.change, r.verdict, r.note]
            for r in sorted(self.rows, key=lambda r: VERDICTS.index(r.verdict))
        ]
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items()) or "no cases"
        summary = f"{'FAIL' if self.exit_code else 'OK'}: {len(self.regressions)} failing; {counts}"
        lines = [f"baseline: {self.baseline}", f"current:  {self.current}", f"tolerances: {self.tolerances}"]
        lines += [f"warning: {w}" for w in self.warnings]
        if markdown:
            lines = [f"- {line}" for line in lines] + [""]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in [head, ["---"] * 7, *body]]
        else:
            widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
            lines += ["", *("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body])]
        return "\n".join([*lines, "", summary]) + "\n"


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("_bytes"):
        return f"{value / 2**20:.1f} MiB"
    if metric == "params":
        return f"{value / 1e6:.3f}M"
    return f"{value:.4g}"


def _case_row(case: Case, verdict: str, note: str) -> Row:
    return Row(case.case_id, "case", None, None, "", verdict, note)


def _failure(case: Case) -> Row:
    # The first line of the error is enough to triage; the full message stays in the run file.
    return _case_row(case, "failed", str(case.extra.get("error") or "status failed").splitlines()[0][:120])


def compare_runs(
    base: Run, cur: Run, tolerances: Tolerances, *, fail_on_missing: bool = False, force: bool = False, history: Sequence[Run] = ()
) -> Comparison:
    """Judge every case of ``cur`` against ``base``; refuses runs from different devices unless ``force``.

    ``history``: other stored runs of the baseline's machine. Where a case has at least
    ``HISTORY_MIN`` runs, a timed change no larger than their spread is within noise.
    """
    found = _fact_differences(base, cur)
    blocking = [text for text, blocks in found if blocks]
    if blocking and not force:
        raise RunError(
            "refusing to gate across devices, the figures would measure the hardware, not the change: "
            + "; ".join(blocking) + ". Compare against a baseline from this machine, or pass --force (force=True)"
        )
    warnings = [f"{'forced across devices' if blocks else 'software differs'}: {text}" for text, blocks in found]
    noises = run_noise([run for run in history if run.source not in (base.source, cur.source)], base, TIMED)
    rows: list[Row] = []
    for case_id, case in cur.cases.items():
        old = base.cases.get(case_id)
        if case.status == "failed":
            rows.append(_failure(case))
        elif old is None:
            rows.append(_case_row(case, "new", "not in baseline"))
        elif old.status == "failed":
            rows.append(_case_row(case, "improvement", "failed in baseline, ok now"))
        else:
            rows.extend(
                row for tol in tolerances.active() if (row := _judge(tol, old, case, noises.get((case_id, tol.metric)))) is not None
            )
    rows.extend(_case_row(old, "missing", "in baseline, not in current run") for cid, old in base.cases.items() if cid not in cur.cases)
    return Comparison(base.source, cur.source, tolerances, tuple(rows), tuple(warnings), fail_on_missing)
