"""The report's transfer sections: which pretrained backbone gives the best top-1 at a data size, within
a latency and memory budget on a device.

* Accuracy against training-subset size, one PNG per dataset (``accuracy_vs_subset_<dataset>.png``):
  one curve per (backbone_name, protocol), one colour per backbone_name, one line style and marker per
  protocol, error bars ± std over seeds.
* A data-efficiency table per dataset: top-1 at the smallest and largest subset, the smallest subset
  that reaches a target top-1, and the mean top-1 over log-size.
* A deployment table per dataset and subset: each trained model's top-1 joined with the latency p50 and
  peak memory of its architecture on one inference configuration, its place on the (latency, top-1)
  Pareto front and whether it meets the constraints; the same rows as ``deployment.csv``, and
  ``pareto_<dataset>.png`` at the dataset's largest subset.

Train records written before weights and protocols existed read as ``backbone_name = backbone``
trained from ``scratch``. The Markdown and PNG helpers live here and :mod:`harness.results.report`
imports them, so the two modules depend one way only.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullLocator

from harness.results.runs import Run, RunError
from harness.results.storage import write_atomic

MIB = 2**20
# A plot: draws into the path and returns None, or returns why it was skipped without writing.
Plot = Callable[[Path], "str | None"]
# Unset --target-top1: 90% of a curve's own best top-1, the usual "close to its plateau" threshold;
# it is relative, so a weak and a strong model are each asked how fast they approach their own best.
TARGET_FRACTION = 0.9
# Line style and marker per protocol (a protocol outside these: solid with crosses); their order is
# the order of rows and curves: from random weights to no training at all.
_STYLES = {"scratch": ("-", "o"), "finetune": ("--", "s"), "linear": (":", "^"), "knn": ("-.", "D")}
PROTOCOL_ORDER = {protocol: i for i, protocol in enumerate(_STYLES)}
_POINT = ["dataset", "backbone_name", "protocol", "train_px", "train_size"]
_CURVE = _POINT[:-1]
DEPLOYMENT_COLUMNS = [
    "dataset", "subset", "train_size", "backbone_name", "protocol", "train_img_size", "backbone", "top1", "top1_std", "seeds",
    "inference_device", "inference_batch_size", "inference_precision", "inference_runtime", "inference_machine",
    "inference_img_size", "inference_img_size_from", "latency_p50_ms", "peak_mem_bytes", "params", "pareto",
    "meets_constraints", "reasons",
]


@dataclass(frozen=True)
class ReportOptions:
    """The report's deployment options; ``None`` means the default named on each field."""

    device: str | None = None  # inference device joined; default: the device with most inference cases
    batch_size: int | None = None  # default: the smallest batch measured on that device
    img_size: int | None = None  # resolution joined when a model's training resolution was not measured
    max_latency_ms: float | None = None
    max_memory_bytes: int | None = None
    min_top1: float | None = None  # %
    target_top1: float | None = None  # %; default: TARGET_FRACTION of each curve's own best

    def constraints(self) -> str:
        """The constraints in words, e.g. ``latency p50 ≤ 10 ms, top-1 ≥ 55 %``."""
        parts = [
            f"latency p50 ≤ {self.max_latency_ms:g} ms" if self.max_latency_ms is not None else "",
            f"peak memory ≤ {self.max_memory_bytes / MIB:g} MiB" if self.max_memory_bytes is not None else "",
            f"top-1 ≥ {self.min_top1:g} %" if self.min_top1 is not None else "",
        ]
        return ", ".join(p for p in parts if p) or "none set (pass --max-latency-ms, --max-memory or --min-top1)"


# --- rendering helpers shared with report.py -----------------------------------------------------

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


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG, atomically."""
    FigureCanvasAgg(fig)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


def md_table(frame: pd.DataFrame) -> str:
    """A GitHub Markdown table; missing cells read ``–``."""
    cells = frame.astype(object).where(frame.notna(), "–").astype(str)
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns)
    return "\n".join([head, *("| " + " | ".join(row) + " |" for row in cells.to_numpy().tolist())])


def num(value: object, digits: int) -> str:
    """``value`` with ``digits`` decimals, or ``–`` when missing."""
    return "–" if value is None or pd.isna(value) else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


def top1_text(top1: object, std: object) -> str:
    """``70.0 ± 1.0`` (one decimal: seeds of a small-data run differ by tenths at best)."""
    return num(top1, 1) + ("" if std is None or pd.isna(std) else f" ± {float(std):.1f}")  # type: ignore[arg-type]


def _images(n: object) -> str:
    return f"{int(n):,}"  # type: ignore[call-overload]


# --- accuracy curves and data efficiency ---------------------------------------------------------

def train_cases(ok: pd.DataFrame) -> pd.DataFrame:
    """Successful train rows with a top-1, ``backbone_name`` and ``protocol`` filled in for old runs
    (the backbone, ``scratch``) and the training resolution as ``train_px``."""
    train = ok[(ok["kind"] == "train") & ok["top1"].notna() & ok["train_size"].notna()]
    return train.assign(backbone_name=train["backbone_name"].fillna(train["backbone"]),
                        protocol=train["protocol"].fillna("scratch"), train_px=train["img_size"])


def train_points(ok: pd.DataFrame, runs: Sequence[Run]) -> pd.DataFrame:
    """One row per curve point (dataset, backbone_name, protocol, train_px, train_size) with ``top1``,
    ``top1_std`` and ``seeds``. Cases of one point from several machines pool their per-seed top-1
    (mean and sample std of all seeds); without per-seed values the means are averaged."""
    seeds = {(run.baseline_key, cid): _seeds(case.extra) for run in runs for cid, case in run.cases.items()}
    rows = []
    for key, g in train_cases(ok).groupby(_POINT, dropna=False, sort=False):
        found = [seeds.get((m, c), (None, None)) for m, c in zip(g["machine"], g["case_id"], strict=True)]
        if len(g) == 1:
            top1, std, n = g["top1"].iloc[0], g["top1_std"].iloc[0], found[0][1]
        elif all(values for values, _ in found):
            pooled = [v for values, _ in found for v in values or []]
            top1, std, n = statistics.fmean(pooled), statistics.stdev(pooled), len(pooled)
        else:
            top1, std, n = g["top1"].mean(), g["top1_std"].mean(), None
        rows.append({**dict(zip(_POINT, key, strict=True)), "backbone": g["backbone"].iloc[0], "subset": g["subset"].iloc[0],
                     "top1": float(top1), "top1_std": None if pd.isna(std) else float(std), "seeds": n})
    frame = pd.DataFrame(rows, columns=[*_POINT, "backbone", "subset", "top1", "top1_std", "seeds"])
    frame = frame.astype({"train_px": "Int64", "train_size": "int64", "seeds": "Int64", "top1_std": "float64"})
    rank = frame["protocol"].map(PROTOCOL_ORDER).fillna(len(PROTOCOL_ORDER))
    order = frame.assign(_rank=rank).sort_values(["dataset", "backbone_name", "_rank", "protocol", "train_px", "train_size"])
    return order.drop(columns="_rank").reset_index(drop=True)


def _seeds(extra: Mapping[str, Any]) -> tuple[list[float] | None, int | None]:
    values, listed = extra.get("top1_per_seed"), extra.get("seeds")
    values = [float(v) for v in values] if isinstance(values, list) and values else None
    return values, len(values) if values else len(listed) if isinstance(listed, list) else None


def px_ambiguous(frame: pd.DataFrame) -> bool:
    """Whether one (backbone_name, protocol) was trained at several resolutions: labels then show it."""
    return bool(len(frame)) and int(frame.groupby(["backbone_name", "protocol"])["train_px"].nunique(dropna=False).max()) > 1


def model_label(backbone_name: str, px: object, show_px: bool) -> str:
    """``resnet50.a1_in1k``, or ``resnet50.a1_in1k · 224px`` when the resolution tells rows apart."""
    return str(backbone_name) + (f" · {px}px" if show_px and not pd.isna(px) else "")


def mean_over_log_size(sizes: Sequence[float], top1: Sequence[float]) -> float:
    """Area under top-1 against log2(training images) (trapezoids) over the log2 range of ``sizes``
    (increasing): the mean top-1 over log-size, every doubling of the data weighted alike. One size:
    its top-1."""
    x = [math.log2(s) for s in sizes]
    if len(x) < 2 or x[-1] == x[0]:
        return float(statistics.fmean(top1))
    area = sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(zip(x, top1, strict=True)))
    return area / (x[-1] - x[0])


def efficiency_tables(points: pd.DataFrame, options: ReportOptions) -> list[str]:
    """Per dataset: one row per curve with top-1 at its smallest and largest subset, the smallest subset
    reaching the target, the mean top-1 over log-size and the seeds per point."""
    if points.empty:
        return ["No successful train cases.", ""]
    target = f"{options.target_top1:g} %" if options.target_top1 is not None else f"{TARGET_FRACTION:.0%} of each curve's own best top-1"
    out: list[str] = []
    for dataset, sub in points.groupby("dataset", sort=True):
        show_px, rows = px_ambiguous(sub), []
        for (_, name, protocol, px), g in sub.groupby(_CURVE, dropna=False, sort=False):
            goal = options.target_top1 if options.target_top1 is not None else TARGET_FRACTION * g["top1"].max()
            reached = g[g["top1"] >= goal]
            first, last = g.iloc[0], g.iloc[-1]
            rows.append({
                "Model": model_label(name, px, show_px), "Protocol": protocol,
                "Top-1 at smallest (%)": f"{top1_text(first['top1'], first['top1_std'])} @ {_images(first['train_size'])}",
                "Top-1 at largest (%)": f"{top1_text(last['top1'], last['top1_std'])} @ {_images(last['train_size'])}",
                "Target (%)": num(goal, 1),
                "Reaches target at (images)": _images(reached["train_size"].iloc[0]) if len(reached) else f"not reached (best {g['top1'].max():.1f})",
                "Mean top-1 over log-size (%)": num(mean_over_log_size(list(g["train_size"]), list(g["top1"])), 1),
                "Seeds": _seed_range(g["seeds"]),
            })
        out += [f"### {dataset}: data efficiency (target top-1: {target})", "", md_table(pd.DataFrame(rows)), ""]
    return out + ["Mean top-1 over log-size: the area under top-1 against log2(training images) divided by the log2 range of "
                  "that curve's own subsets; it compares curves measured over the same subsets.", ""]


def _seed_range(seeds: pd.Series) -> str:
    known = seeds.dropna()
    low, high = (int(known.min()), int(known.max())) if len(known) else (None, None)
    return "–" if low is None else str(low) if low == high else f"{low}–{high}"


def _skip(reason: str) -> Plot:
    """A plot that draws nothing and says why."""
    return lambda path: reason


def _colours(names: Sequence[str]) -> dict[str, Any]:
    """One colour per backbone_name, the same in every plot (tab10; tab20 past 10 names, then cycled)."""
    unique = sorted(set(names))
    cmap = colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(unique)}


def _stems(datasets: Sequence[str]) -> dict[str, str]:
    """The file-name part per dataset: runs of other characters than ``A-Za-z0-9._-`` become ``_``;
    two datasets that would clash get ``-2``, ``-3``."""
    stems: dict[str, str] = {}
    for dataset in sorted(set(datasets)):
        stem = base = re.sub(r"[^A-Za-z0-9._-]+", "_", str(dataset)).strip("._") or "dataset"
        for n in itertools.count(2):
            if stem not in stems.values():
                break
            stem = f"{base}-{n}"
        stems[dataset] = stem
    return stems


def curve_plots(points: pd.DataFrame) -> list[tuple[str, Plot]]:
    """``accuracy_vs_subset_<dataset>.png`` per dataset (or one skip when there is no train case)."""
    if points.empty:
        return [("accuracy_vs_subset.png", _skip("accuracy_vs_subset_<dataset>.png skipped: no successful train cases in these runs"))]
    colours = _colours(list(points["backbone_name"]))
    return [(f"accuracy_vs_subset_{stem}.png", functools.partial(_plot_curves, points[points["dataset"] == dataset], str(dataset), colours))
            for dataset, stem in _stems(list(points["dataset"])).items()]


def _plot_curves(sub: pd.DataFrame, dataset: str, colours: Mapping[str, Any], path: Path) -> str | None:
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    show_px = px_ambiguous(sub)
    for (_, name, protocol, px), g in sub.groupby(_CURVE, dropna=False, sort=False):
        line, marker = _STYLES.get(protocol, ("-", "x"))
        ax.errorbar(g["train_size"].astype(float), g["top1"], yerr=g["top1_std"].fillna(0.0), color=colours[name], linestyle=line,
                    marker=marker, capsize=3, label=f"{model_label(name, px, show_px)} · {protocol}")
    sizes = sorted(int(s) for s in sub["train_size"].unique())
    ax.set_xscale("log")
    ax.set_xticks(sizes, [_images(s) for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())  # ticks at the measured subset sizes only
    ax.set(xlabel="training images (log scale)", ylabel="top-1 (%), mean ± std over seeds", title=f"Accuracy vs training-subset size: {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a curve
    save_png(fig, path)
    return None


# --- deployment: top-1 joined with the architecture's latency and memory -------------------------

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


def _failures(top1: float, latency: float | None, memory: float | None, options: ReportOptions, where: str) -> list[tuple[str, str]]:
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
    return fails


def deployment_frame(points: pd.DataFrame, choice: InferenceChoice, options: ReportOptions) -> pd.DataFrame:
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
        fails = _failures(p.top1, latency, memory, options, where)
        rows.append({
            "dataset": p.dataset, "subset": p.subset, "train_size": p.train_size, "backbone_name": p.backbone_name, "protocol": p.protocol,
            "train_img_size": train_px, "backbone": p.backbone, "top1": p.top1, "top1_std": p.top1_std, "seeds": p.seeds,
            "inference_device": choice.device, "inference_batch_size": choice.batch_size, "inference_precision": choice.precision,
            "inference_runtime": choice.runtime, "inference_machine": choice.machine, "inference_img_size": px, "inference_img_size_from": source,
            "latency_p50_ms": latency, "peak_mem_bytes": None if memory is None else round(memory),
            "params": (choice.params or {}).get(p.backbone), "pareto": None,
            "meets_constraints": not fails, "reasons": "; ".join(reason for _, reason in fails),
            "note": _px_note(p.backbone, train_px, px, source, choice) if choice.device is not None else "", "fail_kinds": [k for k, _ in fails],
        })
    frame = pd.DataFrame(rows, columns=[*DEPLOYMENT_COLUMNS, "note", "fail_kinds"])
    frame = frame.astype({"train_img_size": "Int64", "inference_img_size": "Int64", "inference_batch_size": "Int64", "seeds": "Int64",
                          "latency_p50_ms": "float64", "peak_mem_bytes": "Int64", "params": "Int64", "pareto": "boolean"})
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
        out += [f"### {dataset} · {g['subset'].iloc[0]} ({_images(size)} training images)", "", md_table(table), "", _best(g), ""]
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
        return [("pareto.png", _skip("pareto_<dataset>.png skipped: no successful train cases in these runs"))]
    colours = _colours(list(frame["backbone_name"]))
    plots: list[tuple[str, Plot]] = []
    for dataset, stem in _stems(list(frame["dataset"])).items():
        sub = frame[frame["dataset"] == dataset]
        rows = sub[sub["train_size"] == sub["train_size"].max()]
        name = f"pareto_{stem}.png"
        if rows["latency_p50_ms"].isna().all():
            reason = (f"{name} skipped: no model at the largest {dataset} subset ({_images(rows['train_size'].iloc[0])} images) "
                      f"has both a top-1 and a latency ({choice.text})")
            plots.append((name, _skip(reason)))
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
                    marker=_STYLES.get(r["protocol"], ("-", "x"))[1], markersize=9 if on_front else 6, markeredgecolor="black" if on_front else "none",
                    capsize=3, alpha=alpha, linestyle="none", zorder=3, label=f"{model_label(r['backbone_name'], r['train_img_size'], show_px)} · {r['protocol']}")
    front = points[points["pareto"].fillna(False).astype(bool)]
    ax.step(front["latency_p50_ms"], front["top1"], where="post", color="black", linewidth=1, alpha=0.6, zorder=2, label="Pareto front")
    if options.max_latency_ms is not None:
        ax.axvline(options.max_latency_ms, color="tab:red", linestyle="--", linewidth=1, label=f"max latency {options.max_latency_ms:g} ms")
    if options.min_top1 is not None:
        ax.axhline(options.min_top1, color="tab:red", linestyle=":", linewidth=1, label=f"min top-1 {options.min_top1:g} %")
    subset = f"{rows['subset'].iloc[0]} ({_images(rows['train_size'].iloc[0])} images)"
    faded = "; faded: breaks a constraint" if (~rows["meets_constraints"]).any() else ""
    ax.set(xscale="log", xlabel=f"latency p50 (ms, log scale): {choice.text}", ylabel="top-1 (%) ± std over seeds",
           title=f"Latency vs top-1: {dataset} · {subset}\nblack edge: Pareto front{faded}")
    for axis in (ax.xaxis.set_major_formatter, ax.xaxis.set_minor_formatter):
        axis(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))  # 2, 3, 5 rather than 2×10⁰; minor labels only in narrow ranges
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save_png(fig, path)
    return None
