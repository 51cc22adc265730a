"""Running one training case: data subset, recipe, every seed through the one loop, one record.

:func:`run_train_case` is what the ``train`` benchmark family runs; a notebook can call it too.
It loads the dataset's official splits, draws the stratified nested subset per seed, trains
with :func:`harness.measure.training.train`, and folds the seeds into the flat record of the JSON contract.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness.contract import FEATURE_PROTOCOLS
from harness.data.datasets import hflip_of, load_split
from harness.data.registry import held_size
from harness.data.subsets import SubsetError, class_counts, parse_subset, planned_size, split_validation, subset_indices
from harness.data.types import TensorSplit
from harness.kinds.frozen import extract_train_features, probe_settings, run_frozen_case, search_probe
from harness.kinds.keys import case_keys, profile_name, recipe_keys, seed_keys, world_keys
from harness.matrix.cases import CaseSpec
from harness.measure.probes import LINEAR_L2, LinearProbe, fit_linear, load_into_head
from harness.measure.recipes import Recipe, default_recipe, finetune_recipe
from harness.measure.runtimes import int8_accuracy
from harness.measure.schedule import FINETUNE_WARMUP_FRACTION, WARMUP_FRACTION, Schedule, choose_schedule, schedule_setting
from harness.measure.selection import FINETUNE_LR_GRID, POINT_FRACTION, VAL_FRACTION, Choice, choose, scaled_lr, tune_setting
from harness.measure.trained import EpochStats, TrainResult
from harness.measure.training import train
from harness.runtime.distributed import World, current_world, main_first
from harness.settings import Settings


def warmup_fraction(protocol: str) -> float:
    """The share of a schedule spent warming up: BiT's 20 % from scratch, 10 % for LP-FT."""
    return FINETUNE_WARMUP_FRACTION if protocol == "finetune" else WARMUP_FRACTION


def case_schedule(spec: CaseSpec, options: Settings, train_images: int, batch_size: int) -> Schedule:
    """The case's schedule in optimiser steps for ``train_images`` at ``batch_size`` (:mod:`harness.measure.schedule`)."""
    return choose_schedule(train_images, batch_size, dataset=str(spec.dataset), steps=options.steps, epochs=options.epochs,
                           warmup_fraction=warmup_fraction(str(spec.protocol)))


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
    build = finetune_recipe if spec.protocol == "finetune" else default_recipe
    return build(spec.family, **chosen)  # type: ignore[arg-type]


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """The contract settings of a training case: the recipe as it will run (defaults resolved), its
    schedule's rule (:func:`harness.measure.schedule.schedule_setting`: with the id's dataset and
    subset it fixes the steps) and its search (``tune``: a searched hyperparameter is digested as
    its grid, not one value). Frozen-feature protocols (linear, knn) train no network: their
    recipe keys are their probe's."""
    from harness.backbones.weights import find_cached

    found = find_cached(spec.weights) if spec.weights is not None else None
    # CPU threads change a CPU case's arithmetic (reduction order) and so its top-1; a CUDA case's
    # kernels do not depend on them, so an xdist worker's share of threads leaves it comparable.
    threads = torch.get_num_threads() if torch.device(spec.device).type == "cpu" else None
    common = {"threads": threads, "seeds": settings.seeds}
    tail = {"edge_profile": profile_name(settings), "weights_sha256": found.sha256 if found is not None else None}
    if spec.protocol in FEATURE_PROTOCOLS:

        return {**common, **probe_settings(spec.protocol, settings.tune), **tail}
    recipe = recipe_for(spec, settings, seed=0)
    searched = tune_setting(str(spec.protocol), settings.tune, lr_override=settings.lr is not None)
    return {
        **common,
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
        **tail,
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
                            warmup_fraction=warmup_fraction(str(spec.protocol)))


def load_case_splits(spec: CaseSpec, options: Settings, world: World) -> tuple[TensorSplit, TensorSplit]:
    """The dataset's train and test splits, held at :func:`held_size` for the case's resolution."""
    data = {"root": options.data_root, "download": options.download, "img_size": held_size(str(spec.dataset), spec.img_size),
            "verify_checksums": not options.skip_checksums}
    with main_first(world):  # one rank downloads or unpacks; the others then read its files
        train_split = load_split(str(spec.dataset), "train", **data)  # type: ignore[arg-type]
        test_split = load_split(str(spec.dataset), "test", **data)  # type: ignore[arg-type]
    return train_split, test_split


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


def run_train_case(
    spec: CaseSpec,
    options: Settings,
    *,
    progress: Callable[[int, EpochStats], None] | None = None,
) -> dict[str, Any]:
    """Run ``spec`` for every seed and return its flat record (``status`` ``ok``).

    ``scratch`` and ``finetune`` train through :func:`harness.measure.training.train`; ``linear``
    and ``knn`` read a frozen backbone's cached features (:mod:`harness.kinds.frozen`).
    ``options`` are the session's settings: seeds, recipe overrides, data root, resume. A case
    of world size N runs under torchrun with N ranks (its process group initialised); every rank
    returns the record, rank 0's is the one saved.

    Raises ``DatasetUnavailable``/``DatasetCorrupt``/``SubsetError`` from the data layer,
    ``BackboneUnsupported`` from the factory and ``WeightsUnavailable``/``WeightsMismatch`` from
    the weights; the caller decides skip or failure.
    """
    world = current_world()
    if world.size != spec.world_size:
        raise ValueError(f"case {spec.id} is for {spec.world_size} process(es) but this session has {world.size}; run it with torchrun --nproc-per-node {spec.world_size}")
    train_split, test_split = load_case_splits(spec, options, world)
    if spec.protocol in FEATURE_PROTOCOLS:

        return run_frozen_case(spec, options, train_split, test_split)
    return _train_seeds(spec, options, train_split, test_split, world, progress)


def _train_seeds(spec: CaseSpec, options: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
                 progress: Callable[[int, EpochStats], None] | None) -> dict[str, Any]:
    from harness.backbones.factory import create_model
    from harness.backbones.weights import WeightsRef

    device = torch.device(spec.device)
    subset = parse_subset(str(spec.subset))
    results: list[TrainResult] = []
    counts: dict[str, int] = {}
    int8: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    start = _LinearStart(spec, options, train_split) if spec.protocol == "finetune" else None
    searched = tune_setting(str(spec.protocol), options.tune, lr_override=options.lr is not None) is not None
    choices: list[dict[str, object]] = []
    schedules: list[Schedule] = []
    wall = time.perf_counter()
    for seed in range(options.seeds):
        indices = subset_indices(train_split.labels, subset, seed=seed, num_classes=train_split.num_classes, dataset=str(spec.dataset))
        counts = class_counts(train_split.labels, indices, train_split.classes)
        recipe = recipe_for(spec, options, seed)
        kept = split_validation(indices, train_split.labels, fraction=recipe.val_fraction, seed=seed)[0] if recipe.val_fraction else indices
        batch = batch_for(recipe, len(kept), world, str(spec.subset), arch=spec.backbone)
        schedule = case_schedule(spec, options, len(kept), batch)
        schedules.append(schedule)
        head: LinearProbe | None = None
        lr = None
        if start is not None:  # the head and the search see the images trained on: not an early-stopping split
            l2 = start.l2(kept, seed)
            seed_choices: dict[str, object] = {} if l2 is None else {"head_l2": l2.as_record()}
            l2_value = LINEAR_L2 if l2 is None else l2.chosen
            if searched:
                lr_choice = _search_lr(spec, options, seed, train_split, kept, start, l2_value, schedule, world)
                seed_choices["lr"] = lr_choice.as_record()
                lr = scaled_lr(lr_choice.chosen, batch)
            if seed_choices:
                choices.append(seed_choices)
            head = start.probe(kept, l2_value)
        recipe = recipe_for(spec, options, seed, batch_size=batch, schedule=schedule, lr=lr)
        torch.manual_seed(seed)  # the model's random initialisation (the new head's, from pretrained weights), per seed
        model, resolved = create_model(spec.weights or WeightsRef(spec.backbone), num_classes=train_split.num_classes,
                                       img_size=spec.img_size, download=options.download)
        if resolved is not None:
            loaded = {"weights_file": str(resolved.path), "weights_source": resolved.source, "weights_sha256": resolved.sha256}
        if head is not None:
            load_into_head(head, model)
        checkpoint_dir = options.checkpoint_dir / spec.case_id.replace("/", "__") / f"seed{seed}"
        result = train(
            model,
            train_split.take(indices),
            test_split,
            recipe,
            device=device,
            checkpoint_dir=checkpoint_dir,
            resume=options.resume,
            progress=functools.partial(progress, seed) if progress else None,
            world=world,
        )
        results.append(result)
        if options.int8_accuracy and seed == 0 and world.is_main:  # rank 0's record is the one saved
            int8 = int8_accuracy_change(model, test_split, checkpoint_dir, recipe)
    wall = time.perf_counter() - wall
    last = results[-1]
    return {
        **case_keys(spec, train_split, test_split, counts, options.seeds),
        **schedules[-1].as_record(),
        "steps_per_seed": [s.steps for s in schedules],
        "head_init": "linear probe (LP-FT)" if start is not None else "random",
        **(start.record() if start is not None else {}),
        "tuning": choices or None,
        "optimizer": recipe.optimizer,
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
        "augment": list(recipe.augment),
        "train_batch_used": recipe.batch_size,
        "recipe": recipe_keys(recipe),
        "held_img_size": int(train_split.images.shape[-1]),
        **loaded,
        **world_keys(spec, recipe, world.size),
        **seed_keys(results),
        "epochs_to_target": last.epochs_to_target,
        "steps_run": last.steps_run,
        "epochs_run": last.epochs_run,
        # Per seed, the epochs its checkpoint had trained when --resume picked it up; null when no seed resumed.
        "resumed_from_epoch": None if all(r.resumed_from_epoch is None for r in results) else [r.resumed_from_epoch for r in results],
        "train_time_s": sum(r.train_time_s for r in results) / len(results),
        "eval_time_s": sum(r.eval_time_s for r in results) / len(results),
        "train_ips": sum(r.train_ips for r in results) / len(results),
        "peak_train_mem_bytes": max(r.peak_train_mem_bytes for r in results),
        "curve": last.curve,
        "curve_split": last.curve_split,
        "curve_images": last.curve_images,
        "case_wall_s": wall,
        **int8,
    }


class _LinearStart:
    """LP-FT's start (Kumar et al. 2022): a linear probe of the pretrained features, whose solution
    becomes the fine-tune's head. Features of the training split come from the feature cache
    (:mod:`harness.kinds.frozen`), so a fine-tune and the linear case of the same weights extract once."""

    def __init__(self, spec: CaseSpec, options: Settings, train_split: TensorSplit) -> None:

        self.features, self.device = extract_train_features(spec, options, train_split)
        self.num_classes, self.tune = train_split.num_classes, options.tune

    def record(self) -> dict[str, Any]:
        """What the record says of the features: whether the cache had them, and the time to get them."""
        return {"feature_cache": {"train": ["hit" if self.features.hit else "miss"]}, "feature_time_s": self.features.seconds,
                "feature_files": [str(self.features.path)]}

    def l2(self, indices: torch.Tensor, seed: int) -> Choice | None:
        """The head's L2, chosen as the linear protocol chooses it (None: --tune off, the fixed one)."""

        if tune_setting("linear", self.tune) is None:
            return None
        return search_probe("linear", self.features, indices, self.num_classes, seed, self.device)

    def probe(self, indices: torch.Tensor, l2: float) -> LinearProbe:
        x, y = self.features.take(indices)
        return fit_linear(x, y, self.num_classes, l2=l2, device=self.device)


def _search_lr(spec: CaseSpec, options: Settings, seed: int, train_split: TensorSplit, indices: torch.Tensor,
               start: _LinearStart, l2: float, schedule: Schedule, world: World) -> Choice:
    """The fine-tune lr chosen on a stratified validation split of the subset.

    Each grid point starts from the probe fitted on the fit part, trains on it for
    :data:`~harness.measure.selection.POINT_FRACTION` of the case's steps and is scored by top-1 on
    the validation part: the test split is not passed to these trainings at all.
    """
    from harness.backbones.factory import create_model
    from harness.backbones.weights import WeightsRef

    fit_idx, val_idx = split_validation(indices, train_split.labels, fraction=VAL_FRACTION, seed=seed)
    fit, val = train_split.take(fit_idx), train_split.take(val_idx)
    base = recipe_for(spec, options, seed)
    batch = batch_for(base, len(fit_idx), world, str(spec.subset), arch=spec.backbone)
    short = schedule.shortened(POINT_FRACTION)
    head = start.probe(fit_idx, l2)

    def score(lr_at_128: float) -> tuple[float, float]:
        recipe = recipe_for(spec, options, seed, batch_size=batch, schedule=short, lr=scaled_lr(lr_at_128, batch))
        torch.manual_seed(seed)
        model, _ = create_model(spec.weights or WeightsRef(spec.backbone), num_classes=train_split.num_classes,
                                img_size=spec.img_size, download=options.download)
        load_into_head(head, model)
        result = train(model, fit, val, recipe, device=torch.device(spec.device), measure_memory=False, world=world)
        return result.top1, result.test_loss

    return choose("finetune", FINETUNE_LR_GRID, score, fit_images=len(fit_idx), val_images=len(val_idx))


def int8_accuracy_change(model: torch.nn.Module, test: TensorSplit, workdir: Path, recipe: Recipe) -> dict[str, Any]:
    """Top-1 of the trained (seed 0) model in fp32 and as dynamic-int8 ONNX on the CPU provider."""
    from harness.data.augment import prepare
    from harness.measure.export import build_runner

    model = model.to("cpu").eval()
    preprocess = functools.partial(prepare, size=recipe.img_size, mean=recipe.mean, std=recipe.std)
    example = preprocess(test.images[:1].cpu())
    runner = build_runner(model, example, "onnxruntime-int8", device=torch.device("cpu"), workdir=workdir, threads=torch.get_num_threads())
    try:
        fp32, int8 = int8_accuracy(model, runner, test.images.cpu(), test.labels.cpu(), preprocess)
    finally:
        runner.close()
    return {"int8_top1": 100 * int8, "fp32_onnx_ref_top1": 100 * fp32, "int8_top1_change_pp": 100 * (int8 - fp32)}
