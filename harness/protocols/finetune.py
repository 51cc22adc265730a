"""``finetune``: the whole network from pretrained weights, started the LP-FT way (Kumar et al. 2022):
each seed's head is the linear probe fitted on the cached features of the images it trains on, then
every layer trains on the step schedule with the fine-tune recipe
(:func:`harness.training.recipes.finetune_recipe`). Under ``--tune on`` the probe's L2 is chosen as
the ``linear`` protocol chooses it, and the lr over
:data:`~harness.training.selection.FINETUNE_LR_GRID` on a validation split (``--lr`` fixes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from harness.data.subsets import parse_subset, split_validation, subset_indices
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.protocols import Progress, linear
from harness.protocols.frozen import extract_train_features, search_probe
from harness.protocols.network import Prepared, build, train_seeds
from harness.protocols.recipe import batch_for, network_settings, recipe_for
from harness.runtime.distributed import World
from harness.settings import Settings
from harness.training.loop import train
from harness.training.probes import LINEAR_L2, LinearProbe, fit_linear, load_into_head
from harness.training.schedule import Schedule
from harness.training.selection import FINETUNE_LR_GRID, POINT_FRACTION, VAL_FRACTION, Choice, choose, scaled_lr, tune_setting


def grid(settings: Settings) -> Mapping[str, object] | None:
    """The lr grid at batch 128, each point trained for a quarter of the steps; none under ``--lr``."""
    if settings.lr is not None:
        return None  # --lr fixes it: nothing left to search
    return {"lr_at_batch_128": list(FINETUNE_LR_GRID), "point_steps_fraction": POINT_FRACTION}


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    return network_settings(spec, settings, grid(settings))


def run(spec: CaseSpec, settings: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
        progress: Progress | None) -> dict[str, Any]:
    return train_seeds(spec, settings, train_split, test_split, world, progress, LinearStart(spec, settings, train_split))


def trained_indices(spec: CaseSpec, options: Settings, train_split: TensorSplit) -> torch.Tensor:
    """The sorted union of every seed's subset (:func:`harness.data.subsets.subset_indices`, as the seed loop draws them)."""
    subset = parse_subset(str(spec.subset))
    drawn = [subset_indices(train_split.labels, subset, seed=seed, num_classes=train_split.num_classes, dataset=str(spec.dataset))
             for seed in range(options.seeds)]
    union: torch.Tensor = torch.unique(torch.cat(drawn))  # sorted
    return union


class LinearStart:
    """LP-FT's start: a linear probe of the pretrained features, whose solution becomes the fine-tune's
    head. Features of the training split come from the feature cache (:mod:`harness.protocols.frozen`),
    so a fine-tune and the linear case of the same weights extract once."""

    def __init__(self, spec: CaseSpec, options: Settings, train_split: TensorSplit) -> None:
        self.spec, self.options, self.train_split = spec, options, train_split
        # Only the images some seed trains on need a feature: a cache miss extracts those, not the split.
        self.used = trained_indices(spec, options, train_split)
        self.features, self.device = extract_train_features(spec, options, train_split, only=self.used)
        self.num_classes = train_split.num_classes
        self.search_lr = tune_setting(grid(options), options.tune) is not None

    def record(self) -> dict[str, Any]:
        """What the record says of the features: the whole split read from the cache (``hit``) or
        extracted and cached (``miss``, a subset covering the split), or the ``subset`` extracted for
        this case alone (its images, nothing written: its rows outside them are NaN), and the time it took."""
        if not bool(self.features.features[:, 0].isnan().any()):  # the whole split: read from the cache, or extracted and cached
            return {"feature_cache": {"train": ["hit" if self.features.hit else "miss"]}, "feature_time_s": self.features.seconds,
                    "feature_files": [str(self.features.path)]}
        return {"feature_cache": {"train": ["subset"]}, "feature_time_s": self.features.seconds, "feature_files": [],
                "feature_images": len(self.used)}

    def prepare(self, seed: int, kept: torch.Tensor, batch: int, schedule: Schedule, world: World) -> Prepared:
        """The seed's head (the probe on ``kept``, its L2 searched as ``linear`` searches it) and lr."""
        choices: dict[str, object] = {}
        l2 = LINEAR_L2
        if tune_setting(linear.PROBE.grid(), self.options.tune) is not None:
            l2_choice = search_probe(linear.PROBE, self.features, kept, self.num_classes, seed, self.device)
            choices["head_l2"] = l2_choice.as_record()
            l2 = l2_choice.chosen
        lr = None
        if self.search_lr:
            lr_choice = self._search_lr(seed, kept, l2, schedule, world)
            choices["lr"] = lr_choice.as_record()
            lr = scaled_lr(lr_choice.chosen, batch)
        return Prepared(self.probe(kept, l2), lr, choices)

    def probe(self, indices: torch.Tensor, l2: float) -> LinearProbe:
        x, y = self.features.take(indices)
        return fit_linear(x, y, self.num_classes, l2=l2, device=self.device)

    def _search_lr(self, seed: int, indices: torch.Tensor, l2: float, schedule: Schedule, world: World) -> Choice:
        """The fine-tune lr chosen on a stratified validation split of the subset.

        Each grid point starts from the probe fitted on the fit part, trains on it for
        :data:`~harness.training.selection.POINT_FRACTION` of the case's steps and is scored by top-1 on
        the validation part: the test split is not passed to these trainings at all.
        """
        spec, options, split = self.spec, self.options, self.train_split
        fit_idx, val_idx = split_validation(indices, split.labels, fraction=VAL_FRACTION, seed=seed)
        fit, val = split.take(fit_idx), split.take(val_idx)
        batch = batch_for(recipe_for(spec, options, seed), len(fit_idx), world, str(spec.subset), arch=spec.backbone)
        short = schedule.shortened(POINT_FRACTION)
        head = self.probe(fit_idx, l2)

        def score(lr_at_128: float) -> tuple[float, float]:
            recipe = recipe_for(spec, options, seed, batch_size=batch, schedule=short, lr=scaled_lr(lr_at_128, batch))
            torch.manual_seed(seed)
            model, _ = build(spec, options, split.num_classes)
            load_into_head(head, model)
            result = train(model, fit, val, recipe, device=torch.device(spec.device), measure_memory=False, world=world)
            return result.top1, result.test_loss

        # On a tie, the gentlest update of the pretrained features: the lowest lr.
        return choose("lr_at_batch_128", "smallest", FINETUNE_LR_GRID, score, fit_images=len(fit_idx), val_images=len(val_idx))
