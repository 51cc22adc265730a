"""The few lines a person reads at the end of a run: per kind, the best and the worst case on each
of the kind's headline metrics (:attr:`harness.contract.Kind.headline`), what failed, where the run
went, the gate's verdict, and the next command.

pytest-benchmark's table answers "how long did each call take"; these lines answer the question the
run exists for ("which backbone is fastest, which is most accurate"), in the metrics' own units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import KINDS, METRICS, Metric

# Bytes are read as MiB: every headline memory figure of this suite lies between ~1 MiB and ~100 GiB.
_MIB = 1024 * 1024


@dataclass(frozen=True)
class RunFacts:
    """What happened to the run besides its records: where it was written and how the gate judged it."""

    saved: Path | None = None
    written: Path | None = None
    gate: str | None = None  # the baseline it was gated against, or None without --gate
    gate_code: int = 0  # the gate's exit code: 0 passed, 1 regression, 2 not comparable


def number(value: float) -> str:
    """Three significant figures below 100, whole numbers (with thousands separators) above."""
    if float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _value(metric: Metric, value: float) -> str:
    if metric.unit == "bytes":
        return f"{value / _MIB:,.1f} MiB"
    return f"{number(value)}{'' if metric.unit == '%' else ' '}{metric.unit}"


def _labels(records: Sequence[dict[str, Any]]) -> list[str]:
    """A case's backbone name, or its case id where two cases of the kind share a backbone."""
    names = [str(r.get("backbone_name") or r.get("backbone")) for r in records]
    if len(set(names)) == len(names):
        return names
    return [str(r.get("case_id") or name) for r, name in zip(records, names, strict=True)]


def kind_lines(kind: str, records: Sequence[dict[str, Any]]) -> list[str]:
    """``kind``'s lines: its case counts, then one line per headline metric its ok cases recorded."""
    ok = [r for r in records if r.get("status") == "ok"]
    failed = [r for r in records if r.get("status") != "ok"]
    head = f"{kind}: {len(ok)} case(s) ok" + (f", {len(failed)} failed: {', '.join(str(r.get('case_id')) for r in failed)}" if failed else "")
    lines = [head]
    labels = dict(zip((id(r) for r in ok), _labels(ok), strict=True))
    for key in KINDS[kind].headline:
        metric = METRICS[key]
        having = [r for r in ok if isinstance(r.get(key), (int, float))]
        if not having:
            continue
        sign = 1.0 if metric.better == "higher" else -1.0
        ranked = sorted(having, key=lambda r: sign * float(r[key]), reverse=True)  # best first; ties keep the run's order
        best, worst = ranked[0], ranked[-1]
        text = f"  {key:<{_WIDTH}} best {labels[id(best)]} {_value(metric, float(best[key]))}"
        if len(ranked) > 1:
            text += f", worst {labels[id(worst)]} {_value(metric, float(worst[key]))}"
        lines.append(text)
    return lines


_WIDTH = max(len(key) for kind in KINDS.values() for key in kind.headline)


def ranking_lines(records: Sequence[dict[str, Any]], skipped: int = 0) -> list[str]:
    """Per kind in the contract's order: its counts and each headline metric's best and worst case."""
    lines: list[str] = []
    for kind in KINDS:
        mine = [r for r in records if r.get("kind") == kind]
        if mine:
            lines += kind_lines(kind, mine)
    if skipped:
        lines.append(f"skipped: {skipped} case(s) (-rs shows each reason)")
    return lines


def closing_lines(facts: RunFacts) -> list[str]:
    """After where the run went: the gate's verdict, and the command to run next."""
    lines: list[str] = []
    if facts.saved is None and facts.written is None:
        lines.append("not saved: pass --benchmark-save=NAME (into the storage) or --benchmark-json=PATH to keep the run")
    if facts.gate is not None:
        verdict = {0: "passed", 1: "regression (exit 1)", 2: "not comparable (exit 2)"}.get(facts.gate_code, f"exit {facts.gate_code}")
        lines.append(f"gate against {facts.gate}: {verdict}")
    if facts.saved is not None:
        lines.append("next: python -m harness report latest --out reports/   (Markdown, CSV and plots of the saved run)")
    elif facts.written is not None:
        lines.append(f"next: python -m harness report {facts.written} --out reports/   (Markdown, CSV and plots of the run)")
    return lines
