"""Turn one or more runs into report.md, report.csv, deployment.csv and plots, written atomically into a folder.

One section per kind of the contract: inference tables, accuracy by training-subset size, and
batch plans; then the transfer sections (:mod:`harness.results.transfer`): data efficiency per
dataset and the deployment table joining each trained model's top-1 with its architecture's
latency and memory under the ``--max-latency-ms``/``--max-memory``/``--min-top1`` constraints.
Runs from several machines merge: the per-kind tables have one column group per machine
(``baseline_key``, labelled M1, M2, … with a legend). A plot without data is skipped with a
reason, never drawn empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from harness.contract import kind_metrics
from harness.files import write_atomic
from harness.results import dense_report, deployment, figures, robustness, transfer
from harness.results.runs import Run, RunError
from harness.results.selection_report import selection_section
from harness.results.transfer import MIB, ReportOptions, file_stems, md_table, num, pareto_front, top1_text

__all__ = ["ReportOptions", "ReportResult", "cases_frame", "pareto_front", "write_report"]
_CONFIG = ["device", "batch_size", "img_size", "precision", "runtime"]
_PLAN_CONFIG = ["device", "img_size", "precision", "plan_budget_bytes"]
_PLANNED = ("inference", "train")  # what a plan case sizes: plan_<what>_{estimated,searched}_max_batch
# Columns the tables and plots read; a run without e.g. train cases still gets them (empty).
_COLUMNS = list(dict.fromkeys([
    "kind", *_CONFIG, *_PLAN_CONFIG, "case_id", "backbone", "backbone_name", "protocol", "weights", "status", "error", "dataset", "subset",
    "train_size", "top1_std",
    *(m.key for m in kind_metrics()),
]))


@dataclass
class ReportResult:
    """What :func:`write_report` wrote, and the files (plots, deployment.csv) it skipped with the reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def cases_frame(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per (machine, case) with every scalar ``extra_info`` key and the settings digest (also
    for schema 1 runs); a later run's case replaces an earlier one."""
    rows = []
    for run in runs:
        for case in run.cases.values():
            scalars = {k: v for k, v in case.extra.items() if v is None or isinstance(v, (str, int, float, bool))}
            rows.append({"machine": run.baseline_key, "run": run.source, "commit": run.commit_info.get("id"), **scalars,
                         "settings_digest": case.settings_digest})
    # convert_dtypes keeps integer keys (batch_size, params) integers next to the NaNs of other kinds.
    frame = pd.DataFrame(rows)
    frame = frame.reindex(columns=[*frame.columns, *(c for c in _COLUMNS if c not in frame.columns)]).convert_dtypes()
    # A missing text key would be NA, and NA never equals itself when selecting a config group.
    text = ["device", "precision", "runtime"]
    frame[text] = frame[text].astype("string").fillna("-")
    # Keys absent from every record (runs before weights and protocols) would otherwise read as Int64.
    frame[["backbone_name", "protocol", "weights"]] = frame[["backbone_name", "protocol", "weights"]].astype("string")
    return frame.drop_duplicates(["machine", "case_id"], keep="last").reset_index(drop=True)


def _text(value: object) -> str:
    return "failed (no error message)" if value is None or pd.isna(value) else str(value).splitlines()[0]


def _mib(value: object) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value) / MIB:g} MiB"  # type: ignore[arg-type]


def _inference_tables(ok: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    out: list[str] = []
    inf = ok[ok["kind"] == "inference"]
    for (device, bs, size, precision, runtime), group in inf.groupby(_CONFIG, sort=True, dropna=False):
        table = group.groupby("backbone")[["params", "gmacs"]].first()
        columns = {"Params (M)": table["params"].map(lambda v: num(v / 1e6, 2)), "GMACs": table["gmacs"].map(lambda v: num(v, 4))}
        for machine, sub in group.groupby("machine"):
            sub = sub.set_index("backbone").reindex(table.index)
            tag = labels[str(machine)]
            columns[f"Latency p50 (ms) {tag}"] = sub["latency_p50_ms"].map(lambda v: num(v, 2))
            columns[f"Throughput (img/s) {tag}"] = sub["throughput_ips"].map(lambda v: num(v, 0))
            columns[f"Peak memory (MiB) {tag}"] = sub["peak_mem_bytes"].map(lambda v: num(v / MIB, 1))
        frame = pd.DataFrame(columns).rename_axis("Model").reset_index()
        out += [f"### inference · {device} · batch {bs} · {size} px · {precision} · {runtime}", "", md_table(frame), ""]
    return out


def _plan_tables(ok: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """Per (device, resolution, precision, budget): the largest batch each backbone fits, as the
    fit on two probe batches estimated it and as the search found it, for inference and training."""
    out: list[str] = []
    plan = ok[ok["kind"] == "plan"]
    for (device, size, precision, budget), group in plan.groupby(_PLAN_CONFIG, sort=True, dropna=False):
        models = pd.Index(sorted(group["backbone"].unique()), name="Model")
        columns: dict[str, pd.Series] = {}
        for machine, sub in group.groupby("machine"):
            sub = sub.set_index("backbone").reindex(models)
            tag = labels[str(machine)]
            for what in _PLANNED:
                for how in ("estimated", "searched"):
                    columns[f"{what.capitalize()} max batch, {how} {tag}"] = sub[f"plan_{what}_{how}_max_batch"].map(lambda v: num(v, 0))
        frame = pd.DataFrame(columns, index=models).reset_index()
        out += [f"### plan · {device} · {size} px · {precision} · budget {_mib(budget)}", "", md_table(frame), ""]
    return out


def _accuracy_tables(ok: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """Per dataset: top-1 ± std per (model, protocol) in one column per subset (and machine, when several)."""
    out: list[str] = []
    train = transfer.train_cases(ok)
    for dataset, group in train.groupby("dataset"):
        group = group.sort_values("train_size", kind="stable")
        many = group["machine"].nunique() > 1
        col = group["subset"] + (" " + group["machine"].map(labels) if many else "")
        show_px = transfer.px_ambiguous(group)
        frame = pd.DataFrame({
            "Model": [transfer.model_label(n, px, show_px) for n, px in zip(group["backbone_name"], group["train_px"], strict=True)],
            "Protocol": group["protocol"], "col": col,
            "cell": [top1_text(t, s) for t, s in zip(group["top1"], group["top1_std"], strict=True)],
        })
        order = list(dict.fromkeys(col))  # subsets in increasing train_size
        # Two cases in one cell (e.g. trained on two devices of one machine) show both, never one silently.
        wide = frame.pivot_table(index=["Model", "Protocol"], columns="col", values="cell", aggfunc=" / ".join)[order].reset_index()
        wide = wide.sort_values(["Model", "Protocol"], key=lambda c: c.map(transfer.PROTOCOL_ORDER).fillna(len(transfer.PROTOCOL_ORDER)) if c.name == "Protocol" else c)
        wide.columns.name = None
        out += [f"### {dataset}: top-1 % (mean ± std over seeds) by training-subset size", "", md_table(wide), ""]
    return out


def _reference(ok: pd.DataFrame) -> pd.DataFrame:
    """Inference rows of the (machine, config) group covering most backbones, smallest batch on ties."""
    inf = ok[ok["kind"] == "inference"]
    if inf.empty:
        return inf
    keys = ["machine", *_CONFIG]
    sizes = inf.groupby(keys, dropna=False)["backbone"].nunique().reset_index()
    sizes = sizes.sort_values(["backbone", "batch_size"], ascending=[False, True], kind="stable")
    best = sizes.iloc[0][keys]
    return inf[(inf[keys] == best.values).all(axis=1)]


def _describe(ref: pd.DataFrame) -> str:
    r = ref.iloc[0]
    return f"{r['device']} bs{r['batch_size']} {r['img_size']}px {r['precision']} on {r['machine']}"


def write_report(runs: Sequence[Run], out: Path, options: ReportOptions | None = None) -> ReportResult:
    """Write report.md, report.csv, deployment.csv and the PNGs for ``runs`` into ``out`` (created if needed).

    ``options`` pick the inference configuration joined to the trained models and the constraints
    (default: none). A device or batch size in them that no successful inference case has is a
    :class:`RunError` naming those that exist, raised before anything is written.
    """
    options = options or ReportOptions()
    if not runs:
        raise ValueError("write_report needs at least one run")
    # Only a shard whose cases all skipped holds no case: it adds nothing to a report.
    if not any(run.cases for run in runs):
        raise RunError(f"{', '.join(r.source for r in runs)}: no cases to report (a shard whose cases all skipped); report the merged run")
    runs = [run for run in runs if run.cases]
    result = ReportResult()
    frame = cases_frame(runs)
    labels = {m: f"[M{i + 1}]" for i, m in enumerate(dict.fromkeys(frame["machine"]))}
    ok = frame[frame["status"] == "ok"]
    choice = deployment.choose_inference(ok, options, labels)
    points = transfer.train_points(ok, runs)
    robust = robustness.robustness_frame(runs, options.robust_reference)  # issue 29 A: CE/mCE against the reference
    rows = deployment.deployment_frame(points, choice, options, robustness.mce_of(robust))
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# backbone-bench report", "", "Runs: " + ", ".join(f"`{r.source}`" for r in runs), "", "Machines:", ""]
    lines += [f"- {tag} `{m}`" for m, tag in labels.items()] + ["", "## Inference", ""]
    lines += _inference_tables(ok, labels) or ["No successful inference cases.", ""]
    lines += ["## Accuracy by training-subset size", ""] + (_accuracy_tables(ok, labels) or ["No successful train cases.", ""])
    lines += ["## Data efficiency", ""] + transfer.efficiency_tables(points, options)
    lines += selection_section(runs)
    if not robust.empty:  # robustness (issue 29 A)
        lines += ["## Robustness to camera corruptions", ""] + robustness.report_tables(robust)
    lines += ["## Deployment: top-1 within the latency and memory budget", ""] + deployment.deployment_tables(rows, choice, options)
    lines += dense_report.dense_section(ok, options, labels)  # dense (segmentation) cases: mIoU, --min-miou
    lines += ["## Batch plans", "", "Largest batch within the memory budget: estimated from two probe batches, and found by search.", ""]
    lines += _plan_tables(ok, labels) or ["No successful plan cases.", ""]
    lines += ["## Plots", ""]
    ref = _reference(ok)
    described = _describe(ref) if not ref.empty else "no inference case"
    plots = [*transfer.curve_plots(points), *deployment.pareto_plots(rows, choice, options),
             ("peak_memory.png", lambda p: figures.plot_memory(ref, ok[ok["kind"] == "train"], described, p)),
             ("latency.png", lambda p: figures.plot_latency(ref, described, p)),
             *((f"robustness_{stem}.png", lambda p, d=d: robustness.plot_severity(robust, d, p))
               for d, stem in file_stems([str(d) for d in dict.fromkeys(robust["dataset"])]).items())]
    for name, plot in plots:
        reason = plot(out / name)
        if reason:
            result.skipped.append(reason)
            lines += [f"- {reason}", ""]
        else:
            result.files.append(out / name)
            lines += [f"![{name}]({name})", ""]
    failed = frame[frame["status"] == "failed"]
    if not failed.empty:
        lines += ["## Failed cases", ""] + [f"- `{r['case_id']}` on {labels[r['machine']]}: {_text(r['error'])}" for _, r in failed.iterrows()]
    skipped_csv = deployment.write_deployment_csv(rows, out / "deployment.csv")
    result.skipped += [skipped_csv] if skipped_csv else []
    write_atomic(out / "report.csv", lambda tmp: frame.to_csv(tmp, index=False))
    write_atomic(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    result.files[:0] = [out / "report.md", out / "report.csv", *([] if skipped_csv else [out / "deployment.csv"])]
    return result
