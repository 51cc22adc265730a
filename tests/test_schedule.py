"""Schedules in optimiser steps and hyperparameters chosen on held-out data: the rules, exactly."""

from __future__ import annotations

import math

import pytest
import torch

from harness.config.options import default_settings
from harness.errors import SettingError
from harness.training.schedule import (
    HYPERRULE,
    HYPERRULE_LARGE,
    Schedule,
    choose_schedule,
    hyperrule_steps,
    planned_steps,
    schedule_setting,
)
from harness.training.selection import (
    FINETUNE_LR_GRID,
    KNN_K_GRID,
    LINEAR_L2_GRID,
    choose,
    knn_grid,
    logit_score,
    scaled_lr,
    tune_setting,
    vote_score,
)


@pytest.mark.parametrize(("images", "steps"), [(1, 500), (50, 500), (999, 500), (1_000, 500), (19_999, 500), (20_000, 10_000),
                                               (499_999, 10_000), (500_000, 20_000), (1_281_167, 20_000)])
def test_hyperrule_rows(images: int, steps: int) -> None:
    assert hyperrule_steps(images) == steps


def test_small_subsets_take_bit_s_500_steps() -> None:
    # The sweep in harness.training.schedule (digits and Fashion-MNIST transfers, 50-500 images):
    # 100 steps left LP-FT short of 500 on both; BiT's own row holds below 1,000 images too.
    assert HYPERRULE == ((20_000, 500), (500_000, 10_000)) and HYPERRULE_LARGE == 20_000


def test_the_rule_the_dataset_the_options_in_that_order() -> None:
    assert choose_schedule(300, 32, dataset="imagefolder:/x") == Schedule(500, 100, "hyperrule: < 20000 images -> 500 steps", 500 / 9)
    assert choose_schedule(5_000, 128, dataset="cifar10") == Schedule(500, 100, "hyperrule: < 20000 images -> 500 steps", 500 / 39)
    assert choose_schedule(600_000, 128, dataset="x").rule == "hyperrule: >= 500000 images -> 20000 steps"
    # digits keeps its measured budget: 100 steps = its old 10 epochs of 10 steps.
    assert choose_schedule(1_347, 128, dataset="digits") == Schedule(100, 20, "dataset digits: 100 steps", 10.0)
    # --epochs is converted with the drop-last steps of one epoch; --steps is taken as given.
    assert choose_schedule(300, 128, dataset="x", epochs=20) == Schedule(40, 8, "--epochs 20 x 2 steps/epoch", 20.0)
    assert choose_schedule(300, 128, dataset="digits", steps=7, warmup_fraction=0.1) == Schedule(7, 1, "--steps", 3.5)
    with pytest.raises(ValueError, match="give --steps or --epochs, not both"):
        choose_schedule(300, 128, dataset="x", steps=7, epochs=2)
    with pytest.raises(ValueError, match="do not fill one batch of 128"):
        choose_schedule(100, 128, dataset="x")


def test_a_selection_point_is_the_schedule_compressed() -> None:
    short = choose_schedule(300, 32, dataset="x").shortened(0.25)
    assert (short.steps, short.warmup_steps, short.rule) == (125, 25, "hyperrule: < 20000 images -> 500 steps, x0.25 for selection")
    assert math.isclose(short.epochs_equivalent, 125 / 9)
    assert Schedule(2, 1, "--steps", 1.0).shortened(0.25) == Schedule(1, 0, "--steps, x0.25 for selection", 0.5)


def test_the_digested_schedule_is_the_rule_s_inputs() -> None:
    assert schedule_setting("imagefolder:/x", steps=None, epochs=None, warmup_fraction=0.2) == "hyperrule <20000:500 <500000:10000 else:20000, warmup 20%"
    assert schedule_setting("digits", steps=None, epochs=None, warmup_fraction=0.1) == "dataset digits: 100 steps, warmup 10%"
    assert schedule_setting("x", steps=300, epochs=None, warmup_fraction=0.2) == "steps 300, warmup 20%"
    assert schedule_setting("x", steps=None, epochs=20, warmup_fraction=0.2) == "epochs 20, warmup 20%"
    # The shard cost model reads the steps back out of any of them.
    assert [planned_steps(s, 300, 32) for s in ("hyperrule <20000:500 <500000:10000 else:20000, warmup 20%", "steps 300, warmup 60 steps", "epochs 20, warmup 20%",
                                                "dataset digits: 100 steps, warmup 20%")] == [500, 300, 180, 100]


def test_steps_and_epochs_together_are_refused_at_parse_time() -> None:
    with pytest.raises(SettingError, match="--steps and --epochs both set the training length"):
        default_settings(steps=100, epochs=3)


def test_grids_are_the_documented_ones() -> None:
    assert LINEAR_L2_GRID == (1e-5, 1e-4, 1e-3, 1e-2, 1e-1) and KNN_K_GRID == (10, 20, 100, 200)
    assert FINETUNE_LR_GRID == (1e-4, 3e-4, 1e-3, 3e-3)
    assert knn_grid(500) == (10, 20, 100, 200) and knn_grid(80) == (10, 20, 80) and knn_grid(15) == (10, 15)
    assert scaled_lr(1e-4, 32) == pytest.approx(5e-5) and scaled_lr(3e-4, 128) == 3e-4


def test_tune_setting_says_what_is_searched() -> None:
    from harness.protocols import searched

    on, off, fixed_lr = default_settings(tune="on"), default_settings(tune="off"), default_settings(tune="on", lr=1e-3)
    assert searched("linear", on) == {"grid": {"l2": list(LINEAR_L2_GRID)}, "selection": (
        "best validation top-1 on a stratified 20% of the subset, then retrained on the whole subset")}
    assert searched("finetune", on)["grid"] == {"lr_at_batch_128": [1e-4, 3e-4, 1e-3, 3e-3], "point_steps_fraction": 0.25}  # type: ignore[index]
    assert searched("finetune", fixed_lr) is None  # --lr fixes it: nothing left to search
    assert searched("scratch", on) is None and searched("linear", off) is None
    assert searched("knn", on) == {"grid": {"k": list(KNN_K_GRID)}, "selection": searched("linear", on)["selection"]}  # type: ignore[index]
    with pytest.raises(ValueError, match="tune must be one of on, off"):
        tune_setting({"l2": [1.0]}, "maybe")


def test_choose_ranks_by_top1_then_loss_then_the_protocol_s_preference() -> None:
    table = {1e-5: (80.0, 0.5), 1e-4: (80.0, 0.4), 1e-3: (60.0, 0.1)}
    choice = choose("l2", "largest", list(table), lambda v: table[v], fit_images=20, val_images=5)
    assert choice.chosen == 1e-4 and choice.val_top1 == (80.0, 80.0, 60.0) and choice.val_loss == (0.5, 0.4, 0.1)
    assert choice.as_record() == {"param": "l2", "grid": [1e-5, 1e-4, 1e-3], "val_top1": [80.0, 80.0, 60.0], "val_loss": [0.5, 0.4, 0.1],
                                  "chosen": 1e-4, "fit_images": 20, "val_images": 5}
    tie = {10: (90.0, 0.3), 20: (90.0, 0.3)}
    assert choose("k", "smallest", list(tie), lambda v: tie[v], fit_images=1, val_images=1).chosen == 10  # the most local vote
    assert choose("l2", "largest", [1e-3, 1e-2], lambda v: (50.0, 1.0), fit_images=1, val_images=1).chosen == 1e-2  # the most regularised
    assert choose("lr_at_batch_128", "smallest", [1e-4, 1e-3], lambda v: (50.0, 1.0), fit_images=1, val_images=1).chosen == 1e-4  # the gentlest
    with pytest.raises(ValueError, match="empty grid"):
        choose("l2", "largest", [], lambda v: (0.0, 0.0), fit_images=1, val_images=1)


def test_validation_scores_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    top1, loss = logit_score(logits, labels)
    by_hand = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.e / (math.e + 1)) + math.log(1 / (math.exp(3) + 1))) / 3
    assert top1 == pytest.approx(200 / 3) and loss == pytest.approx(by_hand, rel=1e-6)
    votes = torch.tensor([[3.0, 1.0], [0.0, 2.0], [4.0, 0.0]])  # the third point's class got no vote: floored at 1e-6
    top1, loss = vote_score(votes, labels)
    assert top1 == pytest.approx(200 / 3) and loss == pytest.approx(-(math.log(0.75) + math.log(1.0) + math.log(1e-6)) / 3, rel=1e-6)
