"""``scratch``: the whole network trained from random weights, the family's from-scratch recipe
(:data:`harness.training.recipes.SCRATCH_RULES`) on the step schedule. Nothing is searched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.protocols import Progress
from harness.protocols.network import train_seeds
from harness.protocols.recipe import network_settings
from harness.runtime.distributed import World
from harness.settings import Settings


def grid(settings: Settings) -> Mapping[str, object] | None:
    """No search: the from-scratch recipe's lr follows the family's batch rule."""
    return None


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    return network_settings(spec, settings, grid(settings))


def run(spec: CaseSpec, settings: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
        progress: Progress | None) -> dict[str, Any]:
    return train_seeds(spec, settings, train_split, test_split, world, progress)
