"""The record keys every protocol writes: a train case's identity and data keys, its seed summary,
its recipe and how its batch was spread over processes. Both the network-training loop
(:mod:`harness.protocols.network`) and the frozen probes (:mod:`harness.protocols.frozen`) write them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from harness.backbones.factory import feature_map_side
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.runtime.distributed import BATCHNORM_WHOLE_BATCH, World, device_backend, per_rank_batch
from harness.training.classification import summarize_seeds
from harness.training.recipes import Recipe
from harness.training.trained import TrainResult


def case_keys(spec: CaseSpec, train: TensorSplit, test: TensorSplit, counts: dict[str, int], seeds: int) -> dict[str, Any]:
    """The record keys every protocol's case starts with: identity, data, seeds, and the side of the
    backbone's final feature map at the case's resolution (a 1×1 map is named with its consequence)."""
    side = feature_map_side(spec.backbone, spec.img_size)
    small = {} if side != 1 else {"feature_map_note": f"{spec.backbone} leaves a 1×1 feature map at {spec.img_size} px: its global pool "
                                                      "sees one position; a larger --train-img-sizes keeps its spatial features"}
    return {
        **spec.identity(),
        "feature_map_px": side,
        **small,
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


def recipe_keys(recipe: Recipe) -> dict[str, Any]:
    """The recipe as the record shows it: the fine-tuning split of learning rates and the warm-up included."""
    keys = ("optimizer", "lr", "backbone_lr_scale", "weight_decay", "warmup_steps", "steps", "batch_size", "label_smoothing",
            "freeze_norm_stats", "img_size", "mean", "std")
    values = asdict(recipe)
    return {key: list(values[key]) if isinstance(values[key], tuple) else values[key] for key in keys}


def world_keys(spec: CaseSpec, recipe: Recipe, world_size: int) -> dict[str, Any]:
    """How the case's batch was spread over processes: ``lr`` above is the global batch's."""
    distributed = world_size > 1
    return {
        "world_size": world_size,
        "global_batch": recipe.batch_size,
        "per_rank_batch": per_rank_batch(recipe.batch_size, World(size=world_size)),
        "backend": device_backend(spec.device) if distributed else None,
        # Pooled over ranks under torchrun (harness.runtime.distributed.pool_batchnorm), as in one process.
        "batchnorm": BATCHNORM_WHOLE_BATCH,
    }
