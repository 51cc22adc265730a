"""The train kind's protocols, one module each: how a train case uses its backbone.

A protocol is registered by its row in :data:`harness.contract.PROTOCOL_SPECS` (its name, meaning,
whether it reads frozen features, which weights it takes, its warm-up) and implemented by the
module ``harness.protocols.<name>``, which provides:

- ``grid(settings)``: its hyperparameter search grid (digested as the ``tune`` setting), or ``None``;
- ``settings_of(spec, settings)``: its part of the train kind's settings
  (:data:`TRAINING_SETTINGS`, in that order);
- ``run(spec, settings, train_split, test_split, world, progress)``: every seed of the case, and
  the flat record of the train kind.

Nothing else branches on a protocol's name: a new protocol is one module plus one row.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

from harness.contract import PROTOCOL_SPECS, module_name, unknown
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.runtime.distributed import World
from harness.settings import Settings
from harness.training.selection import tune_setting
from harness.training.trained import EpochStats

# The train kind's settings a protocol resolves (the rest are the kind's own: threads, seeds,
# edge_profile, weights_sha256). A protocol that has no such thing (a probe's warm-up) says None.
TRAINING_SETTINGS = ("schedule", "optimizer", "lr", "weight_decay", "label_smoothing", "augment", "hflip", "early_stop",
                     "val_fraction", "grad_accum", "clip_grad", "tune")

Progress = Callable[[int, EpochStats], None]


class ProtocolModule(Protocol):
    """What ``harness.protocols.<name>`` provides (see the module docstring)."""

    def grid(self, settings: Settings) -> Mapping[str, object] | None: ...

    def settings_of(self, spec: CaseSpec, settings: Settings) -> dict[str, object]: ...

    def run(self, spec: CaseSpec, settings: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
            progress: Progress | None) -> dict[str, Any]: ...


def protocol_module(name: str) -> ProtocolModule:
    """The module of protocol ``name``; ``ValueError`` naming the valid ones for a name with no row."""
    if name not in PROTOCOL_SPECS:
        raise ValueError(unknown("protocol", name, PROTOCOL_SPECS))
    return cast(ProtocolModule, importlib.import_module(f"{__name__}.{module_name(name)}"))


def searched(protocol: str, settings: Settings) -> dict[str, object] | None:
    """The protocol's search as a digested setting (``tune``), or ``None`` when nothing is searched."""
    return tune_setting(protocol_module(protocol).grid(settings), settings.tune)
