"""Training recipes: one frozen dataclass, per-family from-scratch defaults, and what they build.

A :class:`Recipe` is everything that decides *how* a backbone is trained (optimiser, schedule,
augmentation, precision, seed). ``default_recipe`` gives the defaults this suite uses when a
benchmark case does not override them; ``build_optimizer`` / ``build_scheduler`` turn a recipe
into torch objects so the training loop and any bare-PyTorch comparison use the same ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import torch
from timm.optim import param_groups_weight_decay  # type: ignore[attr-defined]  # timm's public home for it (no __all__); _param_groups is private

from harness.backbones.registry import Family
from harness.contract import FAMILIES, FAMILY_SPECS, PRECISIONS, SCRATCH_MEAN, SCRATCH_STD, normalise_augment, unknown
from harness.runtime.devices import DTYPES

Optimizer = Literal["sgd", "adamw"]

_OPTIMIZERS = ("sgd", "adamw")
@dataclass(frozen=True)
class Recipe:
    """How to train one model. Validated on construction.

    ``batch_size`` is the *effective* batch per optimiser step; with ``grad_accum_steps = k``
    each step accumulates ``k`` micro-batches of ``batch_size // k`` images, so accumulation
    changes memory, not the optimisation. ``augment`` is a combination of augmentations, kept in
    the canonical form of :func:`normalise_augment`: every combination but ``("none",)`` includes
    the ``standard`` random crop (zero padding, 4 px at 32 px scaled with image size) and, if
    ``hflip``, a horizontal flip; ``randaugment`` / ``mixup`` / ``cutmix`` add timm's version on
    top, and ``mixup`` with ``cutmix`` switches between the two per batch. ``val_fraction > 0``
    makes ``train`` carve a stratified validation split out of the training split when no
    explicit ``val`` is given.
    """

    optimizer: Optimizer = "sgd"
    lr: float = 0.05
    weight_decay: float = 5e-4
    momentum: float = 0.9
    epochs: int = 100
    batch_size: int = 128
    warmup_epochs: float = 2.0
    # The schedule in optimiser steps (harness.training.schedule): when ``steps`` is set it is the
    # training length and ``warmup_steps`` the warm-up, and ``epochs``/``warmup_epochs`` are not
    # read. The suite's training cases always set them; ``epochs`` serves a notebook's call.
    steps: int | None = None
    warmup_steps: int = 0
    label_smoothing: float = 0.1
    grad_accum_steps: int = 1
    clip_grad_norm: float | None = None
    precision: str = "fp32"  # one of harness.contract.PRECISIONS
    augment: tuple[str, ...] = ("standard",)
    # Flips suit natural images. Digits/characters (digits, MNIST, SVHN) are chirality-sensitive:
    # a mirrored 2 or 7 is no digit at all (harness.data.datasets.hflip_of decides per dataset).
    hflip: bool = True
    mixup_alpha: float = 0.8  # DeiT/timm defaults for from-scratch training
    cutmix_alpha: float = 1.0
    early_stop_patience: int | None = None
    val_fraction: float = 0.0
    seed: int = 0
    channels_last: bool = False
    deterministic: bool = True
    # The head's lr is ``lr``; every other parameter's is ``lr * backbone_lr_scale`` (fine-tuning
    # keeps pretrained features close to where they were; 1.0 trains everything alike).
    backbone_lr_scale: float = 1.0
    # Normalisation layers' running statistics frozen (BatchNorm in eval mode; its affine weights
    # still train). A fine-tune keeps the pretrained statistics: small batches of a new domain give
    # noisy ones, and replacing them shifts every feature the LP-FT head was fitted on.
    freeze_norm_stats: bool = False
    # What the model sees: batches are resized on the device to ``img_size`` (None: as the split
    # holds them) and normalised with the weights' ``mean``/``std`` (harness.data.augment.prepare).
    img_size: int | None = None
    mean: tuple[float, float, float] = SCRATCH_MEAN
    std: tuple[float, float, float] = SCRATCH_STD

    def __post_init__(self) -> None:
        _choice("optimizer", self.optimizer, _OPTIMIZERS)
        _choice("precision", self.precision, PRECISIONS)
        object.__setattr__(self, "augment", normalise_augment(self.augment))
        if not self.lr > 0:
            raise ValueError(f"Recipe.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"Recipe needs weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay}, {self.momentum}")
        if self.epochs < 1 or self.batch_size < 1 or self.grad_accum_steps < 1:
            raise ValueError("Recipe.epochs, batch_size and grad_accum_steps must all be >= 1")
        if self.batch_size % self.grad_accum_steps:
            raise ValueError(
                f"Recipe.batch_size ({self.batch_size}) must be divisible by grad_accum_steps "
                f"({self.grad_accum_steps}): batch_size is the effective batch per optimiser step"
            )
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"Recipe.warmup_epochs must be in [0, epochs={self.epochs}), got {self.warmup_epochs}; lower it")
        if self.steps is not None and not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"Recipe needs steps >= 1 and warmup_steps in [0, steps), got steps={self.steps}, warmup_steps={self.warmup_steps}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"Recipe.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.clip_grad_norm is not None and not self.clip_grad_norm > 0:
            raise ValueError(f"Recipe.clip_grad_norm must be > 0 or None (off), got {self.clip_grad_norm}")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ValueError(f"Recipe.early_stop_patience must be >= 1 or None (off), got {self.early_stop_patience}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"Recipe.val_fraction must be in [0, 1), got {self.val_fraction}")
        for name, alpha in (("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)):
            if name in self.augment and not alpha > 0:
                raise ValueError(f"augment includes {name}, so Recipe.{name}_alpha must be > 0, got {alpha}")
        if ("mixup" in self.augment or "cutmix" in self.augment) and self.batch_size % 2:
            raise ValueError("augment mixup/cutmix pairs each image with another in its batch: make batch_size even")
        if not 0 < self.backbone_lr_scale <= 1:
            raise ValueError(f"Recipe.backbone_lr_scale must be in (0, 1], got {self.backbone_lr_scale}")
        if self.img_size is not None and self.img_size < 1:
            raise ValueError(f"Recipe.img_size must be a positive side in pixels or None, got {self.img_size}")
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimiser steps of the whole run: ``steps``, else ``epochs`` epochs of ``steps_per_epoch``."""
        return self.steps if self.steps is not None else self.epochs * steps_per_epoch

    def warmup(self, steps_per_epoch: int) -> int:
        """Warm-up steps: ``warmup_steps`` with a step schedule, else ``warmup_epochs`` in steps."""
        return self.warmup_steps if self.steps is not None else round(self.warmup_epochs * steps_per_epoch)

    @property
    def micro_batch_size(self) -> int:
        """Images per forward/backward pass."""
        return self.batch_size // self.grad_accum_steps

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied; unknown field names raise ``TypeError`` listing the valid ones."""
        _check_keys(changes)
        return replace(self, **changes)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Recipe.{name}: {unknown(name, str(value), allowed)}")


def _check_keys(overrides: dict[str, Any]) -> None:
    valid = [f.name for f in fields(Recipe)]
    extra = [name for name in overrides if name not in valid]
    if extra:
        raise TypeError(unknown("Recipe field", extra[0], valid))


# The from-scratch rules a family's row names (harness.contract.Family.scratch), each with its lr
# rule for the batch: a function of the batch size, and the settings that go with it.
SCRATCH_RULES: dict[str, tuple[Callable[[int], float], dict[str, Any]]] = {
    # Goyal et al. 2017 linear scaling rule: 0.1 at batch 256, proportional otherwise.
    # 5e-4 is the standard from-scratch ResNet/CIFAR decay; small data needs the regularisation.
    # Nesterov momentum 0.9, the classic SGD setting for CNNs. 2 warm-up epochs: enough to
    # stabilise BN statistics at lr ~0.05 without wasting short runs.
    "sgd": (lambda batch: 0.1 * batch / 256, dict(optimizer="sgd", weight_decay=5e-4, momentum=0.9, warmup_epochs=2.0)),
    # 1e-3 at batch 128 (from-scratch small-data ViTs, Lee et al. 2021); square-root scaling is the
    # batch rule for Adam-type optimisers (Malladi et al. 2022). 0.05 is the DeiT/Swin decay:
    # attention models overfit small data without it. Momentum is unused by AdamW (its betas stay
    # at torch defaults). Transformers diverge without a longer warm-up from scratch (DeiT uses 5).
    "adamw": (lambda batch: 1e-3 * math.sqrt(batch / 128), dict(optimizer="adamw", weight_decay=0.05, momentum=0.9, warmup_epochs=5.0)),
}


def default_recipe(family: Family, **overrides: Any) -> Recipe:
    """The from-scratch default recipe for a model ``family`` (its row's rule in :data:`SCRATCH_RULES`),
    with ``overrides`` applied.

    If ``lr`` is not overridden it is scaled to the (possibly overridden) ``batch_size``.
    """
    batch_size = _batch_size(family, overrides)
    lr_rule, settings = SCRATCH_RULES[FAMILY_SPECS[family].scratch]
    base: dict[str, Any] = dict(settings, lr=lr_rule(batch_size))
    # 100 epochs: small sets need many passes from scratch; benchmarks override per dataset.
    base.update(epochs=100, batch_size=batch_size, label_smoothing=0.1)  # 0.1 = Szegedy et al. 2016 / timm default
    return _with_overrides(base, overrides)


def _batch_size(family: Family, overrides: dict[str, Any]) -> int:
    """The recipe's batch (the overrides' or 128), once ``family`` and the override names are checked."""
    if family not in FAMILIES:
        raise ValueError(unknown("family", family, FAMILIES))
    _check_keys(overrides)
    # 128 images per step: 1-4 GPU robotics setups and <300k-image sets; keeps >= 10 steps per
    # epoch even on the 1347-image digits split so the per-step schedule is not too coarse.
    return int(overrides.get("batch_size", 128))


def _with_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> Recipe:
    base.update(overrides)
    if "warmup_epochs" not in overrides:
        # Short runs (smoke, --epochs 2) keep the warm-up inside the first quarter of training.
        base["warmup_epochs"] = min(base["warmup_epochs"], base["epochs"] / 4)
    return Recipe(**base)


def finetune_recipe(family: Family, **overrides: Any) -> Recipe:
    """The fine-tuning default: the whole network from pretrained weights (LP-FT: the head is set
    from the linear probe by the caller), the family row's ``freeze_norm_stats``, then
    ``overrides``. If ``lr`` is not overridden it is scaled to the (possibly overridden) ``batch_size``.
    """
    batch_size = _batch_size(family, overrides)
    base: dict[str, Any] = dict(
        # AdamW for every family: the optimiser of timm's and BiT/DeiT-style fine-tuning recipes,
        # and one setting that behaves across CNN and ViT features alike.
        optimizer="adamw",
        # 3e-4 at batch 128, square-root scaled like the from-scratch AdamW rule: a point of the
        # searched grid (harness.training.selection.FINETUNE_LR_GRID), the lr of `--tune off`.
        lr=3e-4 * math.sqrt(batch_size / 128),
        # One lr for head and backbone: the head starts from the linear probe's solution (LP-FT,
        # Kumar et al. 2022), so it needs no faster lr to catch up, as a random head would.
        backbone_lr_scale=1.0,
        # 0.05, the DeiT/timm fine-tune decay (decoupled, so it does not scale with lr).
        weight_decay=0.05,
        momentum=0.9,  # unused by AdamW
        warmup_epochs=1.0,  # read only without a step schedule (the suite's cases have one: 10 % of the steps)
        epochs=30,
        batch_size=batch_size,
        # None: the head starts from the probe, fitted by plain cross-entropy; smoothing would
        # turn its confident logits (a loss of 0.0005 on a 300-image subset) into a loss of 1.15
        # whose first gradients all go into reshaping the pretrained features.
        label_smoothing=0.0,
        freeze_norm_stats=FAMILY_SPECS[family].freeze_norm_stats,
    )
    return _with_overrides(base, overrides)


# The default recipe of each protocol that trains the network (harness.contract.Protocol.recipe).
RECIPES: dict[str, Callable[..., Recipe]] = {"scratch": default_recipe, "finetune": finetune_recipe}


def build_optimizer(model: torch.nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """The recipe's optimiser; biases and norm weights (1-D params) get no weight decay (timm
    convention). With ``backbone_lr_scale < 1`` the classifier (timm's ``get_classifier()``) keeps
    ``lr`` and every other parameter gets ``lr * backbone_lr_scale``."""
    groups = param_groups_weight_decay(model, recipe.weight_decay)
    if recipe.backbone_lr_scale != 1.0:
        groups = _split_head(model, groups, recipe)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def _split_head(model: torch.nn.Module, groups: list[dict[str, Any]], recipe: Recipe) -> list[dict[str, Any]]:
    """Each weight-decay group split into its head and backbone parameters, with their lr."""
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is None:
        raise ValueError(f"backbone_lr_scale={recipe.backbone_lr_scale} needs a timm model (get_classifier() names the head)")
    head = {id(p) for p in get_classifier().parameters()}
    if not head:
        raise ValueError("the model has no classifier parameters to train at the head's lr; build it with num_classes > 0")
    out = []
    for group in groups:
        params = list(group["params"])
        for is_head, lr in ((True, recipe.lr), (False, recipe.lr * recipe.backbone_lr_scale)):
            chosen = [p for p in params if (id(p) in head) == is_head]
            if chosen:
                out.append({**group, "params": chosen, "lr": lr})
    return out


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Multiplier on the base lr at optimiser ``step``: linear warm-up, then cosine to zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine schedule with linear warm-up, meant to be stepped once per optimiser step."""
    if steps_per_epoch < 1:
        raise ValueError("steps_per_epoch must be >= 1: the training split is smaller than one batch; lower batch_size")
    total, warmup = recipe.total_steps(steps_per_epoch), recipe.warmup(steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, warmup))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision``, refusing combinations this torch/device cannot run."""
    if precision == "fp32":
        return None
    dtype = DTYPES[precision]
    try:
        with torch.autocast(device.type, dtype=dtype):
            probe = torch.ones(2, 2, device=device) @ torch.ones(2, 2, device=device)
        ok = probe.dtype == dtype
    except (RuntimeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"precision={precision!r} autocast is not supported on {device.type} by torch {torch.__version__}; use 'bf16' or 'fp32'")
    return dtype


@contextmanager
def determinism(enabled: bool) -> Iterator[None]:
    """Deterministic kernels (or cuDNN autotuning when off) for the run, restoring the previous settings."""
    prev = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    if enabled:
        # cuBLAS needs this workspace setting for reproducible GEMMs; it only takes effect if
        # set before CUDA initialises, hence setdefault (launchers may already export it).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not enabled
    torch.backends.cudnn.deterministic = enabled
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev[0], warn_only=prev[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = prev[2], prev[3]
