"""The report's deployment section: each trained model's top-1 at each subset joined with the latency
p50 and peak memory of its architecture on one inference configuration, its place on the
(latency, top-1) Pareto front and whether it meets the command line's constraints; the same rows
as ``deployment.csv``, and ``pareto_<dataset>.png`` at each dataset's largest subset.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from harness.files import write_atomic
from harness.results.runs import RunError
from harness.results.transfer import (
    MIB,
    STYLES,
    Plot,
    ReportOptions,
    colours_of,
    file_stems,
    images_text,
    md_table,
    model_label,
    num,
    pareto_front,
    px_ambiguous,
    save_png,
    skip_plot,
    top1_text,
)

DEPLOYMENT_COLUMNS = [
    "dataset", "subset", "train_size", "backbone_name", "protocol", "train_img_size", "backbone", "top1", "top1_std", "seeds",
    "inference_device", "inference_batch_size", "inference_precision", "inference_runtime", "inference_machine",
    "inference_img_size", "inference_img_size_from", "latency_p50_ms", "peak_mem_bytes", "params", "pareto",
    "meets_constraints", "reasons",
    "mce",  # robustness (issue 29 A): mCE % against the reference backbone, with --robustness
]

@dataclass(frozen=True, eq=False)
class InferenceChoice:
    """The inference configuration the deployment table joins: its cases by (backbone, img_size)."""

    device: str | None = None
    batch_size: int | None = None
    precision: str | None = None
    runtime: str | None = None
    machine: str | None = None  # baseline_key
    label: str = ""  # the machine's [Mn] tag
    cases: Mapping[tuple[str, int], Mapping[str, Any]] | None = None
    params: Mapping[str, Any] | None = None  # per backbone, from any of its inference cases

    @property
    def text(self) -> str:
        if self.device is None:
            return "no successful inference cases in these runs"
        return f"{self.device} · batch {self.batch_size} · {self.precision} · {self.runtime} on {self.label}"

    def sizes(self, backbone: str) -> list[int]:
        return sorted(px for arch, px in self.cases or {} if arch == backbone)


def choose_inference(ok: pd.DataFrame, options: ReportOptions, labels: Mapping[str, str]) -> InferenceChoice:
    """The device (``--device``, else the one with most inference cases), batch (``--batch-size``, else
    the smallest on that device) and, within them, the (machine, precision, runtime) measuring most
    architectures (ties: fp32 eager, then the first machine). A device or batch that no successful
    inference case has is a :class:`RunError` naming those that exist."""
    inf = ok[(ok["kind"] == "inference") & (ok["latency_p50_ms"].notna() | ok["peak_mem_bytes"].notna())]
    counts = inf["device"].value_counts()
    devices = sorted(counts.index, key=lambda d: (-counts[d], d))
    if options.device is not None and options.device not in devices:
        have = f"the runs have: {', '.join(sorted(devices))}" if devices else "the runs have no successful inference case"
        raise RunError(f"no inference cases on {options.device}; {have}")
    if not devices:
        return InferenceChoice()
    device = options.device or devices[0]
    on = inf[inf["device"] == device]
    batches = sorted(int(b) for b in on["batch_size"].dropna().unique())
    if options.batch_size is not None and options.batch_size not in batches:
        raise RunError(f"no inference cases at batch {options.batch_size} on {device}; it has batch sizes: {', '.join(map(str, batches))}")
    batch = options.batch_size or batches[0]
    on = on[on["batch_size"] == batch]
    order = {m: i for i, m in enumerate(labels)}
    groups = on.groupby(["machine", "precision", "runtime"])["backbone"].nunique().reset_index()
    groups = groups.assign(_other=~((groups["precision"] == "fp32") & (groups["runtime"] == "eager")), _machine=groups["machine"].map(order))
    best = groups.sort_values(["backbone", "_other", "_machine", "precision", "runtime"], ascending=[False, True, True, True, True]).iloc[0]
    rows = on[(on["machine"] == best["machine"]) & (on["precision"] == best["precision"]) & (on["runtime"] == best["runtime"])]
    cases = {(str(r["backbone"]), int(r["img_size"])): r.to_dict() for _, r in rows.dropna(subset=["img_size"]).iterrows()}
    params = inf.dropna(subset=["params"]).groupby("backbone")["params"].first().to_dict()
    return InferenceChoice(device, batch, str(best["precision"]), str(best["runtime"]), str(best["machine"]), labels[best["machine"]], cases, params)


def _pick_px(sizes: list[int], train_px: int | None, wanted: int | None) -> tuple[int | None, str]:
    """The inference resolution joined to a model and why: its training resolution, else ``--img-size``,
    else the measured one nearest to either (ties: the smaller), else the smallest measured."""
    if not sizes:
        return None, ""
    if train_px in sizes:
        return train_px, "train"
    if wanted in sizes:
        return wanted, "img-size"
    target = train_px if train_px is not None else wanted
    if target is None:
        return sizes[0], "smallest"
    return min(sizes, key=lambda s: (abs(s - target), s)), "nearest"


def _px_note(arch: str, train_px: int | None, px: int | None, source: str, choice: InferenceChoice) -> str:
    trained = f"trained at {train_px} px" if train_px is not None else "training resolution not recorded"
    if px is None:
        return f"{arch}: no inference case on {choice.text}"
    only = len(choice.sizes(arch)) == 1
    how = {"img-size": f"--img-size, {px} px", "nearest": f"the nearest measured, {px} px",
           "smallest": f"the {'only resolution' if only else 'smallest'} measured, {px} px"}
    return "" if source == "train" else f"{arch} ({trained}): latency and memory joined at {how[source]}"


def _value(case: Mapping[str, Any] | None, key: str) -> float | None:
    value = None if case is None else case.get(key)
    return None if value is None or pd.isna(value) else float(value)


def _failures(top1: float, latency: float | None, memory: float | None, options: ReportOptions, where: str,
              mce: float | None = None) -> list[tuple[str, str]]:
    """(kind, reason) per broken constraint; a constraint whose measurement is missing is broken."""
    fails: list[tuple[str, str]] = []
    if options.max_latency_ms is not None:
        if latency is None:
            fails.append(("no latency measured", f"no latency measured for {where}"))
        elif latency > options.max_latency_ms:
            fails.append((f"latency > {options.max_latency_ms:g} ms", f"latency {latency:.2f} > {options.max_latency_ms:g} ms"))
    if options.max_memory_bytes is not None:
        limit = options.max_memory_bytes / MIB
        if memory is None:
            fails.append(("no peak memory measured", f"no peak memory measured for {where}"))
        elif memory > options.max_memory_bytes:
            fails.append((f"peak memory > {limit:g} MiB", f"peak memory {memory / MIB:.1f} > {limit:g} MiB"))
    if options.min_top1 is not None and top1 < options.min_top1:
        fails.append((f"top-1 < {options.min_top1:g} %", f"top-1 {top1:.1f} < {options.min_top1:g} %"))
    # --- robustness (issue 29 A): mCE against the reference backbone ---
    if options.max_mce is not None:
        if mce is None:
            fails.append(("no mCE measured", "no mCE measured (run with --robustness, and the reference backbone)"))
        elif mce > options.max_mce:
            fails.append((f"mCE > {options.max_mce:g} %", f"mCE {mce:.1f} > {options.max_mce:g} %"))
    return fails


def deployment_frame(points: pd.DataFrame, choice: InferenceChoice, options: ReportOptions,
                     mce: Mapping[tuple[str, str, str, int, int], float] | None = None) -> pd.DataFrame:
    """One row per curve point (dataset, subset, backbone_name, protocol, train px) with its architecture's
    latency, memory and params on ``choice``, the Pareto flag within its dataset and subset (NA without
    a latency), whether it meets the constraints, the reasons, and ``note``/``fail_kinds`` for the report."""
    rows = []
    for p in points.itertuples(index=False):
        train_px = None if pd.isna(p.train_px) else int(p.train_px)
        px, source = _pick_px(choice.sizes(p.backbone), train_px, options.img_size)
        case = (choice.cases or {}).get((p.backbone, px)) if px is not None else None
        latency, memory = _value(case, "latency_p50_ms"), _value(case, "peak_mem_bytes")
        shown = px if px is not None else train_px if train_px is not None else options.img_size
        where = (f"{p.backbone} on {choice.device} bs{choice.batch_size}" + (f" {shown}px" if shown is not None else "") if choice.device is not None
                 else f"{p.backbone} (the runs have no successful inference case)")
        point_mce = (mce or {}).get((str(p.dataset), str(p.backbone_name), str(p.protocol), -1 if train_px is None else train_px, int(p.train_size)))
        fails = _failures(p.top1, latency, memory, options, where, point_mce)
        rows.append({
            "dataset": p.dataset, "subset": p.subset, "train_size": p.train_size, "backbone_name": p.backbone_name, "protocol": p.protocol,
            "train_img_size": train_px, "backbone": p.backbone, "top1": p.top1, "top1_std": p.top1_std, "seeds": p.seeds,
            "inference_device": choice.device, "inference_batch_size": choice.batch_size, "inference_precision": choice.precision,
            "inference_runtime": choice.runtime, "inference_machine": choice.machine, "inference_img_size": px, "inference_img_size_from": source,
            "latency_p50_ms": latency, "peak_mem_bytes": None if memory is None else round(memory),
            "params": (choice.params or {}).get(p.backbone), "mce": point_mce, "pareto": None,
            "meets_constraints": not fails, "reasons": "; ".join(reason for _, reason in fails),
            "note": _px_note(p.backbone, train_px, px, source, choice) if choice.device is not None else "", "fail_kinds": [k for k, _ in fails],
        })
    frame = pd.DataFrame(rows, columns=[*DEPLOYMENT_COLUMNS, "note", "fail_kinds"])
    frame = frame.astype({"train_img_size": "Int64", "inference_img_size": "Int64", "inference_batch_size": "Int64", "seeds": "Int64",
                          "latency_p50_ms": "float64", "peak_mem_bytes": "Int64", "params": "Int64", "mce": "float64", "pareto": "boolean"})
    for _, g in frame.dropna(subset=["latency_p50_ms"]).groupby(["dataset", "train_size"]):
        front = set(pareto_front({str(i): (float(r["latency_p50_ms"]), float(r["top1"])) for i, r in g.iterrows()}))
        frame.loc[g.index, "pareto"] = [str(i) in front for i in g.index]
    return frame


def write_deployment_csv(frame: pd.DataFrame, path: Path) -> str | None:
    """``deployment.csv``: the deployment rows with :data:`DEPLOYMENT_COLUMNS`; skipped without train cases."""
    if frame.empty:
        return "deployment.csv skipped: no successful train cases in these runs"
    write_atomic(path, lambda tmp: frame[DEPLOYMENT_COLUMNS].to_csv(tmp, index=False))
    return None


def deployment_tables(frame: pd.DataFrame, choice: InferenceChoice, options: ReportOptions) -> list[str]:
    """The deployment section's Markdown: what was joined, the constraints, one table per dataset and
    subset with its best model within the constraints, and the resolution notes."""
    if frame.empty:
        return ["No successful train cases.", ""]
    out = [f"Latency and memory of each architecture: {choice.text}, at the model's training resolution "
           "(a cell marked @N px was measured at another resolution: see the notes).", "",
           f"Constraints: {options.constraints()}.", "",
           "Pareto ★: no other model in the table is at least as fast (latency p50) and as accurate (top-1) and better in one; "
           "– where no latency was measured.", ""]
    notes = list(dict.fromkeys(n for n in frame["note"] if n))
    out += ["Notes:", "", *(f"- {n}" for n in notes), ""] if notes else []
    for (dataset, size), g in frame.groupby(["dataset", "train_size"], sort=True):
        g = g.sort_values(["top1", "latency_p50_ms", "backbone_name"], ascending=[False, True, True], na_position="last")
        at = [f" @{px}px" if src not in ("train", "") else "" for px, src in zip(g["inference_img_size"], g["inference_img_size_from"], strict=True)]
        table = pd.DataFrame({
            "Model": g["backbone_name"], "Protocol": g["protocol"], "Train px": g["train_img_size"],
            "Top-1 (%)": [top1_text(t, s) for t, s in zip(g["top1"], g["top1_std"], strict=True)],
            "Latency p50 (ms)": [num(v, 2) + (a if not pd.isna(v) else "") for v, a in zip(g["latency_p50_ms"], at, strict=True)],
            "Peak memory (MiB)": [num(None if pd.isna(v) else v / MIB, 1) + (a if not pd.isna(v) else "") for v, a in zip(g["peak_mem_bytes"], at, strict=True)],
            "Params (M)": [num(None if pd.isna(v) else v / 1e6, 2) for v in g["params"]],
            "Pareto": ["–" if pd.isna(f) else "★" if f else "" for f in g["pareto"]],
            "Meets constraints": ["✓" if m else f"✗ {r}" for m, r in zip(g["meets_constraints"], g["reasons"], strict=True)],
        })
        if g["mce"].notna().any():  # robustness (issue 29 A)
            table.insert(4, "mCE (%)", [num(v, 1) for v in g["mce"]])
        out += [f"### {dataset} · {g['subset'].iloc[0]} ({images_text(size)} training images)", "", md_table(table), "", _best(g), ""]
    return out


def _best(g: pd.DataFrame) -> str:
    """The highest top-1 meeting every constraint (``g`` is sorted best first), or why none does."""
    meets = g[g["meets_constraints"]]
    if meets.empty:
        kinds = Counter(kind for fails in g["fail_kinds"] for kind in fails)
        return "**Best within constraints:** none meets: " + ", ".join(f"{kind} ({n} of {len(g)})" for kind, n in kinds.items())
    b = meets.iloc[0]
    memory = None if pd.isna(b["peak_mem_bytes"]) else b["peak_mem_bytes"] / MIB
    return (f"**Best within constraints:** {b['backbone_name']} · {b['protocol']}: top-1 {top1_text(b['top1'], b['top1_std'])} %, "
            f"latency p50 {num(b['latency_p50_ms'], 2)} ms, peak memory {num(memory, 1)} MiB")


def pareto_plots(frame: pd.DataFrame, choice: InferenceChoice, options: ReportOptions) -> list[tuple[str, Plot]]:
    """``pareto_<dataset>.png`` per dataset at its largest subset, or the reason it is skipped."""
    if frame.empty:
        return [("pareto.png", skip_plot("pareto_<dataset>.png skipped: no successful train cases in these runs"))]
    colours = colours_of(list(frame["backbone_name"]))
    plots: list[tuple[str, Plot]] = []
    for dataset, stem in file_stems(list(frame["dataset"])).items():
        sub = frame[frame["dataset"] == dataset]
        rows = sub[sub["train_size"] == sub["train_size"].max()]
        name = f"pareto_{stem}.png"
        if rows["latency_p50_ms"].isna().all():
            reason = (f"{name} skipped: no model at the largest {dataset} subset ({images_text(rows['train_size'].iloc[0])} images) "
                      f"has both a top-1 and a latency ({choice.text})")
            plots.append((name, skip_plot(reason)))
        else:
            plots.append((name, functools.partial(_plot_pareto, rows, str(dataset), choice, options, colours)))
    return plots


def _plot_pareto(rows: pd.DataFrame, dataset: str, choice: InferenceChoice, options: ReportOptions, colours: Mapping[str, Any], path: Path) -> str | None:
    points = rows.dropna(subset=["latency_p50_ms"]).sort_values("latency_p50_ms")
    show_px = px_ambiguous(points.rename(columns={"train_img_size": "train_px"}))
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    for _, r in points.iterrows():
        on_front, alpha = bool(r["pareto"]), 1.0 if r["meets_constraints"] else 0.35  # faded: breaks a constraint
        ax.errorbar(r["latency_p50_ms"], r["top1"], yerr=0.0 if pd.isna(r["top1_std"]) else r["top1_std"], color=colours[r["backbone_name"]],
                    marker=STYLES.get(r["protocol"], ("-", "x"))[1], markersize=9 if on_front else 6, markeredgecolor="black" if on_front else "none",
                    capsize=3, alpha=alpha, linestyle="none", zorder=3)
        # Named on the plot, not through the legend: the point and its name read together.
        ax.annotate(f"{model_label(r['backbone_name'], r['train_img_size'], show_px)} · {r['protocol']}\n{r['latency_p50_ms']:.2f} ms, {r['top1']:.1f} %",
                    (r["latency_p50_ms"], r["top1"]), xytext=(6, 4), textcoords="offset points", fontsize=7, alpha=alpha)
    front = points[points["pareto"].fillna(False).astype(bool)]
    ax.step(front["latency_p50_ms"], front["top1"], where="post", color="black", linewidth=1, alpha=0.6, zorder=2, label="Pareto front")
    if options.max_latency_ms is not None:
        ax.axvline(options.max_latency_ms, color="tab:red", linestyle="--", linewidth=1, label=f"max latency {options.max_latency_ms:g} ms")
    if options.min_top1 is not None:
        ax.axhline(options.min_top1, color="tab:red", linestyle=":", linewidth=1, label=f"min top-1 {options.min_top1:g} %")
    subset = f"{rows['subset'].iloc[0]} ({images_text(rows['train_size'].iloc[0])} images)"
    faded = "; faded: breaks a constraint" if (~rows["meets_constraints"]).any() else ""
    ax.set(xscale="log", xlabel=f"latency p50 (ms, log scale): {choice.text}", ylabel="top-1 (%) ± std over seeds",
           title=f"Latency vs top-1: {dataset} · {subset}\nblack edge: Pareto front{faded}")
    # A tick at every 1-9 × 10^k with its plain value (3, 4, 5, … 20, 30): a 7 ms point reads off the
    # axis, where a log axis's own labels give three ticks across a decade.
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 3, 4, 5, 6, 7, 8, 9)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    low, high = float(points["latency_p50_ms"].min()), float(points["latency_p50_ms"].max())
    ax.set_xlim(low / 1.25, high * 1.6)  # room on the right for the last point's name
    ax.margins(y=0.12)  # and above the best point for its own
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, path)
    return None
