"""A training run's robustness section (``--robustness``): the report's numbers, drawn with plotly.

Per dataset: a table of clean top-1, mean corruption top-1, mCE, relative mCE and the worst corruption per
backbone and protocol, and the curve of top-1 (mean over the corruptions) against severity, severity 0 being
the clean split. Both read :func:`harness.results.robustness.robustness_frame`, the report's own numbers.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.results.robustness import robustness_frame, severity_curve
from harness.results.runs import Run
from harness.results.site.markup import esc, figure_div, table

_DASHES = {"scratch": "solid", "finetune": "dash", "linear": "dot", "knn": "dashdot"}


def _num(value: object) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.1f}"  # type: ignore[arg-type]


def _severity_figure(rows: pd.DataFrame) -> dict[str, Any]:
    data = []
    for _, r in rows.iterrows():
        x, y = severity_curve(r)
        name = f"{r['backbone_name']} · {r['protocol']} · {r['subset']}"
        data.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": x, "y": y,
                     "line": {"dash": _DASHES.get(str(r["protocol"]), "solid")},
                     "hovertemplate": "severity %{x}: top-1 %{y:.1f}%<extra>" + esc(name) + "</extra>"})
    layout = {"margin": {"l": 70, "r": 20, "t": 20, "b": 55}, "hovermode": "closest", "legend": {"font": {"size": 11}},
              "xaxis": {"title": {"text": "corruption severity (0 = clean)"}, "tickvals": [0, 1, 2, 3, 4, 5]},
              "yaxis": {"title": {"text": "top-1 (%), mean over the corruptions"}}}
    return {"data": data, "layout": layout}


def robustness_section(run: Run) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """The section's HTML parts and its figures; nothing when no case ran ``--robustness``."""
    frame = robustness_frame([run])
    body: list[str] = []
    figures: dict[str, dict[str, Any]] = {}
    for n, (dataset, rows) in enumerate(frame.groupby("dataset", sort=True)):
        body.append(f"<h2>{esc(dataset)}: robustness to camera corruptions</h2>")
        body.append(f'<p class="note">mCE and relative mCE in % of the reference backbone ({esc(", ".join(dict.fromkeys(rows["reference"])))}), '
                    "which scores 100; lower is more robust.</p>")
        body.append(table(["Model", "Protocol", "Subset", "Clean top-1 %", "Mean corruption top-1 %", "mCE %", "Relative mCE %", "Worst corruption"],
                          [[str(r["backbone_name"]), str(r["protocol"]), str(r["subset"]), _num(r["top1"]), _num(r["robust_top1"]), _num(r["mce"]),
                            _num(r["relative_mce"]), f"{r['robust_worst']} ({_num(r['robust_worst_top1'])} %)"] for _, r in rows.iterrows()],
                          numeric=(3, 4, 5, 6)))
        figures[f"robust_{n}"] = _severity_figure(rows)
        body.append(figure_div(f"robust_{n}", 380))
    return body, figures
