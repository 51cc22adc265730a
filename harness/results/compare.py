"""Compare two runs case by case: comparability first, then tolerances and noise-aware verdicts.

``compare_runs`` matches cases by ``case_id``. A case whose settings digest differs from the
baseline's gets one row, *not comparable*, naming what differs, and no metric verdicts (unless
forced). Every comparable case is judged on each metric with a tolerance; a change is a
regression only when it exceeds the tolerance *and* the noise of the metric's class
(:mod:`harness.contract`): ``timed`` metrics with raw rounds must pass a one-sided Mann-Whitney
U test and, with enough stored runs, the machine's run-to-run bound; ``seeded`` metrics with
per-seed values must beat the seed-to-seed spread; ``exact`` metrics face the tolerance alone.
Each judged row also says what it could have detected (:class:`Detectable`). Tolerance specs are
parsed in :mod:`harness.results.tolerances`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from harness.contract import METRICS
from harness.results.attribution import where
from harness.results.comparable import code_note, machine_differences, settings_note
from harness.results.hosts import HostClasses, kernels_differ
from harness.results.noise import ALPHA, SEED_NOISE_FACTOR, RunNoise, pooled_std, run_noise, slower_p, smallest_flagged_slowdown
from harness.results.runs import Case, Run, RunError
from harness.results.tolerances import Tolerance, Tolerances

# The record keys that break a metric down (function -> instructions; op and module -> ms of self time),
# each with the word its entries are named by, so a regression names where it went.
BREAKDOWNS: dict[str, tuple[tuple[str, str], ...]] = {
    "instructions": (("instructions_by_function", "function"),),
    "latency_p50_ms": (("op_self_ms", "op"), ("module_self_ms", "module")),
}

TABLE_HEAD = ("Case", "Metric", "Baseline", "Current", "Change", "Detectable", "Verdict", "Note")
VERDICTS = ("failed", "regression", "not comparable", "missing", "new", "improvement", "within noise")


@dataclass(frozen=True)
class Detectable:
    """The smallest change in a metric's bad direction that this comparison could have flagged.

    Whatever applied to the verdict applies here: the tolerance; for raw rounds, the shift of the
    current rounds the rank test would first call significant at ``ALPHA``; for seeds,
    ``SEED_NOISE_FACTOR`` times the pooled seed std; with history, the run-to-run bound. A
    *within noise* verdict means "no change larger than this", not "no change". Computed when
    first read (the rank-test part bisects over the rounds), so only shown rows pay for it.
    """

    tol: Tolerance
    base: float
    current: float
    rounds: tuple[Sequence[float], Sequence[float]] | None = None  # (baseline, current) raw rounds
    seed_noise: float | None = None  # in the metric's unit
    history: RunNoise | None = None

    @cached_property
    def amount(self) -> float:
        """In the tolerance's unit, measured in the bad direction (``inf``: nothing was detectable)."""
        lower = self.tol.lower_is_better
        flagged_from: list[float] = []  # the metric's value at which each check starts to flag
        if self.rounds is not None:
            shift = smallest_flagged_slowdown(*self.rounds)  # slower rounds are worse for every timed metric
            if math.isinf(shift):
                return math.inf
            flagged_from.append(self.current * shift if lower else self.current / shift)
        if self.seed_noise is not None:
            flagged_from.append(self.base + self.seed_noise if lower else self.base - self.seed_noise)
        if self.history is not None:
            flagged_from.append(self.history.upper_value())
        return max([self.tol.amount, *(self.tol.bad(self.base, value) for value in flagged_from)])

    def __str__(self) -> str:
        amount = self.amount
        if math.isinf(amount):
            return "undetectable"
        signed = amount if self.tol.lower_is_better else -amount
        if self.tol.form == "pp":
            return f">{signed:+.2f}pp"
        if self.tol.form == "%":
            return f">{signed:+.1f}%"
        return "any change" if amount == 0 else f">{signed:+.6g}"


@dataclass(frozen=True)
class Row:
    """One verdict: a metric of a case, or the case itself (``metric='case'``) when it is new,
    missing, failed or not comparable."""

    case_id: str
    metric: str
    baseline: float | None
    current: float | None
    change: str
    verdict: str
    note: str = ""
    detectable: Detectable | None = field(default=None, compare=False)


def _judge(tol: Tolerance, base_case: Case, cur_case: Case, noise: RunNoise | None = None, host: str = "", kernels: str = "") -> Row | None:
    metric, base, cur = METRICS[tol.metric], base_case.value(tol.metric), cur_case.value(tol.metric)
    cid = cur_case.case_id
    if base is None and cur is None:
        return None
    if base is None or cur is None:
        which = "new" if base is None else "missing"
        return Row(cid, tol.metric, base, cur, "", which, f"metric {'not in baseline' if base is None else 'no longer reported'}")
    delta, bad = tol.change(base, cur), tol.bad(base, cur)
    change = f"{delta:+.2f}{tol.form}" if tol.form in ("%", "pp") else f"{delta:+.6g}"
    if host and metric.noise == "timed":  # a timed number measures its host: across hosts it is no verdict
        return Row(cid, tol.metric, base, cur, change, "not comparable", f"host differs ({host})")
    if kernels and metric.kernels:  # an AVX-512 kernel runs fewer, wider instructions than its AVX2 twin
        return Row(cid, tol.metric, base, cur, change, "not comparable", f"kernels differ ({kernels})")
    worse, better = bad > tol.amount, -bad > tol.amount
    note = "exact" if tol.form == "exact" else ""
    rounds: tuple[list[float], list[float]] | None = None
    seed_noise: float | None = None
    if metric.noise == "timed" and metric.samples is not None:
        b_s, c_s = base_case.samples(metric.samples), cur_case.samples(metric.samples)
        rounds = (b_s, c_s) if b_s and c_s else None
        if (worse or better) and rounds is not None:
            # Worse means slower rounds for every timed metric (throughput = batch / latency).
            p = slower_p(*rounds, slower=worse)
            note = f"Mann-Whitney one-sided p={p:.2g}"
            if p >= ALPHA:
                worse = better = False
                note += f" >= {ALPHA}: not significant"
        elif worse or better:
            note = f"no {metric.samples}: tolerance only"
        if worse and noise is not None and noise.excess_pct(cur) <= noise.upper_pct():
            worse = False
            note += (
                f"; within this machine's run-to-run noise ({noise.excess_pct(cur):+.0f}% vs the mean of "
                f"{noise.runs} stored runs, bound +{noise.upper_pct():.0f}%)"
            )
    elif metric.noise == "seeded" and metric.samples is not None:
        std = pooled_std(base_case.samples(metric.samples), cur_case.samples(metric.samples))
        seed_noise = None if std is None else SEED_NOISE_FACTOR * std
        if (worse or better) and seed_noise is None:
            note = "1 seed: tolerance only"
        elif (worse or better) and seed_noise is not None:
            note = f"seed noise {SEED_NOISE_FACTOR:g}x std = {seed_noise * float(metric.pp_scale or 1.0):.2f}pp"
            if abs(cur - base) <= seed_noise:
                worse = better = False
                note += ": within seed noise"
    verdict = "regression" if worse else "improvement" if better else "within noise"
    return Row(cid, tol.metric, base, cur, change, verdict, note, Detectable(tol, base, cur, rounds, seed_noise, noise))


@dataclass(frozen=True)
class Comparison:
    """All verdicts of one comparison plus the warnings that qualify them."""

    baseline: str
    current: str
    tolerances: Tolerances
    rows: tuple[Row, ...]
    warnings: tuple[str, ...] = ()
    fail_on_missing: bool = False
    host: str = ""  # why the runs' hosts differ (harness.results.hosts); "" when one host class

    @property
    def regressions(self) -> list[Row]:
        """Rows that fail the gate: regressions, failed cases, and missing ones under ``fail_on_missing``."""
        failing = {"regression", "failed"} | ({"missing"} if self.fail_on_missing else set())
        return [row for row in self.rows if row.verdict in failing]

    @property
    def not_comparable(self) -> list[Row]:
        """Cases whose settings differ from the baseline's (none when forced); timed rows of another
        host are not among them: the gate judges what a host does not change and exits on that."""
        return [row for row in self.rows if row.verdict == "not comparable" and row.metric == "case"]

    @property
    def exit_code(self) -> int:
        """2 when a case is not comparable, else 1 when something failed the gate, else 0."""
        return 2 if self.not_comparable else 1 if self.regressions else 0

    def counts(self) -> dict[str, int]:
        return {v: n for v in VERDICTS if (n := sum(row.verdict == v for row in self.rows))}

    def summary(self) -> str:
        """The one line a reader (or CI log) needs: the outcome and the counts."""
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items()) or "no cases"
        tail = f"{len(self.regressions)} failing; {counts}" + (f"; latency not comparable: host differs ({self.host})" if self.host else "")
        if self.not_comparable:
            first, more = self.not_comparable[0], len(self.not_comparable) - 1
            which = f"{first.case_id}: {first.note}" + (f"; and {more} more" if more else "")
            return f"NOT COMPARABLE: {len(self.not_comparable)} case(s) ran with other settings than the baseline ({which}), pass --force to judge anyway; {tail}"
        return f"{'FAIL' if self.regressions else 'OK'}: {tail}"

    def preamble(self) -> list[str]:
        """The lines above the table: which runs, which tolerances, and every warning."""
        lines = [f"baseline: {self.baseline}", f"current:  {self.current}", f"tolerances: {self.tolerances}"]
        return lines + [f"warning: {w}" for w in self.warnings]

    def table(self) -> list[list[str]]:
        """The table's cells, worst verdict first: one list per row, in :data:`TABLE_HEAD` order.

        One source for the terminal, the Markdown and the static site (:mod:`harness.results.site`).
        """
        return [
            [r.case_id, r.metric, format_value(r.metric, r.baseline), format_value(r.metric, r.current), r.change,
             str(r.detectable or ""), r.verdict, r.note]
            for r in sorted(self.rows, key=lambda r: VERDICTS.index(r.verdict))
        ]

    def render(self, markdown: bool = False) -> str:
        """A terminal table (or GitHub Markdown) with worst verdicts first and a one-line summary."""
        head, body = list(TABLE_HEAD), self.table()
        lines = self.preamble()
        if markdown:
            lines = [f"- {line}" for line in lines] + [""]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in [head, ["---"] * len(head), *body]]
        else:
            widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
            lines += ["", *("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body])]
        return "\n".join([*lines, "", self.summary()]) + "\n"


def format_value(metric: str, value: float | None) -> str:
    """A metric's value as the compare table shows it: MiB for bytes, millions for params, else 4 digits."""
    if value is None:
        return "-"
    unit = METRICS[metric].unit if metric in METRICS else ""
    if unit == "bytes":
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
    """Judge every case of ``cur`` against ``base``.

    Runs from other hardware raise :class:`RunError` and cases with other settings are *not
    comparable* (exit code 2), unless ``force``: then they are judged, with a warning naming
    what differs. ``history``: other stored runs of the baseline's machine; where a case has at
    least ``HISTORY_MIN`` runs with the baseline case's settings, a timed change no larger than
    their spread is within noise.
    """
    found = machine_differences(base, cur)
    blocking = [text for text, blocks in found if blocks]
    if blocking and not force:
        raise RunError(
            "refusing to gate across devices, the figures would measure the hardware, not the change: "
            + "; ".join(blocking) + ". Compare against a baseline from this machine, or pass --force (force=True)"
        )
    warnings = [f"{'forced across devices' if blocks else 'software differs'}: {text}" for text, blocks in found]
    hosts = HostClasses([*history, base, cur])
    host, kernels = hosts.differs(base, cur), kernels_differ(base, cur)
    if host:
        warnings.append(f"host differs: {host}: timed metrics are not judged, exact and seeded ones are")
    # Only runs of the baseline's host class measure its run-to-run noise (another host moves every case).
    noises = run_noise([run for run in history if run.source not in (base.source, cur.source) and hosts.of(run) is hosts.of(base)], base)
    rows: list[Row] = []
    for case_id, case in cur.cases.items():
        old = base.cases.get(case_id)
        if case.status == "failed":
            rows.append(_failure(case))
            continue
        if old is None:
            rows.append(_case_row(case, "new", "not in baseline"))
            continue
        differs = settings_note(old, case)
        if differs and not force:
            rows.append(_case_row(case, "not comparable", differs))
            continue
        if differs:
            warnings.append(f"forced across settings: {case_id}: {differs}")
        if old.status == "failed":
            judged = [_case_row(case, "improvement", "failed in baseline, ok now")]
        else:
            judged = [_attributed(row, old, case) for tol in tolerances.active()
                      if (row := _judge(tol, old, case, noises.get((case_id, tol.metric)), host, kernels)) is not None]
        code = code_note(old, case)
        rows.extend(_noted(_forced(row, differs), code) for row in judged)
    rows.extend(_case_row(old, "missing", "in baseline, not in current run") for cid, old in base.cases.items() if cid not in cur.cases)
    return Comparison(base.source, cur.source, tolerances, tuple(rows), tuple(warnings), fail_on_missing, host)


def _attributed(row: Row, base: Case, cur: Case) -> Row:
    """A regressed instruction count or latency, its note naming the functions or ops the change went to
    (:data:`BREAKDOWNS`: the records' breakdown of each, :mod:`harness.results.attribution`)."""
    if row.verdict != "regression" or row.metric not in BREAKDOWNS:
        return row
    texts = [text for i, (key, entry) in enumerate(BREAKDOWNS[row.metric])
             if (text := where(base.extra.get(key), cur.extra.get(key), METRICS[row.metric].unit, "most in" if i == 0 else f"by {entry}"))]
    text = "; ".join(texts)
    return replace(row, note=text + (f"; {row.note}" if row.note else "")) if text else row


def _noted(row: Row, code: str) -> Row:
    """``row``, its note starting with ``code`` (an own backbone's code digest changed) when there is one."""
    return replace(row, note=code + (f"; {row.note}" if row.note else "")) if code else row


def _forced(row: Row, differs: str) -> Row:
    """``row``, its note saying that it was judged across other settings (``differs``) when it was."""
    return replace(row, note=f"settings differ ({differs})" + (f"; {row.note}" if row.note else "")) if differs else row
