"""Exact-value tests of harness.training.classification on hand-made logits."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn.metrics import f1_score

from harness.training.classification import epochs_to_target, macro_f1, per_class_accuracy, summarize_seeds, topk_accuracy
from harness.training.trained import TrainResult

# Predictions (argmax) are 1, 0, 2, 0 against labels 1, 1, 2, 2.
LOGITS = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
LABELS = torch.tensor([1, 1, 2, 2])


def test_topk_accuracy_exact() -> None:
    assert topk_accuracy(LOGITS, LABELS, k=1) == 50.0
    # Top-2 sets: {1,2} {0,1} {2,1} {0,1}; only the last misses its label 2.
    assert topk_accuracy(LOGITS, LABELS, k=2) == 75.0
    # k beyond the class count holds every class.
    assert topk_accuracy(LOGITS, LABELS, k=5) == 100.0


def test_macro_f1_exact_and_matches_sklearn() -> None:
    # class 0: tp 0, fp 2 -> F1 0; classes 1 and 2: tp 1, fn 1 -> F1 2/3 each.
    assert macro_f1(LOGITS, LABELS) == pytest.approx(4 / 9, abs=1e-12)
    preds = LOGITS.argmax(1).numpy()
    assert macro_f1(LOGITS, LABELS) == pytest.approx(f1_score(LABELS.numpy(), preds, average="macro"), abs=1e-12)


def test_macro_f1_ignores_classes_absent_from_labels_and_predictions() -> None:
    padded = torch.cat([LOGITS, torch.full((4, 1), -10.0)], dim=1)  # class 3: never predicted, never true
    assert macro_f1(padded, LABELS) == pytest.approx(4 / 9, abs=1e-12)


def test_per_class_accuracy_exact() -> None:
    acc = per_class_accuracy(LOGITS, LABELS)
    assert math.isnan(acc[0])  # no samples of class 0
    assert acc[1:] == [50.0, 50.0]
    perfect = per_class_accuracy(torch.eye(3), torch.tensor([0, 1, 2]))
    assert perfect == [100.0, 100.0, 100.0]


def test_bad_shapes_and_labels_raise() -> None:
    with pytest.raises(ValueError, match="logits"):
        topk_accuracy(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="labels must lie"):
        macro_f1(LOGITS, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="k must be"):
        topk_accuracy(LOGITS, LABELS, k=0)


def test_epochs_to_target() -> None:
    curve = [{"epoch": e, "val_top1": v} for e, v in [(1, 50.0), (2, 90.0), (3, 96.0), (4, 100.0)]]
    assert epochs_to_target(curve, 100.0) == 3  # 95% of 100
    assert epochs_to_target(curve, 100.0, fraction=0.9) == 2  # reaching the target exactly counts
    assert epochs_to_target(curve, 94.0) == 2  # 89.3
    assert epochs_to_target(curve, 200.0) is None


def _result(top1: float, top5: float, f1: float) -> TrainResult:
    return TrainResult(top1=top1, top5=top5, macro_f1=f1, per_class_acc=[], curve=[], curve_split="test",
                       epochs_to_target=1, train_time_s=1.0, train_ips=1.0, peak_train_mem_bytes=0, epochs_run=1, best_epoch=1)


def test_summarize_seeds() -> None:
    summary = summarize_seeds([_result(90.0, 99.0, 0.8), _result(92.0, 100.0, 0.9)])
    assert summary["seeds"] == 2
    assert summary["top1_mean"] == 91.0
    assert summary["top1_std"] == pytest.approx(math.sqrt(2.0))  # sample std of (90, 92)
    assert summary["top5_mean"] == 99.5
    assert summary["macro_f1_mean"] == pytest.approx(0.85)
    assert summary["top1_per_seed"] == [90.0, 92.0]
    assert summarize_seeds([_result(90.0, 99.0, 0.8)])["top1_std"] == 0.0
    with pytest.raises(ValueError, match="at least one"):
        summarize_seeds([])
