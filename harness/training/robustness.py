"""``--robustness``: a trained or probed model's top-1 on the corrupted test splits, and its record keys.

A protocol hands :func:`corruption_top1` a scorer (the class scores of one corrupted split: a frozen
protocol's head on the split's cached features, a trained network's logits) and gets top-1 per
corruption and severity for one seed. :func:`robustness_keys` folds the seeds into the train kind's
record: the table by corruption and severity (mean over seeds), ``robust_top1`` (the mean corruption
accuracy) per seed and its mean, the worst corruption, and the cost. CE, mCE and relative mCE need a
reference backbone's errors: :mod:`harness.results.robustness` computes them from records.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from harness.contract import CORRUPTION_SEED
from harness.data.augment import prepare
from harness.data.batches import Batches
from harness.data.corruptions import corrupted_split
from harness.data.types import TensorSplit
from harness.runtime.devices import synchronize
from harness.training.classification import topk_accuracy
from harness.training.loop import EVAL_BATCH

# Class scores [N, C] (any device) and labels [N] of one corrupted split, named by corruption and severity.
Scorer = Callable[[str, int], tuple[torch.Tensor, torch.Tensor]]


# A scorer's name for the test split itself, uncorrupted (no corruption row has it).
CLEAN = "clean"


def clean_seconds(scorer: Scorer, device: torch.device) -> float:
    """Seconds of ``scorer`` on the clean test split: the evaluation robustness's cost is measured against."""
    synchronize(device)
    start = time.perf_counter()
    scorer(CLEAN, 0)
    synchronize(device)
    return time.perf_counter() - start


@dataclass(frozen=True)
class SeedRobustness:
    """One seed's top-1 (%) by corruption, one value per severity in ``severities`` order, and its seconds."""

    top1: dict[str, list[float]]
    seconds: float

    @property
    def mean(self) -> float:
        """The mean corruption accuracy: every corruption and severity weighted alike."""
        return statistics.fmean(v for values in self.top1.values() for v in values)


def corruption_top1(scorer: Scorer, corruptions: Sequence[str], severities: Sequence[int], device: torch.device) -> SeedRobustness:
    """Top-1 of ``scorer`` on every corrupted split; the seconds include corrupting, extracting and scoring."""
    synchronize(device)
    start = time.perf_counter()
    top1 = {}
    for name in corruptions:
        row = []
        for severity in severities:
            scores, labels = scorer(name, severity)
            row.append(topk_accuracy(scores.float().cpu(), labels.cpu(), k=1))
        top1[name] = row
    synchronize(device)
    return SeedRobustness(top1, time.perf_counter() - start)


def robustness_keys(seeds: Sequence[SeedRobustness], severities: Sequence[int], clean_eval_s: float) -> dict[str, Any]:
    """The record keys of ``seeds``: ``robustness`` (the table, mean over seeds, and what was run),
    ``robust_top1`` and its per-seed samples, the worst corruption, ``robust_time_s`` per seed and
    ``robust_cost_x``, that time as a multiple of ``clean_eval_s`` (the clean test split's evaluation, per seed)."""
    names = list(seeds[0].top1)
    table = {name: [statistics.fmean(s.top1[name][i] for s in seeds) for i in range(len(severities))] for name in names}
    by_corruption = {name: statistics.fmean(values) for name, values in table.items()}
    worst = min(by_corruption, key=lambda name: by_corruption[name])
    per_seed = [s.mean for s in seeds]
    seconds = statistics.fmean(s.seconds for s in seeds)
    return {
        "robustness": {"severities": list(severities), "seed": CORRUPTION_SEED, "top1": table},
        "robust_top1": statistics.fmean(per_seed),
        "robust_top1_per_seed": per_seed,
        "robust_worst": worst,
        "robust_worst_top1": by_corruption[worst],
        "robust_time_s": seconds,
        "robust_cost_x": seconds / clean_eval_s if clean_eval_s > 0 else None,
    }


def network_scorer(model: torch.nn.Module, test: TensorSplit, *, img_size: int, mean: tuple[float, float, float],
                   std: tuple[float, float, float], device: torch.device, amp: torch.dtype | None) -> Scorer:
    """A trained network's scorer: each corrupted split (made on ``device`` at ``img_size``) through ``model``
    in eval mode, in batches of :data:`EVAL_BATCH` at the case's precision."""
    source = test.to(device)

    @torch.inference_mode()
    def score(name: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
        # CLEAN times the uncorrupted split through the same path: the cost robustness is a multiple of.
        split = source if name == CLEAN else corrupted_split(source, name, severity, img_size, seed=CORRUPTION_SEED)
        was_training = model.training
        model.eval()
        outs = []
        cast = torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext()
        try:
            with cast:
                for images, _ in Batches(split, device).iterate(EVAL_BATCH):
                    outs.append(model(prepare(images, size=img_size, mean=mean, std=std)).float().cpu())
        finally:
            model.train(was_training)
        return torch.cat(outs), split.labels

    return score
