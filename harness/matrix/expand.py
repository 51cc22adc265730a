"""The matrix's shared pieces: a case with its skip reason, and the tokens every kind expands.

Each kind expands :class:`Settings` into its cases in its own module (``harness.kinds.<name>.cases``);
:func:`harness.kinds.build` is the list a session runs.

A combination this machine cannot run (a device it lacks, a precision the device does not
support) stays in the list with the reason, so it shows up as a skip, never as a silent pass
or an absent row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.backbones.factory import backbone_entry
from harness.matrix.cases import CaseSpec
from harness.runtime.devices import precision_unsupported_reason, unavailable_reason
from harness.runtime.distributed import current_world
from harness.settings import Settings

if TYPE_CHECKING:
    from harness.backbones.weights import WeightsRef

# The inference smoke: every selected backbone at batch 1, 32 px, fp32, eager, on the CPU — the
# per-frame latency question, cheap enough to run offline in about a minute.
SMOKE_IMG_SIZE = 32
# The training smoke: one small backbone per family on the embedded digits, minutes on a CPU.
SMOKE_TRAIN_BACKBONES = ("resnet18", "deit_small_patch16_224", "mobilevit_xs")
# Under torchrun only training spreads over the processes; latency is what one deployed process
# sees, and N ranks timing at once on shared cores would each measure contention.
SINGLE_PROCESS_ONLY = "{kind} cases are measured in a single process; run them without torchrun (train cases use the processes)"


@dataclass(frozen=True)
class MatrixCase:
    """A case and, when it cannot run on this machine, why."""

    spec: CaseSpec
    skip: str | None = None


def matrix_case(kind: str, name: str, device: str, precision: str, skip: str | None = None, **fields: Any) -> MatrixCase:
    entry = backbone_entry(name)
    spec = CaseSpec(kind=kind, backbone=name, family=entry.family, edge=entry.edge, device=device, precision=precision, **fields)
    # Every rank builds the same list (ids and skips), so the ranks run the same cases in step.
    distributed = kind != "train" and current_world().distributed
    return MatrixCase(spec, unavailable_reason(device) or precision_unsupported_reason(device, precision)
                or (SINGLE_PROCESS_ONLY.format(kind=kind) if distributed else None) or skip)


@functools.cache
def backbone_ref(token: str) -> WeightsRef:
    """The architecture and weights a backbone token names (``resnet50.a1_in1k``, ``resnet18@PATH``)."""
    from harness.backbones.weights import parse_backbone

    return parse_backbone(token)


def architectures(settings: Settings) -> list[str]:
    """The selected backbones without their weights: what inference and plan cases measure."""
    return list(dict.fromkeys(backbone_ref(token).arch for token in settings.backbones))


def dataset_classes(dataset: str) -> int:
    """The class count of a registered dataset; 0 for an image folder or shard set (known once it is read)."""
    from harness.data.registry import DATASETS

    return DATASETS[dataset].num_classes if dataset in DATASETS else 0
