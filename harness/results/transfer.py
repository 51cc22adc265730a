"""The report's transfer sections: which pretrained backbone gives the best top-1 at a data size, within
a latency and memory budget on a device.

* Accuracy against training-subset size, one PNG per dataset (``accuracy_vs_subset_<dataset>.png``):
  one curve per (backbone_name, protocol), one colour per backbone_name, one line style and marker per
  protocol, error bars ± std over seeds.
* A data-efficiency table per dataset: top-1 at the smallest and largest subset, the smallest subset
  that reaches a target top-1, and the mean top-1 over log-size.
* The deployment table, ``deployment.csv`` and ``pareto_<dataset>.png``: :mod:`harness.results.deployment`.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from harness.contract import PROTOCOLS
from harness.files import write_atomic
from harness.results.runs import Run

MIB = 2**20
# A plot: draws into the path and returns None, or returns why it was skipped without writing.
Plot = Callable[[Path], "str | None"]
# Unset --target-top1: 90% of a curve's own best top-1, the usual "close to its plateau" threshold;
# it is relative, so a weak and a strong model are each asked how fast they approach their own best.
TARGET_FRACTION = 0.9
# Line style and marker per protocol (a protocol outside these: solid with crosses). Rows and curves
# follow the contract's order of protocols: from random weights to no training at all.
STYLES = {"scratch": ("-", "o"), "finetune": ("--", "s"), "linear": (":", "^"), "knn": ("-.", "D")}
PROTOCOL_ORDER = {protocol: i for i, protocol in enumerate(PROTOCOLS)}
_POINT = ["dataset", "backbone_name", "protocol", "train_px", "train_size"]
_CURVE = _POINT[:-1]


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
    # --- dense (segmentation) constraints: harness.results.dense_report ---
    min_miou: float | None = None  # %
    # --- robustness (issue 29 A) ---
    max_mce: float | None = None  # %; a case's mCE against the reference backbone (harness.results.robustness)
    robust_reference: str | None = None  # the backbone mCE is relative to; default: each group's first backbone

    def constraints(self) -> str:
        """The constraints in words, e.g. ``latency p50 ≤ 10 ms, top-1 ≥ 55 %``."""
        parts = [
            f"latency p50 ≤ {self.max_latency_ms:g} ms" if self.max_latency_ms is not None else "",
            f"peak memory ≤ {self.max_memory_bytes / MIB:g} MiB" if self.max_memory_bytes is not None else "",
            f"top-1 ≥ {self.min_top1:g} %" if self.min_top1 is not None else "",
            f"mCE ≤ {self.max_mce:g} %" if self.max_mce is not None else "",
        ]
        return ", ".join(p for p in parts if p) or "none set (pass --max-latency-ms, --max-memory, --min-top1 or --max-mce)"


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


def images_text(n: object) -> str:
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
                "Top-1 at smallest (%)": f"{top1_text(first['top1'], first['top1_std'])} @ {images_text(first['train_size'])}",
                "Top-1 at largest (%)": f"{top1_text(last['top1'], last['top1_std'])} @ {images_text(last['train_size'])}",
                "Target (%)": num(goal, 1),
                "Reaches target at (images)": images_text(reached["train_size"].iloc[0]) if len(reached) else f"not reached (best {g['top1'].max():.1f})",
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


def skip_plot(reason: str) -> Plot:
    """A plot that draws nothing and says why."""
    return lambda path: reason


def colours_of(names: Sequence[str]) -> dict[str, Any]:
    """One colour per backbone_name, the same in every plot (tab10; tab20 past 10 names, then cycled)."""
    unique = sorted(set(names))
    cmap = colormaps["tab10" if len(unique) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(unique)}


def file_stems(datasets: Sequence[str]) -> dict[str, str]:
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
        return [("accuracy_vs_subset.png", skip_plot("accuracy_vs_subset_<dataset>.png skipped: no successful train cases in these runs"))]
    colours = colours_of(list(points["backbone_name"]))
    return [(f"accuracy_vs_subset_{stem}.png", functools.partial(_plot_curves, points[points["dataset"] == dataset], str(dataset), colours))
            for dataset, stem in file_stems(list(points["dataset"])).items()]


def _plot_curves(sub: pd.DataFrame, dataset: str, colours: Mapping[str, Any], path: Path) -> str | None:
    fig = Figure(figsize=(7.5, 4.8))
    ax = fig.subplots()
    show_px = px_ambiguous(sub)
    if sub["train_size"].nunique() == 1:
        return _plot_one_size(sub, dataset, colours, show_px, fig, path)
    for (_, name, protocol, px), g in sub.groupby(_CURVE, dropna=False, sort=False):
        line, marker = STYLES.get(protocol, ("-", "x"))
        ax.errorbar(g["train_size"].astype(float), g["top1"], yerr=g["top1_std"].fillna(0.0), color=colours[name], linestyle=line,
                    marker=marker, capsize=3, label=f"{model_label(name, px, show_px)} · {protocol}")
    sizes = sorted(int(s) for s in sub["train_size"].unique())
    ax.set_xscale("log")
    ax.set_xticks(sizes, [images_text(s) for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())  # ticks at the measured subset sizes only
    ax.set(xlabel="training images (log scale)", ylabel="top-1 (%), mean ± std over seeds", title=f"Accuracy vs training-subset size: {dataset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a curve
    save_png(fig, path)
    return None


def _plot_one_size(sub: pd.DataFrame, dataset: str, colours: Mapping[str, Any], show_px: bool, fig: Figure, path: Path) -> str | None:
    """One subset size makes no curve: top-1 ± std per model as named points, best first."""
    ax = fig.axes[0]
    rows = sub.sort_values("top1", ascending=False).reset_index(drop=True)
    names = [f"{model_label(r['backbone_name'], r['train_px'], show_px)} · {r['protocol']}" for _, r in rows.iterrows()]
    for x, r in rows.iterrows():
        ax.errorbar(x, r["top1"], yerr=0.0 if pd.isna(r["top1_std"]) else r["top1_std"], color=colours[r["backbone_name"]],
                    marker=STYLES.get(r["protocol"], ("-", "x"))[1], markersize=8, capsize=3, linestyle="none")
        ax.annotate(f"{r['top1']:.1f} %", (x, r["top1"]), xytext=(8, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=20, ha="right")
    ax.set_xlim(-0.6, len(rows) - 0.4)
    size = images_text(int(rows["train_size"].iloc[0]))
    ax.set(xlabel="model · protocol", ylabel="top-1 (%), mean ± std over seeds",
           title=f"Top-1 at the one training-subset size: {dataset} · {size} images\n(--subsets with two or more sizes draws the curve)")
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path)
    return None
