"""Turn one or more runs into report.md, report.csv and three plots, written atomically into a folder.

One section per kind of the contract: inference tables, accuracy by training-subset size, and
batch plans. Runs from several machines merge: every table has one column group per machine
(``baseline_key``, labelled M1, M2, … with a legend). A plot without data is skipped with a
reason, never drawn empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from harness.contract import kind_metrics
from harness.results.runs import Run, RunError
from harness.results.storage import write_atomic

MIB = 2**20
_CONFIG = ["device", "batch_size", "img_size", "precision", "runtime"]
_PLAN_CONFIG = ["device", "img_size", "precision", "plan_budget_bytes"]
_PLANNED = ("inference", "train")  # what a plan case sizes: plan_<what>_{estimated,searched}_max_batch
# Columns the tables and plots read; a run without e.g. train cases still gets them (empty).
_COLUMNS = list(dict.fromkeys([
    "kind", *_CONFIG, *_PLAN_CONFIG, "case_id", "backbone", "status", "error", "dataset", "subset", "train_size", "top1_std",
    *(m.key for m in kind_metrics()),
]))


@dataclass
class ReportResult:
    """What :func:`write_report` wrote, and the plots it skipped with the reason."""

    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def pareto_front(points: Mapping[str, tuple[float, float]]) -> list[str]:
    """Names of points ``(latency, accuracy)`` not dominated by another (lower latency, higher accuracy).

    A point is dominated when another is at least as good on both axes and strictly better on one;
    identical points do not dominate each other. Returned in order of increasing latency.
    """
    front = [
        name for name, (lat, acc) in points.items()
        if not any(lo <= lat and ao >= acc and (lo < lat or ao > acc) for lo, ao in points.values())
    ]
    return sorted(front, key=lambda name: points[name])


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
    return frame.drop_duplicates(["machine", "case_id"], keep="last").reset_index(drop=True)


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def _md_table(frame: pd.DataFrame) -> str:
    cells = frame.astype(object).where(frame.notna(), "–").astype(str)
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns)
    return "\n".join([head, *("| " + " | ".join(row) + " |" for row in cells.to_numpy().tolist())])


def _text(value: object) -> str:
    return "failed (no error message)" if value is None or pd.isna(value) else str(value).splitlines()[0]


def _num(value: object, digits: int) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def _mib(value: object) -> str:
    return "–" if value is None or pd.isna(value) else f"{float(value) / MIB:g} MiB"  # type: ignore[arg-type]


def _inference_tables(ok: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    out: list[str] = []
    inf = ok[ok["kind"] == "inference"]
    for (device, bs, size, precision, runtime), group in inf.groupby(_CONFIG, sort=True, dropna=False):
        table = group.groupby("backbone")[["params", "gmacs"]].first()
        columns = {"Params (M)": table["params"].map(lambda v: _num(v / 1e6, 2)), "GMACs": table["gmacs"].map(lambda v: _num(v, 4))}
        for machine, sub in group.groupby("machine"):
            sub = sub.set_index("backbone").reindex(table.index)
            tag = labels[str(machine)]
            columns[f"Latency p50 (ms) {tag}"] = sub["latency_p50_ms"].map(lambda v: _num(v, 2))
            columns[f"Throughput (img/s) {tag}"] = sub["throughput_ips"].map(lambda v: _num(v, 0))
            columns[f"Peak memory (MiB) {tag}"] = sub["peak_mem_bytes"].map(lambda v: _num(v / MIB, 1))
        frame = pd.DataFrame(columns).rename_axis("Model").reset_index()
        out += [f"### inference · {device} · batch {bs} · {size} px · {precision} · {runtime}", "", _md_table(frame), ""]
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
                    columns[f"{what.capitalize()} max batch, {how} {tag}"] = sub[f"plan_{what}_{how}_max_batch"].map(lambda v: _num(v, 0))
        frame = pd.DataFrame(columns, index=models).reset_index()
        out += [f"### plan · {device} · {size} px · {precision} · budget {_mib(budget)}", "", _md_table(frame), ""]
    return out


def _accuracy_tables(ok: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    out: list[str] = []
    train = ok[ok["kind"] == "train"]
    for dataset, group in train.groupby("dataset"):
        group = group.sort_values("train_size")
        cell = group.apply(lambda r: f"{r['top1']:.1f} ± {r.get('top1_std', 0) or 0:.1f}", axis=1)
        many = group["machine"].nunique() > 1
        col = group["subset"] + (" " + group["machine"].map(labels) if many else "")
        frame = pd.DataFrame({"Model": group["backbone"], "col": col, "cell": cell})
        order = list(dict.fromkeys(col))  # subsets in increasing train_size
        wide = frame.pivot(index="Model", columns="col", values="cell")[order].reset_index()
        wide.columns.name = None
        out += [f"### {dataset}: top-1 % (mean ± std over seeds) by training-subset size", "", _md_table(wide), ""]
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


def _best_top1(ok: pd.DataFrame) -> pd.Series:
    """Top-1 per backbone at the largest subset of the dataset most backbones trained on."""
    train = ok[ok["kind"] == "train"].dropna(subset=["top1"])
    if train.empty:
        return pd.Series(dtype=float)
    dataset = train.groupby("dataset")["backbone"].nunique().idxmax()
    train = train[train["dataset"] == dataset]
    largest = train[train["train_size"] == train.groupby("backbone")["train_size"].transform("max")]
    return largest.groupby("backbone")["top1"].mean()


def _plot_accuracy(ok: pd.DataFrame, path: Path) -> str | None:
    train = ok[ok["kind"] == "train"].dropna(subset=["top1", "train_size"])
    if train.empty:
        return "accuracy_vs_subset.png skipped: no successful train cases in these runs"
    datasets = sorted(train["dataset"].unique())
    fig = Figure(figsize=(6.5 * len(datasets), 4.5))
    for ax, dataset in zip(fig.subplots(1, len(datasets), squeeze=False)[0], datasets, strict=True):
        sub = train[train["dataset"] == dataset]
        for backbone, g in sub.groupby("backbone"):
            g = g.groupby("train_size")[["top1", "top1_std"]].mean().reset_index()
            ax.errorbar(g["train_size"], g["top1"], yerr=g.get("top1_std"), marker="o", capsize=3, label=str(backbone))
        ax.set(xscale="log", xlabel="training images (log)", ylabel="top-1 (%)", title=f"Sample efficiency: {dataset}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)
    return None


def _plot_pareto(ok: pd.DataFrame, path: Path, lines: list[str]) -> str | None:
    ref, top1 = _reference(ok), _best_top1(ok)
    lat = ref.set_index("backbone")["latency_p50_ms"].dropna() if not ref.empty else pd.Series(dtype=float)
    both = sorted(set(lat.index) & set(top1.index))
    if not both:
        return "latency_vs_accuracy.png skipped: no backbone has both an inference latency and a train top-1"
    points = {b: (float(lat[b]), float(top1[b])) for b in both}
    front = pareto_front(points)
    where = _describe(ref)
    fig = Figure(figsize=(7, 5))
    ax = fig.subplots()
    for name, (x, y) in points.items():
        ax.scatter(x, y, s=60 if name in front else 30, color="tab:red" if name in front else "tab:gray", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.step([points[n][0] for n in front], [points[n][1] for n in front], where="post", color="tab:red", label="Pareto front")
    ax.set(xlabel=f"latency p50 (ms), {where}", ylabel="top-1 (%) at largest subset", title="Latency vs accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    lines += [f"Pareto front (latency p50 lower, top-1 higher; {where}): " + ", ".join(front), ""]
    return None


def _plot_memory(ok: pd.DataFrame, path: Path) -> str | None:
    ref = _reference(ok)
    inf = ref.set_index("backbone")["peak_mem_bytes"].dropna() / MIB if not ref.empty else pd.Series(dtype=float)
    train = ok[ok["kind"] == "train"]
    tr = train.groupby("backbone")["peak_train_mem_bytes"].max().dropna() / MIB
    label = f"inference, {_describe(ref)}" if not ref.empty else "inference"
    bars = pd.DataFrame({label: inf, "training (largest)": tr}).dropna(axis=1, how="all")
    if bars.empty:
        return "peak_memory.png skipped: no case reported peak_mem_bytes or peak_train_mem_bytes"
    fig = Figure(figsize=(max(6.0, 1.1 * len(bars)), 4.5))
    ax = fig.subplots()
    width = 0.8 / len(bars.columns)
    for i, column in enumerate(bars.columns):
        ax.bar([x + i * width for x in range(len(bars))], bars[column].fillna(0), width, label=column)
    ax.set_xticks([x + width * (len(bars.columns) - 1) / 2 for x in range(len(bars))], bars.index, rotation=30, ha="right")
    ax.set(ylabel="peak memory (MiB)", title="Peak memory per backbone")
    ax.legend()
    _save(fig, path)
    return None


def write_report(runs: Sequence[Run], out: Path) -> ReportResult:
    """Write report.md, report.csv and the PNGs for ``runs`` into ``out`` (created if needed)."""
    if not runs:
        raise ValueError("write_report needs at least one run")
    # Only a shard whose cases all skipped holds no case: it adds nothing to a report.
    if not any(run.cases for run in runs):
        raise RunError(f"{', '.join(r.source for r in runs)}: no cases to report (a shard whose cases all skipped); report the merged run")
    runs = [run for run in runs if run.cases]
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult()
    frame = cases_frame(runs)
    labels = {m: f"[M{i + 1}]" for i, m in enumerate(dict.fromkeys(frame["machine"]))}
    ok = frame[frame["status"] == "ok"]
    lines = ["# backbone-bench report", "", "Runs: " + ", ".join(f"`{r.source}`" for r in runs), "", "Machines:", ""]
    lines += [f"- {tag} `{m}`" for m, tag in labels.items()] + ["", "## Inference", ""]
    lines += _inference_tables(ok, labels) or ["No successful inference cases.", ""]
    lines += ["## Accuracy by training-subset size", ""] + (_accuracy_tables(ok, labels) or ["No successful train cases.", ""])
    lines += ["## Batch plans", "", "Largest batch within the memory budget: estimated from two probe batches, and found by search.", ""]
    lines += _plan_tables(ok, labels) or ["No successful plan cases.", ""]
    lines += ["## Plots", ""]
    plots: dict[str, Callable[[Path], str | None]] = {"accuracy_vs_subset.png": lambda p: _plot_accuracy(ok, p), "latency_vs_accuracy.png": lambda p: _plot_pareto(ok, p, lines),
             "peak_memory.png": lambda p: _plot_memory(ok, p)}
    for name, plot in plots.items():
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
    write_atomic(out / "report.csv", lambda tmp: frame.to_csv(tmp, index=False))
    write_atomic(out / "report.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n", encoding="utf-8"))
    result.files[:0] = [out / "report.md", out / "report.csv"]
    return result
