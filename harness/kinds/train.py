"""Running one training case: data subset, recipe, every seed through the one loop, one record.

:func:`run_train_case` is what the ``train`` benchmark family runs; a notebook can call it too.
It loads the dataset's official splits, draws the stratified nested subset per seed, trains
with :func:`harness.measure.training.train`, and folds the seeds into the flat record of the JSON contract.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from harness.cases import CaseSpec
from harness.config.settings import Settings
from harness.contract import FEATURE_PROTOCOLS
from harness.data.datasets import load_split
from harness.data.registry import held_size
from harness.data.subsets import SubsetError, class_counts, parse_subset, split_validation, subset_indices
from harness.data.types import TensorSplit
from harness.distributed import BATCHNORM_WHOLE_BATCH, World, current_world, device_backend, main_first, per_rank_batch
from harness.measure.classification import summarize_seeds
from harness.measure.recipes import Recipe, default_recipe, finetune_recipe
from harness.measure.runtimes import int8_accuracy
from harness.measure.training import EpochStats, TrainResult, train

# Default epochs per dataset for the default recipes. digits: resnet18 from scratch reaches
# >= 97% top-1 on the 450 test images from 8 epochs on (98.0/98.2% for seeds 0/1); 10 leaves a
# margin. Other datasets: the usual 100-epoch from-scratch budget for CIFAR-sized data, and the
# fine-tuning recipe's own (finetune_recipe: 30) for pretrained weights.
DEFAULT_EPOCHS = {"digits": 10}
FALLBACK_EPOCHS = 100
# Digits and MNIST-style glyphs change meaning when mirrored; flips stay on for natural images.
NO_HFLIP = ("digits", "mnist", "fashion_mnist", "svhn")


def recipe_for(spec: CaseSpec, options: Settings, seed: int, batch_size: int | None = None) -> Recipe:
    """The case's recipe: the protocol's family default (scratch or finetune), the dataset's
    epochs, the weights' input statistics, then the user's overrides.

    ``batch_size`` (default: the case's) is the global batch whatever the world size, so the
    learning rate is the one the recipe scales to that batch: a single process at the same global
    batch is the reference a torchrun case is compared with. A subset smaller than the case's
    batch passes its own size here (:func:`batch_for`), and the recipe's lr follows it.
    """
    from harness.weights import WeightsRef, preprocess_of

    dataset = str(spec.dataset)
    preprocess = preprocess_of(spec.weights or WeightsRef(spec.backbone))  # random weights: the from-scratch 0.5/0.5
    finetune = spec.protocol == "finetune"
    chosen: dict[str, Any] = {
        "batch_size": spec.batch_size if batch_size is None else batch_size,
        "precision": spec.precision,
        "channels_last": spec.channels_last,
        "seed": seed,
        "hflip": dataset not in NO_HFLIP,
        "img_size": spec.img_size,
        "mean": preprocess.mean,
        "std": preprocess.std,
    }
    epochs = options.epochs or DEFAULT_EPOCHS.get(dataset)
    if epochs is not None or not finetune:
        chosen["epochs"] = epochs or FALLBACK_EPOCHS
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
    build = finetune_recipe if finetune else default_recipe
    return build(spec.family, **chosen)  # type: ignore[arg-type]


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """The contract settings of a training case: the recipe as it will run (defaults resolved), so
    ``--epochs 10`` where 10 is the default is the same case as no ``--epochs``. Frozen-feature
    protocols (linear, knn) train no network: their recipe keys are their probe's."""
    from harness.kinds import profile_name
    from harness.weights import find_cached

    found = find_cached(spec.weights) if spec.weights is not None else None
    common = {"threads": torch.get_num_threads(), "seeds": settings.seeds}
    tail = {"edge_profile": profile_name(settings), "weights_sha256": found.sha256 if found is not None else None}
    if spec.protocol in FEATURE_PROTOCOLS:
        from harness.kinds.frozen import probe_settings

        return {**common, **probe_settings(spec.protocol), **tail}
    recipe = recipe_for(spec, settings, seed=0)
    return {
        **common,
        "epochs": recipe.epochs,
        "optimizer": recipe.optimizer,
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
        "label_smoothing": recipe.label_smoothing,
        "augment": list(recipe.augment),
        "early_stop": recipe.early_stop_patience,
        "val_fraction": recipe.val_fraction or None,
        "grad_accum": recipe.grad_accum_steps,
        "clip_grad": recipe.clip_grad_norm,
        **tail,
    }


def load_case_splits(spec: CaseSpec, options: Settings, world: World) -> tuple[TensorSplit, TensorSplit]:
    """The dataset's train and test splits, held at :func:`held_size` for the case's resolution."""
    data = {"root": options.data_root, "download": options.download, "img_size": held_size(str(spec.dataset), spec.img_size),
            "verify_checksums": not options.skip_checksums}
    with main_first(world):  # one rank downloads or unpacks; the others then read its files
        train_split = load_split(str(spec.dataset), "train", **data)  # type: ignore[arg-type]
        test_split = load_split(str(spec.dataset), "test", **data)  # type: ignore[arg-type]
    return train_split, test_split


def batch_for(recipe: Recipe, train_images: int, world: World, subset: str) -> int:
    """The global batch a case trains at: the recipe's, or, for a subset smaller than it, the
    largest batch the subset fills that the ranks, gradient accumulation and mixing can split.

    Raises :class:`SubsetError` when the subset cannot fill even the smallest such batch.
    """
    if train_images >= recipe.batch_size:
        return recipe.batch_size
    step = world.size * recipe.grad_accum_steps * (2 if {"mixup", "cutmix"} & set(recipe.augment) else 1)
    batch = train_images // step * step
    if batch < 1:
        raise SubsetError(f"{subset} leaves {train_images} training image(s), fewer than one step of {step} "
                          f"({world.size} process(es) x grad_accum {recipe.grad_accum_steps}); use a larger subset")
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
        from harness.kinds.frozen import run_frozen_case

        return run_frozen_case(spec, options, train_split, test_split)
    return _train_seeds(spec, options, train_split, test_split, world, progress)


def _train_seeds(spec: CaseSpec, options: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
                 progress: Callable[[int, EpochStats], None] | None) -> dict[str, Any]:
    from harness.weights import WeightsRef, create_model

    device = torch.device(spec.device)
    subset = parse_subset(str(spec.subset))
    results: list[TrainResult] = []
    counts: dict[str, int] = {}
    int8: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    wall = time.perf_counter()
    for seed in range(options.seeds):
        indices = subset_indices(train_split.labels, subset, seed=seed, num_classes=train_split.num_classes, dataset=str(spec.dataset))
        counts = class_counts(train_split.labels, indices, train_split.classes)
        recipe = recipe_for(spec, options, seed)
        kept = split_validation(indices, train_split.labels, fraction=recipe.val_fraction, seed=seed)[0] if recipe.val_fraction else indices
        batch = batch_for(recipe, len(kept), world, str(spec.subset))
        if batch != recipe.batch_size:
            recipe = recipe_for(spec, options, seed, batch_size=batch)
        torch.manual_seed(seed)  # the model's random initialisation (the new head's, from pretrained weights), per seed
        model, resolved = create_model(spec.weights or WeightsRef(spec.backbone), num_classes=train_split.num_classes,
                                       img_size=spec.img_size, download=options.download)
        if resolved is not None:
            loaded = {"weights_file": str(resolved.path), "weights_source": resolved.source, "weights_sha256": resolved.sha256}
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
        "epochs": recipe.epochs,
        "optimizer": recipe.optimizer,
        "lr": recipe.lr,
        "weight_decay": recipe.weight_decay,
        "augment": list(recipe.augment),
        "train_batch_used": recipe.batch_size,
        "recipe": _recipe_keys(recipe),
        "held_img_size": int(train_split.images.shape[-1]),
        **loaded,
        **_world_keys(spec, recipe, world.size),
        **seed_keys(results),
        "epochs_to_target": last.epochs_to_target,
        "epochs_run": last.epochs_run,
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


def case_keys(spec: CaseSpec, train: TensorSplit, test: TensorSplit, counts: dict[str, int], seeds: int) -> dict[str, Any]:
    """The record keys every protocol's case starts with: identity, data, seeds."""
    return {
        **spec.identity(),
        "num_classes": train.num_classes,
        "status": "ok",
        "train_size": int(sum(counts.values())),
        "test_size": len(test),
        "class_counts": counts,
        "seeds": list(range(seeds)),
    }


def seed_keys(results: list[TrainResult]) -> dict[str, Any]:
    """The seed summary under the JSON contract's names (``top1`` is the mean over seeds), and the
    last seed's per-class accuracy."""
    summary = summarize_seeds(results)
    return {
        "top1": summary["top1_mean"],
        "top5": summary["top5_mean"],
        "macro_f1": summary["macro_f1_mean"],
        "top1_std": summary["top1_std"],
        "top1_per_seed": summary["top1_per_seed"],
        "per_class_acc": results[-1].per_class_acc,
    }


def _recipe_keys(recipe: Recipe) -> dict[str, Any]:
    """The recipe as the record shows it: the fine-tuning split of learning rates and the warm-up included."""
    keys = ("optimizer", "lr", "backbone_lr_scale", "weight_decay", "warmup_epochs", "epochs", "batch_size", "label_smoothing", "img_size", "mean", "std")
    values = asdict(recipe)
    return {key: list(values[key]) if isinstance(values[key], tuple) else values[key] for key in keys}


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


def _world_keys(spec: CaseSpec, recipe: Recipe, world_size: int) -> dict[str, Any]:
    """How the case's batch was spread over processes: ``lr`` above is the global batch's."""
    distributed = world_size > 1
    return {
        "world_size": world_size,
        "global_batch": recipe.batch_size,
        "per_rank_batch": per_rank_batch(recipe.batch_size, World(size=world_size)),
        "backend": device_backend(spec.device) if distributed else None,
        # Pooled over ranks under torchrun (harness.distributed.pool_batchnorm), as in one process.
        "batchnorm": BATCHNORM_WHOLE_BATCH,
    }
