"""Segmentation metrics from one confusion matrix, as mmseg and DINOv2's evaluation compute them.

``confusion[t, p]`` counts labelled pixels of true class ``t`` predicted ``p``; pixels whose label is the
ignore index are not counted. IoU of a class is ``TP / (TP + FP + FN)``; a class with no pixel in either
the labels or the predictions has no IoU (NaN) and is left out of the mean (mmseg's ``nanmean``).
Pixel accuracy is the diagonal over all labelled pixels.
"""

from __future__ import annotations

import math

import torch

from harness.data.segmentation import IGNORE


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """``int64 [C, C]`` confusion counts of ``pred`` vs ``target`` (same shape, class indices), ignored pixels dropped."""
    if pred.shape != target.shape:
        raise ValueError(f"predictions {tuple(pred.shape)} and labels {tuple(target.shape)} differ in shape")
    keep = target != ignore
    t, p = target[keep].long().cpu(), pred[keep].long().cpu()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be {ignore}, got [{int(t.min())}, {int(t.max())}]")
    return torch.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: torch.Tensor) -> list[float]:
    """IoU in % per class; NaN where the class is in neither labels nor predictions."""
    tp = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - tp
    return [100.0 * float(t / u) if u > 0 else math.nan for t, u in zip(tp, union, strict=True)]


def mean_iou(conf: torch.Tensor) -> float:
    """Mean IoU in % over the classes that have one."""
    values = [v for v in iou_per_class(conf) if not math.isnan(v)]
    if not values:
        raise ValueError("no class has a labelled or predicted pixel: nothing to average")
    return sum(values) / len(values)


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Share of labelled pixels predicted right, in %."""
    total = int(conf.sum())
    if total == 0:
        raise ValueError("no labelled pixel: every pixel is ignored")
    return 100.0 * int(conf.diag().sum()) / total
