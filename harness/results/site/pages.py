"""The index and the compare pages: what each machine holds and how its last gate went.

The last gate of a machine is ``python -m harness compare PREVIOUS NEWEST``: its newest run
judged by :func:`~harness.results.compare.compare_runs` against the newest earlier run that is
comparable (same hardware, a case in common), with the default tolerances and the machine's
stored runs as history, as the compare verb does. The compare page shows that comparison's own
table (:meth:`~harness.results.compare.Comparison.table`), so it reads exactly as the terminal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from harness.contract import KINDS, METRICS
from harness.results.compare import TABLE_HEAD, VERDICTS, Comparison, compare_runs
from harness.results.runs import RunError
from harness.results.site.data import Machine, Storage, StoredRun
from harness.results.site.markup import VERDICT_CLASS, esc, link, page, table
from harness.results.site.trend import Trend, value_text
from harness.results.tolerances import parse_tolerances

# Change points listed per case on the index (its trend page has them all): a cell stays a few lines.
_STEPS_SHOWN = 3


@dataclass(frozen=True)
class Gate:
    """A machine's last gate: the two runs and their comparison, or why there is none (``reason``)."""

    base: StoredRun | None = None
    current: StoredRun | None = None
    comparison: Comparison | None = None
    reason: str = ""


def last_gate(machine: Machine) -> Gate:
    """The newest run against the newest earlier comparable run, with the default tolerances."""
    if len(machine.runs) < 2:
        return Gate(reason="one run: nothing to compare yet")
    newest, tolerances, history = machine.runs[-1], parse_tolerances(None), [s.run for s in machine.runs]
    refused: list[str] = []
    for prev in reversed(machine.runs[:-1]):
        if not set(prev.run.cases) & set(newest.run.cases):
            continue
        try:
            return Gate(prev, newest, compare_runs(prev.run, newest.run, tolerances, history=history))
        except RunError as exc:
            refused.append(f"{prev.label}: {exc}")
    return Gate(reason="no earlier run shares a case on comparable hardware" + (f" ({refused[0]})" if refused else ""))


def case_verdicts(comparison: Comparison | None) -> dict[str, str]:
    """Each case's worst verdict in ``comparison``."""
    worst: dict[str, str] = {}
    for row in comparison.rows if comparison is not None else ():
        if row.case_id not in worst or VERDICTS.index(row.verdict) < VERDICTS.index(worst[row.case_id]):
            worst[row.case_id] = row.verdict
    return worst


def compare_page(gate: Gate) -> str:
    """The compare table of a machine's last gate, as ``python -m harness compare`` prints it."""
    assert gate.comparison is not None and gate.base is not None and gate.current is not None
    c = gate.comparison
    rows = c.table()
    classes = {i: VERDICT_CLASS.get(r[6], "") for i, r in enumerate(rows)}
    body = [
        f"<p>The command: <code>python -m harness compare {esc(gate.base.label)} {esc(gate.current.label)}</code></p>",
        "<pre>" + esc("\n".join(c.preamble())) + "</pre>",
        f'<p class="{VERDICT_CLASS.get("regression" if c.regressions else "", "")}"><b>{esc(c.summary())}</b></p>',
        table(TABLE_HEAD, [[esc(cell) for cell in r] for r in rows], numeric=(2, 3, 4, 5), classes=classes),
    ]
    return page(f"Compare {gate.base.name} → {gate.current.name}", "\n".join(body), depth=1)


def machine_section(machine: Machine, folder: str, gate: Gate, trends: Mapping[str, tuple[str, Trend]],
                    training: Sequence[tuple[str, StoredRun]]) -> list[str]:
    """A machine's part of the index: its runs, its last gate, per kind a table of its cases (latest
    value of each gated metric, last verdict, change points; linked to ``trends[case_id][0]``), its training runs."""
    first, last = machine.runs[0], machine.runs[-1]
    out = [f"<h2>Machine <code>{esc(machine.key)}</code></h2>",
           f"<p>{len(machine.runs)} runs, {esc(first.name)} ({esc(first.date)}) to {esc(last.name)} ({esc(last.date)}, commit {esc(last.commit)}).</p>"]
    names = {s.run.source: s.name for s in machine.runs}
    if len(machine.hosts.classes) > 1:  # timed metrics compare only within a class (harness/results/hosts.py)
        out.append("<p>Host classes: " + "; ".join(
            f"{c.number}: {esc(', '.join(names[r.source] for r in c.members))} ({esc(c.why)})" for c in machine.hosts.classes) + ".</p>")
    if gate.comparison is not None and gate.base is not None:
        summary = gate.comparison.summary()
        cls = "bad" if gate.comparison.regressions else "warn" if gate.comparison.not_comparable or gate.comparison.host else "good"
        out.append(f'<p class="{cls}">Last gate, {esc(gate.base.name)} → {esc(last.name)}: '
                   f"<b>{esc(summary)}</b> ({link(f'{folder}/compare.html', 'the compare table')})</p>")
    else:
        out.append(f'<p class="note">Last gate: {esc(gate.reason)}.</p>')
    verdicts = case_verdicts(gate.comparison)
    gated = {t.metric for t in parse_tolerances(None).active()}  # the default gate's metrics
    cases = machine.cases()
    for kind, spec in KINDS.items():
        ids = [cid for cid, k in cases.items() if k == kind]
        if not ids:
            continue
        # A gated metric no case of the machine records (instructions without --count-instructions) is no column.
        shown = [key for key in spec.metrics if key in gated and any(trends[cid][1].latest.get(key) is not None for cid in ids)]
        head = ["Case", *(f"{key} ({METRICS[key].unit})" for key in shown), "Last gate", "Change points"]
        rows, classes = [], {}
        for i, cid in enumerate(ids):
            href, trend = trends[cid]
            verdict = verdicts.get(cid, "–")
            classes[i] = VERDICT_CLASS.get(verdict, "")
            rows.append([link(href, cid), *(esc(value_text(METRICS[key], trend.latest.get(key))) for key in shown), esc(verdict),
                         esc(_steps_text(trend.steps))])
        out += [f"<h3>{esc(kind)}: {esc(spec.meaning)}</h3>", table(head, rows, numeric=range(1, len(shown) + 1), classes=classes)]
    if training:
        out += ["<h3>Training runs</h3>", "<ul>", *(f"<li>{link(href, s.label)} ({esc(s.date)}, commit {esc(s.commit)})</li>" for href, s in training), "</ul>"]
    return out


def _steps_text(steps: Sequence[str]) -> str:
    """The first :data:`_STEPS_SHOWN` change points in words, and how many more the trend page has."""
    more = f"; and {len(steps) - _STEPS_SHOWN} more" if len(steps) > _STEPS_SHOWN else ""
    return "; ".join(steps[:_STEPS_SHOWN]) + more if steps else "–"


def index_page(storage: Storage, sections: Sequence[list[str]]) -> str:
    """The site's front page: the storage, the skipped files, then one section per machine."""
    runs = sum(len(m.runs) for m in storage.machines.values())
    body = [f"<p>{runs} runs of {len(storage.machines)} machine(s) from <code>{esc(storage.root)}</code>. "
            "Each case links to its trend page: every metric of its kind over the runs, detected steps marked.</p>"]
    if storage.skipped:
        body += ['<h2 class="warn">Skipped run files</h2>', "<ul>", *(f'<li class="warn">{esc(s)}</li>' for s in storage.skipped), "</ul>"]
    for section in sections:
        body += section
    return page("backbone-bench: runs over time", "\n".join(body), depth=0)

