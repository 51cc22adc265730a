"""Stored histories for the site tests: runs of a few cases written in the real format and layout.

Each run is what the plugin saves (``tests.data.synth``'s records, schema 4, settings and their
digest) under ``<storage>/<baseline_key>/NNNN_<name>.json``, one commit and one day apart, so
the site has a history to draw: A/A noise, a step, a settings change.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tests.data import synth

SLOW_FROM = 5  # the first slow run (0-based) of the stepped histories: halfway through ten


def write_history(storage: Path, factors: Sequence[float], *, seed: int = 0, backbones: Sequence[str] = ("resnet18", "efficientnet_b0"),
                  threads: Callable[[int], int] = lambda i: 4, train: bool = False, key: str = synth.CPU_KEY) -> list[Path]:
    """One run per entry of ``factors`` (its latency multiplier for every backbone), numbered from 0001.

    ``threads(i)``: the thread count run ``i`` records in its settings (another count: not comparable).
    ``train``: each run also holds one 3-seed train case with a learning curve.
    """
    rng = np.random.default_rng(seed)
    folder = storage / key
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, factor in enumerate(factors):
        benches: list[dict[str, Any]] = []
        for backbone in backbones:
            bench = synth.inference_case(backbone, synth.latency_samples(rng, synth.BACKBONES[backbone][3] * factor))
            benches.append(synth.with_settings(bench, schema=4, threads=threads(i)))
        if train:
            bench = synth.train_case("resnet18", "1k", 1000, [round(float(46 + rng.normal(0, 0.6)), 2) for _ in range(3)])
            bench["extra_info"]["curve"] = [{"epoch": e, "step": 10 * e, "loss": 2.3 / e, "val_top1": 46.0 * e / 3, "epoch_time_s": 1.0}
                                            for e in (1, 2, 3)]
            bench["extra_info"]["curve_split"] = "test"
            benches.append(synth.with_settings(bench, schema=4, threads=threads(i)))
        doc = synth.make_run(benches, key, schema=4)
        doc["commit_info"] = {**doc["commit_info"], "id": f"{i + 1:07x}" + "c0ffee" * 5, "time": f"2026-11-{i + 1:02d}T10:00:00+00:00"}
        doc["datetime"] = f"2026-11-{i + 1:02d}T10:05:00+00:00"
        path = folder / f"{i + 1:04d}_run{i + 1}.json"
        path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def stepped(n: int = 10, step: float = 1.3) -> list[float]:
    """Latency factors of ``n`` runs: 1.0, then ``step`` from run :data:`SLOW_FROM` on."""
    return [1.0 if i < SLOW_FROM else step for i in range(n)]
