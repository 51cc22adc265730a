"""The report's dense section: per segmentation dataset, each backbone's mIoU and pixel accuracy (mean ±
std over seeds) with the latency of backbone + head at its dense resolution, its place on the
(latency, mIoU) Pareto front, and whether it meets ``--min-miou`` (and ``--max-latency-ms``)."""

from __future__ import annotations

import pandas as pd

from harness.results.transfer import ReportOptions, md_table, num, pareto_front

DENSE_CONFIG = ["dataset", "device", "img_size", "precision"]


def _failures(miou: float, latency: float | None, options: ReportOptions) -> list[str]:
    fails = []
    if options.min_miou is not None and miou < options.min_miou:
        fails.append(f"mIoU {miou:.1f} < {options.min_miou:g} %")
    if options.max_latency_ms is not None and (latency is None or latency > options.max_latency_ms):
        fails.append("no latency measured" if latency is None else f"latency {latency:.2f} > {options.max_latency_ms:g} ms")
    return fails


def dense_frame(ok: pd.DataFrame, options: ReportOptions) -> pd.DataFrame:
    """One row per successful dense case with its Pareto flag within its (dataset, device, px, precision, machine)
    group and whether it meets the constraints."""
    dense = ok[ok["kind"] == "dense"].copy()
    if dense.empty:
        return dense
    dense["pareto"] = False
    for _, g in dense.groupby([*DENSE_CONFIG, "machine"], dropna=False):
        front = set(pareto_front({str(i): (float(r["latency_p50_ms"]), float(r["miou"])) for i, r in g.iterrows()}))
        dense.loc[g.index, "pareto"] = [str(i) in front for i in g.index]
    reasons = [_failures(float(r["miou"]), None if pd.isna(r["latency_p50_ms"]) else float(r["latency_p50_ms"]), options)
               for _, r in dense.iterrows()]
    dense["meets_constraints"] = [not r for r in reasons]
    dense["reasons"] = ["; ".join(r) for r in reasons]
    return dense


def dense_section(ok: pd.DataFrame, options: ReportOptions, labels: dict[str, str]) -> list[str]:
    """The Markdown of the dense section."""
    frame = dense_frame(ok, options)
    lines = ["## Dense: segmentation probe on frozen features", ""]
    if frame.empty:
        return [*lines, "No successful dense cases.", ""]
    limits = [f"mIoU ≥ {options.min_miou:g} %" if options.min_miou is not None else "",
              f"latency p50 ≤ {options.max_latency_ms:g} ms" if options.max_latency_ms is not None else ""]
    lines += ["A linear head (BatchNorm + 1×1 conv) on the frozen backbone's maps; mIoU and pixel accuracy on the dataset's val split, "
              "mean ± std over seeds; latency: backbone + head + upsampling, batch 1, at the dense resolution. "
              "Pareto ★: no other case of the table is as fast and as accurate and better in one.", "",
              f"Constraints: {', '.join(x for x in limits if x) or 'none set (pass --min-miou, --max-latency-ms)'}.", ""]
    for (dataset, device, px, precision, machine), g in frame.groupby([*DENSE_CONFIG, "machine"], sort=True, dropna=False):
        g = g.sort_values(["miou", "latency_p50_ms"], ascending=[False, True])
        std = g["miou_std"] if "miou_std" in g else pd.Series([None] * len(g), index=g.index)
        table = pd.DataFrame({
            "Model": g["backbone_name"], "mIoU (%)": [f"{m:.1f} ± {s:.1f}" if s is not None and not pd.isna(s) else f"{m:.1f}" for m, s in zip(g["miou"], std, strict=True)],
            "Pixel acc (%)": g["pixel_acc"].map(lambda v: num(v, 1)), "Latency p50 (ms)": g["latency_p50_ms"].map(lambda v: num(v, 2)),
            "Pareto": ["★" if p else "" for p in g["pareto"]],
            "Meets constraints": ["✓" if m else f"✗ {r}" for m, r in zip(g["meets_constraints"], g["reasons"], strict=True)],
        })
        lines += [f"### {dataset} · {device} · {px} px · {precision} · {labels.get(str(machine), machine)}", "", md_table(table), ""]
        meets = g[g["meets_constraints"]]
        best = meets.iloc[0] if not meets.empty else None
        lines += [f"**Best within constraints:** {best['backbone_name']}: mIoU {best['miou']:.1f} %, latency p50 {num(best['latency_p50_ms'], 2)} ms"
                  if best is not None else f"**Best within constraints:** none of {len(g)} meets them", ""]
    return lines
