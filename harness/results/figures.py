"""The report's per-backbone pictures of inference: peak memory and latency.

Both read the report's reference configuration (the inference group covering most backbones), so
a backbone that was only profiled still appears: in the latency chart always, in the memory chart
with its inference bar alone, centred on its name rather than beside an empty training slot.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from harness.results.transfer import MIB, save_png

_COLOURS = {"inference": "tab:blue", "training": "tab:orange"}


def plot_memory(ref: pd.DataFrame, train: pd.DataFrame, described: str, path: Path) -> str | None:
    """Peak memory per backbone: the inference bar of ``ref`` and the largest training peak of ``train``,
    each backbone's bars centred on its tick (one bar when it has one), values written on the bars."""
    inference = ref.set_index("backbone")["peak_mem_bytes"].dropna() / MIB if not ref.empty else pd.Series(dtype=float)
    training = train.groupby("backbone")["peak_train_mem_bytes"].max().dropna() / MIB if not train.empty else pd.Series(dtype=float)
    bars = pd.DataFrame({"inference": inference, "training": training})
    if bars.dropna(how="all").empty:
        return "peak_memory.png skipped: no case reported peak_mem_bytes or peak_train_mem_bytes"
    bars = bars.dropna(how="all")
    fig = Figure(figsize=(max(6.0, 0.65 * len(bars) + 2.0), 4.8))
    ax = fig.subplots()
    width = 0.4
    labelled: set[str] = set()
    for x, (_, row) in enumerate(bars.iterrows()):
        present = [column for column in bars.columns if pd.notna(row[column])]
        for i, column in enumerate(present):
            centre = x + (i - (len(present) - 1) / 2) * width
            label = column if column not in labelled else None
            labelled.add(column)
            ax.bar(centre, row[column], width, color=_COLOURS[column], label=label)
            ax.annotate(f"{row[column]:.0f}", (centre, row[column]), ha="center", va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(range(len(bars)), list(bars.index), rotation=35, ha="right")
    ax.set(xlabel="backbone", ylabel="peak memory (MiB)",
           title=f"Peak memory per backbone\ninference: {described}; training: the largest peak of its train cases")
    ax.legend(loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    save_png(fig, path)
    return None


def plot_latency(ref: pd.DataFrame, described: str, path: Path) -> str | None:
    """Latency p50 of every profiled backbone in ``ref``, fastest first, a whisker up to its p90, the
    median written past each whisker: the one latency picture of backbones that were only profiled."""
    rows = ref.dropna(subset=["latency_p50_ms"]).sort_values("latency_p50_ms") if not ref.empty else ref
    if rows.empty:
        return "latency.png skipped: no successful inference case recorded latency_p50_ms"
    fig = Figure(figsize=(7.5, max(3.0, 0.32 * len(rows) + 1.5)))
    ax = fig.subplots()
    y = list(range(len(rows)))
    p50 = rows["latency_p50_ms"].astype(float)
    p90 = rows["latency_p90_ms"].astype(float) if "latency_p90_ms" in rows else p50
    ax.barh(y, p50, color=_COLOURS["inference"], height=0.6, label="p50")
    ax.errorbar(p50, y, xerr=[[0.0] * len(rows), (p90 - p50).clip(lower=0).fillna(0.0)], fmt="none", ecolor="black", capsize=2, linewidth=0.8, label="p50 to p90")
    for yi, value, end in zip(y, p50, p90.fillna(p50), strict=True):  # written past the whisker, never over it
        ax.annotate(f"{value:.2f} ms", (max(value, end), yi), va="center", fontsize=7, xytext=(4, 0), textcoords="offset points")
    ax.set_yticks(y, list(rows["backbone"]))
    ax.invert_yaxis()  # fastest on top
    ax.set_xlim(0, float(p90.max()) * 1.25)
    ax.set(xlabel="latency (ms)", ylabel="backbone", title=f"Inference latency per backbone\n{described}")
    ax.legend(loc="upper right", fontsize=8)  # beside the fastest, shortest bars
    ax.grid(axis="x", alpha=0.3)
    save_png(fig, path)
    return None
