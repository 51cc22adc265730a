"""Robustness to camera corruptions from stored records: CE, mCE and relative mCE against a reference backbone.

Each train record run with ``--robustness`` stores its own top-1 per corruption and severity
(``robustness.top1``, mean over seeds) and its clean ``top1``. The corruption error of a case needs a
reference model's errors (Hendrycks & Dietterich 2019), so it is computed here, from records, by the
report and the site alike (one path for every number):

- ``CE_c = 100 * sum_s E(c, s) / sum_s E_ref(c, s)`` (errors ``E = 100 - top-1``, in %), mCE their mean;
- ``relative CE_c = 100 * sum_s (E(c, s) - E_clean) / sum_s (E_ref(c, s) - E_ref_clean)``, relative mCE their mean.

The reference is the case, among the runs read, of the same machine (baseline key), dataset, subset,
protocol, device, precision, resolution and corruption set whose backbone is ``reference`` (default:
the first backbone met, the matrix's order within one run), so the reference's own mCE is 100 %. A
CE whose reference denominator is zero (the reference made no error, or lost nothing) is undefined
and left out of the mean, and said.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from harness.results.runs import Run

# Cases whose CE compare: everything but the backbone (and its weights).
_GROUP = ("machine", "dataset", "subset", "protocol", "device", "precision", "img_size", "corruption_set")


@dataclass(frozen=True)
class CorruptionScore:
    """One case's CE per corruption, mCE and their relative forms (in %); ``None`` where undefined."""

    ce: dict[str, float | None]
    mce: float | None
    relative_ce: dict[str, float | None]
    relative_mce: float | None
    undefined: list[str] = field(default_factory=list)


def _mean(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return statistics.fmean(defined) if defined else None


def corruption_score(top1: Mapping[str, Sequence[float]], clean_top1: float, ref_top1: Mapping[str, Sequence[float]],
                     ref_clean_top1: float) -> CorruptionScore:
    """CE, mCE and relative mCE of a case's top-1 table (corruption -> top-1 % per severity) against the reference's."""
    ce: dict[str, float | None] = {}
    rel: dict[str, float | None] = {}
    undefined = []
    for name, values in top1.items():
        ref_values = ref_top1[name]
        errors, ref_errors = [100.0 - v for v in values], [100.0 - v for v in ref_values]
        denominator = sum(ref_errors)
        ce[name] = 100.0 * sum(errors) / denominator if denominator > 0 else None
        rel_denominator = sum(e - (100.0 - ref_clean_top1) for e in ref_errors)
        rel[name] = 100.0 * sum(e - (100.0 - clean_top1) for e in errors) / rel_denominator if rel_denominator > 0 else None
        if ce[name] is None or rel[name] is None:
            undefined.append(name)
    return CorruptionScore(ce, _mean(list(ce.values())), rel, _mean(list(rel.values())), undefined)


def robustness_frame(runs: Sequence[Run], reference: str | None = None) -> pd.DataFrame:
    """One row per successful train case run with ``--robustness``: its clean and mean corruption top-1, worst
    corruption, CE table, mCE and relative mCE against ``reference`` (a backbone name; default the first of
    each group). A group without the reference backbone gets no CE (``reference`` says ``missing``)."""
    rows: list[dict[str, Any]] = []
    for run in runs:
        for case_id, case in run.cases.items():
            e = case.extra
            table = e.get("robustness")
            if case.kind != "train" or case.status != "ok" or not isinstance(table, dict) or e.get("top1") is None:
                continue
            rows.append({
                "machine": run.baseline_key, "case_id": case_id, "dataset": e.get("dataset"), "subset": e.get("subset"),
                "train_size": e.get("train_size"), "protocol": e.get("protocol") or "scratch", "device": e.get("device"),
                "precision": e.get("precision"), "img_size": e.get("img_size"), "backbone": e.get("backbone"),
                "backbone_name": e.get("backbone_name") or e.get("backbone"), "top1": float(e["top1"]),
                "robust_top1": e.get("robust_top1"), "robust_worst": e.get("robust_worst"), "robust_worst_top1": e.get("robust_worst_top1"),
                "robust_time_s": e.get("robust_time_s"), "robust_cost_x": e.get("robust_cost_x"),
                "severities": list(table["severities"]), "table": {k: list(v) for k, v in table["top1"].items()},
                "corruption_set": json.dumps([sorted(table["top1"]), table["severities"], table.get("seed")]),
            })
    columns = [*_GROUP, "case_id", "train_size", "backbone", "backbone_name", "top1", "robust_top1", "robust_worst", "robust_worst_top1",
               "robust_time_s", "robust_cost_x", "severities", "table", "reference", "mce", "relative_mce", "ce", "relative_ce", "undefined"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    scored = []
    for _, group in frame.groupby(list(_GROUP), sort=False, dropna=False):
        names = list(dict.fromkeys(group["backbone_name"]))
        ref_name = reference if reference is not None else names[0]
        ref = group[group["backbone_name"] == ref_name]
        for _, row in group.iterrows():
            out = row.to_dict()
            if ref.empty:
                out.update(reference=f"{ref_name} (missing)", mce=None, relative_mce=None, ce={}, relative_ce={}, undefined=[])
            else:
                r = ref.iloc[0]
                score = corruption_score(row["table"], row["top1"], r["table"], r["top1"])
                out.update(reference=ref_name, mce=score.mce, relative_mce=score.relative_mce, ce=score.ce, relative_ce=score.relative_ce,
                           undefined=score.undefined)
            scored.append(out)
    return pd.DataFrame(scored, columns=columns)


def mce_of(frame: pd.DataFrame) -> dict[tuple[str, str, str, int, int], float]:
    """mCE by report point (dataset, backbone_name, protocol, train px, train size): what ``--max-mce`` reads.
    Cases of one point on several machines average."""
    out: dict[tuple[str, str, str, int, int], list[float]] = {}
    for _, r in frame.dropna(subset=["mce"]).iterrows():
        key = (str(r["dataset"]), str(r["backbone_name"]), str(r["protocol"]), int(r["img_size"]), int(r["train_size"]))
        out.setdefault(key, []).append(float(r["mce"]))
    return {k: statistics.fmean(v) for k, v in out.items()}


def severity_curve(row: Mapping[str, Any]) -> tuple[list[int], list[float]]:
    """Top-1 by severity, averaged over the case's corruptions: the accuracy-vs-severity curve (severity 0: clean)."""
    table: Mapping[str, Sequence[float]] = row["table"]
    severities = list(row["severities"])
    means = [statistics.fmean(values[i] for values in table.values()) for i in range(len(severities))]
    return [0, *severities], [float(row["top1"]), *means]


# --- the report's section and plot ---------------------------------------------------------------

def _pct(value: object, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and value != value) else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def report_tables(frame: pd.DataFrame) -> list[str]:
    """Per (dataset, subset, protocol): clean top-1, mean corruption top-1, mCE, relative mCE and the worst
    corruption per backbone; then CE per corruption. Empty when no case ran ``--robustness``."""
    from harness.results.transfer import md_table

    if frame.empty:
        return []
    out = ["Top-1 under each corruption of the corrupted test split, mean over severities "
           f"{', '.join(map(str, frame['severities'].iloc[0]))}; CE and mCE in % of the reference backbone's errors "
           "(the reference scores 100); relative mCE counts only the drop from each model's clean error.", ""]
    for (machine, dataset, subset, protocol), g in frame.groupby(["machine", "dataset", "subset", "protocol"], sort=False):
        ref = g["reference"].iloc[0]
        summary = pd.DataFrame({
            "Model": g["backbone_name"], "Clean top-1 (%)": g["top1"].map(_pct), "Mean corruption top-1 (%)": g["robust_top1"].map(_pct),
            "mCE (%)": g["mce"].map(_pct), "Relative mCE (%)": g["relative_mce"].map(_pct),
            "Worst corruption": [f"{w} ({_pct(t)} %)" for w, t in zip(g["robust_worst"], g["robust_worst_top1"], strict=True)],
            "Cost (x clean eval)": g["robust_cost_x"].map(lambda v: _pct(v, 1)),
        })
        out += [f"### {dataset} · {subset} · {protocol}: robustness (reference {ref}; {machine})", "", md_table(summary), ""]
        names = list(g["table"].iloc[0])
        ce = pd.DataFrame({"Model": g["backbone_name"], **{n: [_pct(c.get(n), 0) if c else "–" for c in g["ce"]] for n in names}})
        out += [f"CE per corruption (%), {dataset} · {subset} · {protocol}:", "", md_table(ce), ""]
        undefined = sorted({n for u in g["undefined"] for n in u})
        if undefined:
            out += [f"CE or relative CE undefined (the reference made no error, or lost nothing from its clean error, under them): {', '.join(undefined)}.", ""]
    return out


def plot_severity(frame: pd.DataFrame, dataset: str, path: Any) -> str | None:
    """Top-1 (mean over the corruptions) against severity, one line per backbone and protocol; severity 0 is clean."""
    from matplotlib.figure import Figure

    from harness.results.transfer import save_png

    rows = frame[frame["dataset"] == dataset]
    if rows.empty:
        return f"{path.name} skipped: no case on {dataset} ran --robustness"
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    # One colour per backbone, one line style per protocol: a backbone's protocols read as a family.
    colours = {name: f"C{i % 10}" for i, name in enumerate(dict.fromkeys(rows["backbone_name"]))}
    styles = {name: ("-", "--", ":", "-.")[i % 4] for i, name in enumerate(dict.fromkeys(rows["protocol"]))}
    for _, r in rows.iterrows():
        x, y = severity_curve(r)
        ax.plot(x, y, marker="o", color=colours[r["backbone_name"]], linestyle=styles[r["protocol"]],
                label=f"{r['backbone_name']} · {r['protocol']} · {r['subset']}")
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("top-1 (%), mean over corruptions")
    ax.set_title(f"{dataset}: accuracy vs corruption severity")
    # Below the axes: inside, the legend hid the curves it names.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    save_png(fig, path)
    return None
