"""The recipe and schedule of a protocol that trains the network (scratch, finetune): the family's
default recipe for the protocol, the weights' input statistics, the step schedule, the user's
overrides, and the global batch a subset can fill. Their digested settings are :func:`network_settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.contract import PROTOCOL_SPECS
from harness.data.datasets import hflip_of
from harness.data.subsets import SubsetError, planned_size
from harness.matrix.cases import CaseSpec
from harness.runtime.distributed import World
from harness.settings import Settings
from harness.training.recipes import RECIPES, Recipe
from harness.training.schedule import Schedule, choose_schedule, schedule_setting
from harness.training.selection import tune_setting


def warmup_fraction(protocol: str) -> float:
    """The share of a schedule spent warming up: the protocol row's (BiT's 20 % from scratch, 10 % for LP-FT)."""
    warmup = PROTOCOL_SPECS[protocol].warmup
    if warmup is None:
        raise ValueError(f"protocol {protocol!r} trains no network: it has no schedule")
    return warmup


def case_schedule(spec: CaseSpec, options: Settings, train_images: int, batch_size: int) -> Schedule:
    """The case's schedule in optimiser steps for ``train_images`` at ``batch_size`` (:mod:`harness.training.schedule`)."""
    return choose_schedule(train_images, batch_size, dataset=str(spec.dataset), steps=options.steps, epochs=options.epochs,
                           warmup_fraction=warmup_fraction(spec.protocol))


def recipe_for(spec: CaseSpec, options: Settings, seed: int, batch_size: int | None = None, *,
               schedule: Schedule | None = None, lr: float | None = None) -> Recipe:
    """The case's recipe: the protocol's family default (scratch or finetune), the weights' input
    statistics, the schedule, then the user's overrides.

    ``batch_size`` (default: the case's) is the global batch whatever the world size, so the
    learning rate is the one the recipe scales to that batch: a single process at the same global
    batch is the reference a torchrun case is compared with. A subset smaller than the case's
    batch passes its own size here (:func:`batch_for`), and the recipe's lr follows it.
    ``schedule`` (:func:`case_schedule`) sets the steps; ``lr`` is a searched lr (it wins over the
    family's rule; ``--lr`` removes the search).
    """
    from harness.backbones.weights import WeightsRef, preprocess_of

    dataset = str(spec.dataset)
    preprocess = preprocess_of(spec.weights or WeightsRef(spec.backbone))  # random weights: the from-scratch 0.5/0.5
    chosen: dict[str, Any] = {
        "batch_size": spec.batch_size if batch_size is None else batch_size,
        "precision": spec.precision,
        "channels_last": spec.channels_last,
        "seed": seed,
        "hflip": hflip_of(dataset, options.data_root),
        "img_size": spec.img_size,
        "mean": preprocess.mean,
        "std": preprocess.std,
    }
    if schedule is not None:
        chosen.update(steps=schedule.steps, warmup_steps=schedule.warmup_steps)
    if lr is not None:
        chosen["lr"] = lr
    for key in ("lr", "weight_decay", "label_smoothing", "augment"):
        if getattr(options, key) is not None:
            chosen[key] = getattr(options, key)
    if options.early_stop is not None:
        # 10%: enough images per class to rank epochs, without starving a small subset.
        chosen.update(early_stop_patience=options.early_stop, val_fraction=options.val_fraction or 0.1)
    elif options.val_fraction is not None:
        chosen["val_fraction"] = options.val_fraction
    if options.grad_accum is not None:
        chosen["grad_accum_steps"] = options.grad_accum
    if options.clip_grad is not None:
        chosen["clip_grad_norm"] = options.clip_grad
    build = RECIPES[PROTOCOL_SPECS[spec.protocol].recipe or "scratch"]
    return build(spec.family, **chosen)


def network_settings(spec: CaseSpec, settings: Settings, grid: Mapping[str, object] | None) -> dict[str, object]:
    """The training settings of a protocol that trains the network: the recipe as it will run
    (defaults resolved), its schedule's rule (:func:`harness.training.schedule.schedule_setting`: with
    the id's dataset and subset it fixes the steps) and its search (``tune``: a searched lr is
    digested as its ``grid``, not one value)."""
    recipe = recipe_for(spec, settings, seed=0)
    searched = tune_setting(grid, settings.tune)
    return {
        "schedule": _schedule_setting(spec, settings, recipe),
        "optimizer": recipe.optimizer,
        "lr": None if searched else recipe.lr,
        "weight_decay": recipe.weight_decay,
        "label_smoothing": recipe.label_smoothing,
        "augment": list(recipe.augment),
        "hflip": recipe.hflip,
        "early_stop": recipe.early_stop_patience,
        "val_fraction": recipe.val_fraction or None,
        "grad_accum": recipe.grad_accum_steps,
        "clip_grad": recipe.clip_grad_norm,
        "tune": searched,
    }


def _schedule_setting(spec: CaseSpec, settings: Settings, recipe: Recipe) -> str:
    """The schedule as a digested setting: the resolved steps where the subset's size is known before
    the data is read (a registered dataset, no validation carve), so ``--epochs 10`` and the default
    100 steps of digits are one case; otherwise the rule's inputs, which fix the steps with the id."""
    images = planned_size(str(spec.dataset), str(spec.subset))
    if images is not None and not recipe.val_fraction:
        try:
            batch = batch_for(recipe, images, World(size=spec.world_size), str(spec.subset))
            schedule = case_schedule(spec, settings, images, batch)
        except (SubsetError, ValueError):
            pass  # the case fails with the reason when it runs
        else:
            return f"steps {schedule.steps}, warmup {schedule.warmup_steps} steps"
    return schedule_setting(str(spec.dataset), steps=settings.steps, epochs=settings.epochs,
                            warmup_fraction=warmup_fraction(spec.protocol))


def batch_for(recipe: Recipe, train_images: int, world: World, subset: str, *, arch: str | None = None) -> int:
    """The global batch a case trains at: the recipe's, or, for a subset smaller than it, the
    largest batch the subset fills that the ranks, gradient accumulation and mixing can split.

    Raises :class:`SubsetError` when the subset cannot fill even the smallest such batch, or, given
    the ``arch`` that trains, when it leaves that arch's BatchNorm one image per (micro-)batch.
    """
    step = world.size * recipe.grad_accum_steps * (2 if {"mixup", "cutmix"} & set(recipe.augment) else 1)
    batch = recipe.batch_size if train_images >= recipe.batch_size else train_images // step * step
    if batch < 1:
        raise SubsetError(f"{subset} leaves {train_images} training image(s), fewer than one step of {step} "
                          f"({world.size} process(es) x grad_accum {recipe.grad_accum_steps}); use a larger subset")
    if arch is not None and batch // (world.size * recipe.grad_accum_steps) < 2:
        from harness.backbones.factory import has_batchnorm

        if has_batchnorm(arch):
            raise SubsetError(f"{subset} leaves {train_images} training image(s): batches of one image per process, on which "
                              f"{arch}'s BatchNorm cannot train; use a larger subset (at least 2 images per batch)")
    return batch
