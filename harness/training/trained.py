"""What one training run returns: per-epoch statistics and the run's result.

Below both the loop (:mod:`harness.training.loop`) and the seed summary
(:mod:`harness.training.classification`), so neither imports the other to name them."""

from __future__ import annotations

from dataclasses import dataclass

# A cross-entropy above this is no training: softmax saturates at logit gaps of ~100, so a loss of 1e4
# means logits 1e4 apart on the wrong class; a diverging run (--lr 1e30) reaches it within a step or two,
# while a working one starts at ln(classes) (< 10 for any label set) and falls.
DIVERGED_LOSS = 1e4


class TrainingDiverged(ArithmeticError):
    """The training loss became non-finite or absurd (:data:`DIVERGED_LOSS`): the case fails, naming the
    optimiser step and its learning rate, and records nothing it trained."""


@dataclass(frozen=True)
class EpochStats:
    """What the progress callback sees after each epoch (1-based); ``val_top1`` is on val, else test."""

    epoch: int
    loss: float
    val_top1: float
    epoch_time_s: float
    ips: float
    # The epochs the checkpoint this run resumed from had trained (None: it started afresh).
    resumed_from_epoch: int | None = None


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one run. Accuracies in percent, ``macro_f1`` in 0-1, times in seconds.

    ``curve_split`` says whether ``curve[i]["val_top1"]`` was measured on ``"val"`` or ``"test"``.
    ``train_time_s``/``train_ips`` cover training steps only (no evaluation or checkpointing), in
    this process only (a resumed run's earlier epochs are not counted), and leave out the one
    step profiled for ``peak_train_mem_bytes`` unless it was the epoch's only step.
    ``resumed_from_epoch`` is the epochs the resumed checkpoint had trained (None: started afresh).
    """

    top1: float
    top5: float
    macro_f1: float
    per_class_acc: list[float]
    curve: list[dict[str, float]]
    curve_split: str
    epochs_to_target: int | None
    train_time_s: float
    train_ips: float
    peak_train_mem_bytes: int
    epochs_run: int
    best_epoch: int
    # Seconds spent evaluating (every epoch's curve and the final test), and the images each
    # point of the curve was measured on.
    eval_time_s: float = 0.0
    curve_images: int = 0
    steps_run: int = 0
    # Mean cross-entropy of the final evaluation (no label smoothing): ranks grid points whose
    # top-1 ties on a small validation split passed as ``test``.
    test_loss: float = 0.0
    resumed_from_epoch: int | None = None
