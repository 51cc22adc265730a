"""The seed loop of a protocol that trains the network: the stratified nested subset per seed, the
recipe and schedule, :func:`harness.training.loop.train`, and one flat record of the train kind.

``scratch`` runs it as it is; ``finetune`` passes a :class:`Start`, which prepares each seed's head
(the linear probe, LP-FT) and, under ``--tune on``, its searched lr.
"""

from __future__ import annotations

import functools
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from harness.data.subsets import class_counts, parse_subset, split_validation, subset_indices
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.measure.runtimes import int8_accuracy
from harness.protocols import Progress
from harness.protocols.keys import case_keys, recipe_keys, seed_keys, world_keys
from harness.protocols.recipe import batch_for, case_schedule, recipe_for
from harness.runtime.distributed import World
from harness.settings import Settings
from harness.training.loop import train
from harness.training.probes import LinearProbe, load_into_head
from harness.training.recipes import Recipe, autocast_dtype
from harness.training.robustness import SeedRobustness, clean_seconds, corruption_top1, network_scorer, robustness_keys
from harness.training.schedule import Schedule
from harness.training.trained import TrainResult


@dataclass
class Prepared:
    """What a :class:`Start` set for one seed: the head to load, the lr found, the choices to record."""

    head: LinearProbe | None = None
    lr: float | None = None
    choices: dict[str, object] = field(default_factory=dict)


class Start(Protocol):
    """How a protocol starts each seed's network (LP-FT: from the linear probe of its features)."""

    def prepare(self, seed: int, kept: torch.Tensor, batch: int, schedule: Schedule, world: World) -> Prepared: ...

    def record(self) -> dict[str, Any]: ...


def build(spec: CaseSpec, options: Settings, num_classes: int) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The case's model, with a new head of ``num_classes``; and the record keys of the weights it loaded."""
    from harness.backbones.factory import create_model
    from harness.backbones.weights import WeightsRef

    model, resolved = create_model(spec.weights or WeightsRef(spec.backbone), num_classes=num_classes, img_size=spec.img_size,
                                   download=options.download)
    if resolved is None:
        return model, {}
    return model, {"weights_file": str(resolved.path), "weights_source": resolved.source, "weights_sha256": resolved.sha256}


def train_seeds(spec: CaseSpec, options: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
                progress: Progress | None, start: Start | None = None) -> dict[str, Any]:
    """Train ``spec`` for every seed and return its record (``start``: how each seed's network starts)."""
    device = torch.device(spec.device)
    subset = parse_subset(str(spec.subset))
    results: list[TrainResult] = []
    counts: dict[str, int] = {}
    int8: dict[str, Any] = {}
    loaded: dict[str, Any] = {}
    choices: list[dict[str, object]] = []
    schedules: list[Schedule] = []
    search_s: list[float] = []
    robust: list[SeedRobustness] = []
    clean_s: list[float] = []
    wall = time.perf_counter()
    for seed in range(options.seeds):
        indices = subset_indices(train_split.labels, subset, seed=seed, num_classes=train_split.num_classes, dataset=str(spec.dataset))
        counts = class_counts(train_split.labels, indices, train_split.classes)
        recipe = recipe_for(spec, options, seed)
        kept = split_validation(indices, train_split.labels, fraction=recipe.val_fraction, seed=seed)[0] if recipe.val_fraction else indices
        batch = batch_for(recipe, len(kept), world, str(spec.subset), arch=spec.backbone)
        schedule = case_schedule(spec, options, len(kept), batch)
        schedules.append(schedule)
        # The head and the search see the images trained on, not an early-stopping split.
        started = time.perf_counter()
        prepared = start.prepare(seed, kept, batch, schedule, world) if start is not None else Prepared()
        search_s.append(time.perf_counter() - started)
        if prepared.choices:
            choices.append(prepared.choices)
        recipe = recipe_for(spec, options, seed, batch_size=batch, schedule=schedule, lr=prepared.lr)
        torch.manual_seed(seed)  # the model's random initialisation (the new head's, from pretrained weights), per seed
        model, loaded = build(spec, options, train_split.num_classes)
        if prepared.head is not None:
            load_into_head(prepared.head, model)
        checkpoint_dir = options.checkpoint_dir / spec.case_id.replace("/", "__") / f"seed{seed}"
        result = train(model, train_split.take(indices), test_split, recipe, device=device, checkpoint_dir=checkpoint_dir,
                       resume=options.resume, progress=functools.partial(progress, seed) if progress else None, world=world)
        results.append(result)
        if options.robustness:  # the tested weights (model holds them on return), on each corrupted test split
            scorer = network_scorer(model, test_split, img_size=spec.img_size, mean=recipe.mean, std=recipe.std, device=device,
                                    amp=autocast_dtype(spec.precision, device))
            robust.append(corruption_top1(scorer, options.robustness, options.robust_severities, device))
            clean_s.append(clean_seconds(scorer, device))
        if options.int8_accuracy and seed == 0 and world.is_main:  # rank 0's record is the one saved
            int8 = int8_accuracy_change(model, test_split, checkpoint_dir, recipe)
    wall = time.perf_counter() - wall
    last = results[-1]
    started_by = start.record() if start is not None else {}
    return {
        **case_keys(spec, train_split, test_split, counts, options.seeds),
        **schedules[-1].as_record(),
        "steps_per_seed": [s.steps for s in schedules],
        "head_init": "linear probe (LP-FT)" if start is not None else "random",
        **started_by,
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
        "search_time_s": sum(search_s) / len(search_s) if start is not None else None,
        "case_wall_s": wall,
        "wall_breakdown_s": wall_breakdown(wall, started_by.get("feature_time_s"), search_s, results),
        **int8,
        **(robustness_keys(robust, options.robust_severities, statistics.fmean(clean_s)) if robust else {}),
    }


def wall_breakdown(wall: float, feature_s: float | None, search_s: list[float], results: list[TrainResult]) -> dict[str, float]:
    """Where a case's wall went, in seconds over all its seeds: ``features`` (LP-FT's extraction, or its
    cache read: before ``case_wall_s`` starts), ``search`` (each seed's head probe and lr search),
    ``train`` (the final runs' optimiser steps), ``eval`` (their curve and test evaluations) and
    ``other`` (``case_wall_s`` less the three before it: model builds, data moves, checkpoints, the
    profiled step). ``case_wall_s`` is their sum less ``features``."""
    train_s, eval_s = sum(r.train_time_s for r in results), sum(r.eval_time_s for r in results)
    phases = {"features": feature_s or 0.0, "search": sum(search_s), "train": train_s, "eval": eval_s,
              "other": max(0.0, wall - sum(search_s) - train_s - eval_s)}
    return {k: round(v, 3) for k, v in phases.items()}


def int8_accuracy_change(model: torch.nn.Module, test: TensorSplit, workdir: Path, recipe: Recipe) -> dict[str, Any]:
    """Top-1 of the trained (seed 0) model in fp32 and as dynamic-int8 ONNX on the CPU provider."""
    from harness.data.augment import prepare
    from harness.measure.runners import build_runner

    model = model.to("cpu").eval()
    preprocess = functools.partial(prepare, size=recipe.img_size, mean=recipe.mean, std=recipe.std)
    example = preprocess(test.images[:1].cpu())
    runner = build_runner(model, example, "onnxruntime-int8", device=torch.device("cpu"), workdir=workdir, threads=torch.get_num_threads())
    try:
        fp32, int8 = int8_accuracy(model, runner, test.images.cpu(), test.labels.cpu(), preprocess)
    finally:
        runner.close()
    return {"int8_top1": 100 * int8, "fp32_onnx_ref_top1": 100 * fp32, "int8_top1_change_pp": 100 * (int8 - fp32)}
