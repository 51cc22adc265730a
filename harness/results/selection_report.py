"""The report's account of how each training case was run: its schedule, and the hyperparameters it
chose on held-out data (grid, each point's validation top-1, the choice), per seed.

A reader of the accuracy tables needs this to trust them: a verdict between two protocols holds
only if each trained long enough and was tuned on validation data, and this section shows both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from harness.results.runs import Run


def _g(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _search_rows(case_id: str, tuning: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = []
    for seed, entry in enumerate(tuning):
        # A probe's entry is one search; a fine-tune's holds its head's L2 search and its lr search.
        searches = [("", entry)] if "param" in entry else [(f"{part}: ", entry[part]) for part in ("head_l2", "lr") if part in entry]
        for label, search in searches:
            points = ", ".join(f"{_g(v)} → {t:.1f}" for v, t in zip(search["grid"], search["val_top1"], strict=True))
            rows.append(f"| `{case_id}` | {seed} | {label}{search['param']} | {points} | **{_g(search['chosen'])}** | "
                        f"{search['fit_images']} / {search['val_images']} |")
    return rows


def selection_section(runs: Iterable[Run]) -> list[str]:
    """Markdown lines: each train case's schedule, then every search it made (empty when none)."""
    schedules, searches, small_maps = [], [], []
    for run in runs:
        for case_id, case in run.cases.items():
            extra = case.extra
            if extra.get("kind") != "train":
                continue
            if extra.get("steps") is not None:
                schedules.append(f"| `{case_id}` | {extra['steps']} | {extra.get('warmup_steps', '–')} | "
                                 f"{_g(extra.get('epochs_equivalent', '–'))} | {extra.get('schedule_rule', '–')} |")
            searches += _search_rows(case_id, extra.get("tuning") or [])
            if extra.get("feature_map_px") == 1:
                small_maps.append(f"- `{case_id}`: {extra.get('feature_map_note', '1×1 feature map')}")
    lines: list[str] = []
    if schedules:
        lines += ["## Training schedules", "", "Optimiser steps per seed and the rule that chose them "
                  "(`harness.training.schedule`: BiT's HyperRule with a 100-step row below 1,000 images).", "",
                  "| case | steps | warm-up steps | epochs equivalent | rule |", "|---|---|---|---|---|", *schedules, ""]
    if searches:
        lines += ["## Hyperparameters chosen on validation", "", "Each point trained on the fit part of the subset and was scored "
                  "on its stratified 20 % validation part (top-1 %); the chosen point was retrained on the whole subset, and only "
                  "that model met the test split. Ties in top-1 go to the lower validation cross-entropy.", "",
                  "| case | seed | searched | grid point → validation top-1 | chosen | fit / validation images |",
                  "|---|---|---|---|---|---|", *searches, ""]
    if small_maps:
        lines += ["## Backbones left a 1×1 feature map", "", *small_maps, ""]
    return lines
