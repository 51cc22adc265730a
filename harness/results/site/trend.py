"""One case's trend page: every metric of its kind over the machine's runs, with change points.

The metrics, their units, better direction and noise class come from the contract
(``KINDS[kind].metrics`` and ``METRICS``), so a metric added there gets its plot here without a
line of page code. Per metric: the value at each run (run number on x; run, commit and date on
hover; the axis labels carry each run's date and commit), the spread band where the metric's raw
samples are in its unit (:mod:`.data`), each detected change point as a red diamond with a dotted
line and the size of the step, each settings change (not comparable) as a grey dashed line, and,
for timed metrics, each change of host class (:mod:`harness.results.hosts`) as a purple dashed line
named "host changed", where the line breaks: segments are separate traces, never joined, and a host
change is never drawn as a step.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from harness.contract import KINDS, METRICS, Metric
from harness.results.compare import format_value
from harness.results.site.data import Machine, Point, Segment, Series, series
from harness.results.site.markup import esc, figure_div, page, table

# Values plotted in a readable unit: bytes as MiB (a y axis of 457,860,880 reads badly).
_SCALE = {"bytes": (2.0**20, "MiB")}
_BLUE, _RED, _GREY, _PURPLE = "#1f77b4", "#d62728", "#6e7781", "#8250df"
# At most about 12 labelled runs on the x axis: each label is three lines (run, date, commit) and
# 12 of them fit a 1000-pixel-wide plot without overlapping.
_MAX_TICKS = 12


@dataclass
class Trend:
    """What the index needs of a case's trend: its latest value per metric and its steps in words."""

    latest: dict[str, float] = field(default_factory=dict)
    steps: list[str] = field(default_factory=list)
    breaks: dict[str, str] = field(default_factory=dict)  # run name → why its host class changed (never a step)


def value_text(metric: Metric, value: float | None) -> str:
    """A value with its unit, as the compare table formats it (bytes as MiB, params in millions)."""
    text = format_value(metric.key, value)
    return text if value is None or metric.unit in ("bytes", "count") else f"{text} {metric.unit}"


def _levels(segment: Segment) -> list[float]:
    ends = [*segment.changes, len(segment.points)]
    starts = [0, *segment.changes]
    return [statistics.median(p.value for p in segment.points[s:e]) for s, e in zip(starts, ends, strict=True)]


def _step(before: float, after: float) -> str:
    return f"{(after - before) / abs(before) * 100:+.1f}%" if before else f"{after - before:+.4g}"


def _xaxis(points: list[Point]) -> dict[str, Any]:
    """The run-number axis, its ticks labelled with the run's number, date and commit."""
    runs = sorted({p.run.number: p.run for p in points}.items())
    every = max(1, -(-len(runs) // _MAX_TICKS))
    shown = runs[::every]
    return {"title": {"text": "run (storage order) · date · commit"}, "showgrid": True, "tickmode": "array",
            "tickvals": [n for n, _ in shown], "ticktext": [f"{n}<br>{r.date[:10]}<br>{r.commit[:7]}" for n, r in shown]}


def _figure(machine: Machine, s: Series, trend: Trend) -> dict[str, Any]:
    m = s.metric
    scale, unit = _SCALE.get(m.unit, (1.0, m.unit))
    data: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for i, seg in enumerate(s.segments):
        x = [p.run.number for p in seg.points]
        if s.band is not None and any(p.low is not None for p in seg.points):
            low = [None if p.low is None else p.low / scale for p in seg.points]
            high = [None if p.high is None else p.high / scale for p in seg.points]
            data.append({"type": "scatter", "x": x, "y": low, "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False})
            data.append({"type": "scatter", "x": x, "y": high, "mode": "lines", "line": {"width": 0}, "fill": "tonexty",
                         "fillcolor": "rgba(31,119,180,0.18)", "hoverinfo": "skip", "name": s.band, "showlegend": i == 0})
        changed = set(seg.changes)
        data.append({
            "type": "scatter", "x": x, "y": [p.value / scale for p in seg.points], "mode": "lines+markers",
            "name": f"host class {machine.hosts.of(seg.points[0].run.run).number} · settings {seg.points[0].case.settings_digest[:8]}",
            "showlegend": len(s.segments) > 1,
            "line": {"color": _BLUE}, "marker": {"color": [_RED if j in changed else _BLUE for j in range(len(x))],
                                                 "symbol": ["diamond" if j in changed else "circle" for j in range(len(x))],
                                                 "size": [12 if j in changed else 7 for j in range(len(x))]},
            "customdata": [[p.run.label, p.run.commit, p.run.date] for p in seg.points],
            "hovertemplate": f"%{{y:.4g}} {unit}<br>%{{customdata[0]}}<br>commit %{{customdata[1]}}<br>%{{customdata[2]}}<extra></extra>",
        })
        levels = _levels(seg)
        for k, at in enumerate(seg.changes):
            where = (seg.points[at - 1].run.number + seg.points[at].run.number) / 2
            step = _step(levels[k], levels[k + 1])
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": where, "x1": where, "y0": 0, "y1": 1,
                           "line": {"color": _RED, "dash": "dot", "width": 1.5}})
            notes.append({"x": where, "y": 1, "xref": "x", "yref": "paper", "yanchor": "bottom", "showarrow": False,
                          "text": f"step {step}", "font": {"color": _RED, "size": 11}})
            trend.steps.append(f"{m.key} {step} at {seg.points[at].run.name}")
        if seg.differs or seg.host:
            where = (s.segments[i - 1].points[-1].run.number + x[0]) / 2
            color = _PURPLE if seg.host else _GREY
            shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": where, "x1": where, "y0": 0, "y1": 1,
                           "line": {"color": color, "dash": "dash", "width": 1.5}})
            change = ("code digest changed" if seg.differs.startswith("code digest")
                       else "settings and code digest changed" if "code digest" in seg.differs else "settings changed")
            what = " · ".join([*(["host changed"] if seg.host else []), *([change] if seg.differs else [])])
            notes.append({"x": where, "y": 1 if seg.host else 0, "xref": "x", "yref": "paper", "yanchor": "bottom" if seg.host else "top",
                          "showarrow": False, "text": what, "hovertext": "<br>".join(t for t in (seg.host, seg.differs) if t),
                          "font": {"color": color, "size": 11}})
            if seg.host:
                trend.breaks.setdefault(seg.points[0].run.name, seg.host)
    better = "higher" if m.better == "higher" else "lower"
    return {"data": data, "layout": {
        "margin": {"l": 70, "r": 20, "t": 28, "b": 62}, "hovermode": "closest", "shapes": shapes, "annotations": notes,
        "xaxis": _xaxis(s.points),
        "yaxis": {"title": {"text": f"{unit} ({better} is better)"}, "rangemode": "tozero" if m.noise == "exact" else "normal"},
        "legend": {"orientation": "h", "y": 1.02, "x": 0, "yanchor": "bottom", "traceorder": "normal"},  # filled bands would reverse it
    }}


def trend_page(machine: Machine, case_id: str, kind: str) -> tuple[str, Trend]:
    """The HTML page of ``case_id`` on ``machine``, and what the index shows of it."""
    trend = Trend()
    figures: dict[str, dict[str, Any]] = {}
    body: list[str] = []
    absent: list[str] = []
    spec = KINDS.get(kind)
    metrics = [METRICS[key] for key in spec.metrics] if spec is not None else []
    for n, metric in enumerate(metrics):
        s = series(machine, case_id, metric)
        points = s.points
        if not points:
            absent.append(metric.key)
            continue
        trend.latest[metric.key] = points[-1].value
        gate = f"gate {metric.tolerance}" if metric.tolerance else "not gated"
        body.append(f"<h3>{esc(metric.key)}: {esc(metric.meaning)}</h3>")
        body.append(f'<p class="note">{esc(metric.unit)} · {esc(metric.better)} is better · noise: {esc(metric.noise)} · {esc(gate)} · '
                    f"latest {esc(value_text(metric, points[-1].value))} ({esc(points[-1].run.label)})"
                    + (f" · band: {esc(s.band)}" if s.band else "") + "</p>")
        figures[f"m{n}"] = _figure(machine, s, trend)
        body.append(figure_div(f"m{n}"))
    runs = [r for r in machine.runs if case_id in r.run.cases]
    last = runs[-1].run.cases[case_id] if runs else None
    head = [f'<p>Kind <b>{esc(kind)}</b> on machine <code>{esc(machine.key)}</code>: in {len(runs)} of {len(machine.runs)} runs.'
            f" Change points: {esc(', '.join(trend.steps) or 'none detected')}."
            + (" Host changes (timed metrics break there, never step): "
               + esc("; ".join(f"host break at {name} ({why})" for name, why in trend.breaks.items())) + "." if trend.breaks else "") + "</p>"]
    if last is not None:
        settings = [[esc(k), esc(v)] for k, v in last.settings.items()]
        head.append(f'<details><summary>Settings of the latest run (digest {esc(last.settings_digest)})</summary>{table(["setting", "value"], settings)}</details>')
    if absent:
        head.append(f'<p class="note">Not recorded by this case: {esc(", ".join(absent))}.</p>')
    return page(case_id, "\n".join([*head, *body]), depth=2, figures=figures), trend
