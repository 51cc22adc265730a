"""A training run's page: the transfer report's plots, interactive.

For one stored run with train cases: each case's learning curve (top-1 and loss by epoch, from
the record's ``curve``, measured on the split ``curve_split`` names), then per dataset the
report's accuracy against training-subset size and its latency/top-1 Pareto plot at the largest
subset. The points, the inference configuration joined and the Pareto flags are the report's own
(:func:`~harness.results.transfer.train_points`, :func:`~harness.results.deployment.deployment_frame`),
with the report's default options; only the drawing is plotly's instead of matplotlib's.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.results import deployment, transfer
from harness.results.report import cases_frame
from harness.results.site.data import StoredRun
from harness.results.site.markup import esc, figure_div, page
from harness.results.site.robustness import robustness_section
from harness.results.transfer import ReportOptions

_MARKERS = {"scratch": "circle", "finetune": "square", "linear": "triangle-up", "knn": "diamond"}
_DASHES = {"scratch": "solid", "finetune": "dash", "linear": "dot", "knn": "dashdot"}


def has_training(stored: StoredRun) -> bool:
    """Whether the run holds a successful train case: only those get a page."""
    return any(c.kind == "train" and c.status == "ok" for c in stored.run.cases.values())


def _layout(x: str, y: str, *, log_x: bool = False) -> dict[str, Any]:
    return {"margin": {"l": 70, "r": 20, "t": 20, "b": 55}, "hovermode": "closest",
            "xaxis": {"title": {"text": x}, **({"type": "log"} if log_x else {})}, "yaxis": {"title": {"text": y}},
            "legend": {"font": {"size": 11}}}


def _curves(stored: StoredRun) -> dict[str, dict[str, Any]]:
    top1: list[dict[str, Any]] = []
    loss: list[dict[str, Any]] = []
    splits = set()
    for case_id, case in stored.run.cases.items():
        curve = case.extra.get("curve")
        if case.kind != "train" or not isinstance(curve, list) or not curve:
            continue
        splits.add(str(case.extra.get("curve_split") or "test"))
        epochs = [row.get("epoch") for row in curve]
        name = case_id.removeprefix("train/")
        top1.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": epochs, "y": [row.get("val_top1") for row in curve],
                     "hovertemplate": "epoch %{x}: top-1 %{y:.1f}%<extra>" + esc(name) + "</extra>"})
        loss.append({"type": "scatter", "mode": "lines+markers", "name": name, "x": epochs, "y": [row.get("loss") for row in curve],
                     "hovertemplate": "epoch %{x}: loss %{y:.3f}<extra>" + esc(name) + "</extra>"})
    if not top1:
        return {}
    split = "/".join(sorted(splits))
    return {"curve_top1": {"data": top1, "layout": _layout("epoch", f"top-1 on the {split} split (%)")},
            "curve_loss": {"data": loss, "layout": _layout("epoch", "training loss")}}


def _subset_figure(points: pd.DataFrame) -> dict[str, Any]:
    data = []
    for (name, protocol, px), g in points.groupby(["backbone_name", "protocol", "train_px"], dropna=False, sort=False):
        data.append({"type": "scatter", "mode": "lines+markers", "name": f"{name} · {protocol}" + ("" if pd.isna(px) else f" · {px}px"),
                     "x": [int(v) for v in g["train_size"]], "y": [float(v) for v in g["top1"]],
                     "error_y": {"type": "data", "array": [0.0 if pd.isna(v) else float(v) for v in g["top1_std"]], "visible": True},
                     "line": {"dash": _DASHES.get(str(protocol), "solid")}, "marker": {"symbol": _MARKERS.get(str(protocol), "x"), "size": 8}})
    layout = _layout("training images (log scale)", "top-1 (%), mean ± std over seeds", log_x=True)
    sizes = sorted({int(v) for v in points["train_size"]})
    layout["xaxis"].update(tickvals=sizes, ticktext=[f"{v:,}" for v in sizes])  # ticks at the measured sizes only, as the report
    return {"data": data, "layout": layout}


def _pareto_figure(rows: pd.DataFrame) -> dict[str, Any]:
    rows = rows.dropna(subset=["latency_p50_ms"]).sort_values("latency_p50_ms")
    data: list[dict[str, Any]] = []
    for _, r in rows.iterrows():
        front = bool(r["pareto"]) if not pd.isna(r["pareto"]) else False
        data.append({"type": "scatter", "mode": "markers", "name": f"{r['backbone_name']} · {r['protocol']}",
                     "x": [float(r["latency_p50_ms"])], "y": [float(r["top1"])],
                     "error_y": {"type": "data", "array": [0.0 if pd.isna(r["top1_std"]) else float(r["top1_std"])], "visible": True},
                     "marker": {"symbol": _MARKERS.get(str(r["protocol"]), "x"), "size": 12 if front else 8,
                                "line": {"width": 2 if front else 0, "color": "black"}}})
    front = rows[rows["pareto"].fillna(False).astype(bool)]
    data.append({"type": "scatter", "mode": "lines", "name": "Pareto front", "line": {"shape": "hv", "color": "black", "width": 1},
                 "x": [float(v) for v in front["latency_p50_ms"]], "y": [float(v) for v in front["top1"]], "hoverinfo": "skip"})
    return {"data": data, "layout": _layout("latency p50 (ms, log scale)", "top-1 (%) ± std over seeds", log_x=True)}


def training_page(stored: StoredRun) -> str:
    """The HTML page of one run's training: learning curves, accuracy by subset size, Pareto."""
    options = ReportOptions()
    frame = cases_frame([stored.run])
    ok = frame[frame["status"] == "ok"]
    labels = {m: f"[M{i + 1}]" for i, m in enumerate(dict.fromkeys(frame["machine"]))}
    points = transfer.train_points(ok, [stored.run])
    choice = deployment.choose_inference(ok, options, labels)
    rows = deployment.deployment_frame(points, choice, options)
    figures = _curves(stored)
    body = [f"<p>Run <code>{esc(stored.label)}</code>, commit {esc(stored.commit)}, {esc(stored.date)}.</p>", "<h2>Learning curves</h2>"]
    body += [figure_div("curve_top1"), figure_div("curve_loss")] if figures else ['<p class="note">No train case recorded a curve.</p>']
    for n, dataset in enumerate(sorted(points["dataset"].unique())):
        sub = points[points["dataset"] == dataset]
        figures[f"subset_{n}"] = _subset_figure(sub)
        body += [f"<h2>{esc(dataset)}: accuracy by training-subset size</h2>", figure_div(f"subset_{n}")]
        ds = rows[rows["dataset"] == dataset]
        largest = ds[ds["train_size"] == ds["train_size"].max()]
        body.append(f"<h2>{esc(dataset)}: latency vs top-1 at {esc(largest['subset'].iloc[0])} ({int(largest['train_size'].iloc[0]):,} images)</h2>")
        if largest["latency_p50_ms"].isna().all():
            body.append(f'<p class="note">No model has both a top-1 and a latency ({esc(choice.text)}): no Pareto plot.</p>')
        else:
            figures[f"pareto_{n}"] = _pareto_figure(largest)
            body += [f'<p class="note">Latency: {esc(choice.text)}. Black edge: on the Pareto front.</p>', figure_div(f"pareto_{n}", 380)]
    # --- robustness (issue 29 A): mCE, the worst corruption, accuracy vs severity ---
    robust_body, robust_figures = robustness_section(stored.run)
    body += robust_body
    figures.update(robust_figures)
    return page(f"Training: {stored.label}", "\n".join(body), depth=2, figures=figures)
