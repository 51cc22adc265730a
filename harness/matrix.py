"""The matrix: expand validated :class:`Settings` into the list of cases a session runs.

A combination this machine cannot run (a device it lacks, a precision the device does not
support) stays in the list with the reason, so it shows up as a skip, never as a silent pass
or an absent row.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Any

from harness.cases import CaseSpec, Kind
from harness.config.settings import Settings
from harness.devices import precision_unsupported_reason, unavailable_reason
from harness.distributed import current_world
from harness.models import lookup

# The inference smoke: every selected backbone at batch 1, 32 px, fp32, eager, on the CPU — the
# per-frame latency question, cheap enough to run offline in about a minute.
SMOKE_IMG_SIZE = 32
# The training smoke: one small backbone per family on the embedded digits, minutes on a CPU.
SMOKE_TRAIN_BACKBONES = ("resnet18", "deit_small_patch16_224", "mobilevit_xs")
# Under torchrun only training spreads over the processes; latency is what one deployed process
# sees, and N ranks timing at once on shared cores would each measure contention.
SINGLE_PROCESS_ONLY = "{kind} cases are measured in a single process; run them without torchrun (train cases use the processes)"


@dataclass(frozen=True)
class Case:
    """A case and, when it cannot run on this machine, why."""

    spec: CaseSpec
    skip: str | None = None


def _case(kind: Kind, name: str, device: str, precision: str, **fields: Any) -> Case:
    entry = lookup(name)
    spec = CaseSpec(kind=kind, backbone=name, family=entry.family, edge=entry.edge, device=device, precision=precision, **fields)
    # Every rank builds the same list (ids and skips), so the ranks run the same cases in step.
    distributed = kind != "train" and current_world().distributed
    return Case(spec, unavailable_reason(device) or precision_unsupported_reason(device, precision) or (SINGLE_PROCESS_ONLY.format(kind=kind) if distributed else None))


def inference_cases(settings: Settings) -> list[Case]:
    """backbone × device × batch × resolution × precision × runtime."""
    runtimes = list(dict.fromkeys([*settings.runtimes, *(["compile"] if settings.compile else [])]))
    return [
        _case(
            "inference", name, device, precision, batch_size=batch, img_size=size, runtime=runtime,
            num_classes=settings.num_classes, channels_last=settings.channels_last,
            smoke=(device, batch, size, precision, runtime, settings.channels_last) == ("cpu", 1, SMOKE_IMG_SIZE, "fp32", "eager", False),
        )
        for name, device, batch, size, precision, runtime in product(
            settings.backbones, settings.devices, settings.batch_sizes, settings.img_sizes, settings.precisions, runtimes
        )
    ]


def train_cases(settings: Settings) -> list[Case]:
    """backbone × dataset × subset × device × train batch × precision (at the first img size).

    The world size is this session's (torchrun's ``WORLD_SIZE``): it is part of a case's identity.
    """
    world_size = current_world().size
    return [
        _case(
            "train", name, device, precision, batch_size=batch, img_size=settings.img_sizes[0], dataset=dataset, subset=subset,
            num_classes=_dataset_classes(dataset), channels_last=settings.channels_last, world_size=world_size,
            smoke=(dataset, device, precision) == ("digits", "cpu", "fp32") and name in SMOKE_TRAIN_BACKBONES,
        )
        for name, dataset, subset, device, batch, precision in product(
            settings.backbones, settings.datasets, settings.subsets, settings.devices, settings.train_batch_sizes, settings.precisions
        )
    ]


def plan_cases(settings: Settings) -> list[Case]:
    """backbone × device × resolution × precision: the batch-size plan of each."""
    return [
        _case("plan", name, device, precision, batch_size=1, img_size=size, num_classes=settings.num_classes)
        for name, device, size, precision in product(settings.backbones, settings.devices, settings.img_sizes, settings.precisions)
    ]


def _dataset_classes(dataset: str) -> int:
    """The class count of a registered dataset; 0 for an image folder (known once it is read)."""
    from harness.data.registry import DATASETS

    return DATASETS[dataset].num_classes if dataset in DATASETS else 0


def build(kind: str, settings: Settings) -> list[Case]:
    """The cases of ``kind`` under ``settings``."""
    builders = {"inference": inference_cases, "train": train_cases, "plan": plan_cases}
    return builders[kind](settings)
