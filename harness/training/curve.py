"""What the training loop evaluates between epochs, and on which images: the curve's sample and
points, and the validation split carved from the training subset."""

from __future__ import annotations

import torch

from harness.data.subsets import split_validation
from harness.data.types import TensorSplit
from harness.training.recipes import Recipe

# The per-epoch curve on the test split reads a fixed stratified sample of this many images: 50
# per class on 10 classes puts the curve's standard error near 2 points, enough to see a model
# converge, while a 100-image subset no longer spends most of its time evaluating 10,000 images
# every epoch. The final evaluation always reads the whole split. A validation split (which picks
# the best epoch) is read whole.
CURVE_SAMPLE = 500


# The curve has at most this many points: a step schedule on a 25-image subset is 500 one-step
# epochs, and evaluating (and checkpointing) after each would cost more than the training. Runs of
# up to 20 epochs (every epoch schedule the suite ran before steps) keep one point per epoch.
CURVE_POINTS = 20


def curve_sample(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` sorted indices of ``labels``, stratified: every class in proportion (to within one image),
    picked by a fixed permutation (seed 0), so every seed and epoch reads the same images."""
    total = len(labels)
    if total <= n:
        return torch.arange(total)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    by_class = perm[torch.argsort(labels.cpu()[perm], stable=True)]  # random order within each class
    return by_class[(torch.arange(n) * total) // n].sort().values


def carve_validation(train: TensorSplit, recipe: Recipe) -> tuple[TensorSplit, TensorSplit]:
    """Split ``recipe.val_fraction`` of ``train`` off as validation (stratified, seeded by the recipe)."""
    train_idx, val_idx = split_validation(torch.arange(len(train)), train.labels, fraction=recipe.val_fraction, seed=recipe.seed)
    return train.take(torch.as_tensor(train_idx, dtype=torch.long)), train.take(torch.as_tensor(val_idx, dtype=torch.long))

