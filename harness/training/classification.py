"""Classification metrics and seed aggregation used to report a trained backbone.

Accuracies are percentages (0-100); macro-F1 is a fraction (0-1), following how papers quote them.
All functions take logits (or scores) ``[N, C]`` and integer labels ``[N]``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from harness.training.trained import TrainResult


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("metrics need at least one sample; the evaluated split is empty")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) to match the logits' class count")


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    """Percentage of samples whose label is among the ``k`` highest scores.

    ``k`` larger than the class count counts every sample as correct (the top-k then holds all classes).
    Ties are broken by ``torch.topk`` (lowest index first on CPU).
    """
    _check(logits, labels)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hits = (top == labels[:, None]).any(dim=1)
    return 100.0 * hits.double().mean().item()


def _confusion(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    num_classes = logits.shape[1]
    preds = logits.argmax(dim=1)
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat.cpu(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def macro_f1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Unweighted mean of per-class F1 (0-1) over classes that occur in the labels or the predictions.

    Classes absent from both have an undefined F1 and are left out rather than counted as 0.
    """
    _check(logits, labels)
    conf = _confusion(logits, labels).double()
    tp = conf.diag()
    fp = conf.sum(dim=0) - tp
    fn = conf.sum(dim=1) - tp
    present = (tp + fp + fn) > 0
    f1 = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    return f1.mean().item()


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Top-1 accuracy (percent) of each class, i.e. its recall; ``nan`` for a class with no samples."""
    _check(logits, labels)
    conf = _confusion(logits, labels).double()
    support = conf.sum(dim=1)
    return [100.0 * c / s if s > 0 else math.nan for c, s in zip(conf.diag().tolist(), support.tolist(), strict=True)]


def epochs_to_target(curve: Sequence[Mapping[str, Any]], final: float, fraction: float = 0.95, key: str = "val_top1") -> int | None:
    """First epoch whose ``curve[key]`` reaches ``fraction`` (95%) of ``final``; ``None`` if none does.

    95% of the final accuracy is a common "time to near-convergence" marker: late-epoch gains
    after it are small compared with the run-to-run noise of small-data training.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    target = fraction * final
    for row in curve:
        if row[key] is not None and row[key] >= target:
            return int(row["epoch"])
    return None


def summarize_seeds(results: Sequence[TrainResult]) -> dict[str, Any]:
    """Mean top1/top5/macro-F1 over seeds, the sample std of top1 (0.0 for a single seed), per-seed top1."""
    if not results:
        raise ValueError("summarize_seeds needs at least one TrainResult; run at least one seed")
    top1 = [r.top1 for r in results]
    return {
        "seeds": len(results),
        "top1_mean": statistics.fmean(top1),
        "top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
        "top5_mean": statistics.fmean(r.top5 for r in results),
        "macro_f1_mean": statistics.fmean(r.macro_f1 for r in results),
        "top1_per_seed": top1,
    }
