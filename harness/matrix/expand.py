"""The matrix: expand validated :class:`Settings` into the list of cases a session runs.

A combination this machine cannot run (a device it lacks, a precision the device does not
support) stays in the list with the reason, so it shows up as a skip, never as a silent pass
or an absent row.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from itertools import product
from typing import TYPE_CHECKING, Any

from harness.backbones.registry import lookup
from harness.contract import NATIVE
from harness.matrix.cases import CaseSpec, KindName
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


def _case(kind: KindName, name: str, device: str, precision: str, skip: str | None = None, **fields: Any) -> MatrixCase:
    entry = lookup(name)
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


def finetune_needs_weights(arch: str) -> str:
    """The skip reason of a fine-tune of random weights, naming the fix."""
    import timm

    tags = timm.list_pretrained(f"{arch}.*")
    example = f" (e.g. {tags[0]})" if tags else ""
    return (f"finetune starts from pretrained weights and {arch} names none: name a timm tag{example} "
            f"or a checkpoint file ({arch}@PATH) in --backbones; scratch is the random-weights case")


def inference_cases(settings: Settings) -> list[MatrixCase]:
    """backbone × device × batch × resolution × precision × runtime."""
    runtimes = list(dict.fromkeys([*settings.runtimes, *(["compile"] if settings.compile else [])]))
    return [
        _case(
            "inference", name, device, precision, batch_size=batch, img_size=size, runtime=runtime,
            num_classes=settings.num_classes, channels_last=settings.channels_last,
            smoke=(device, batch, size, precision, runtime, settings.channels_last) == ("cpu", 1, SMOKE_IMG_SIZE, "fp32", "eager", False),
        )
        for name, device, batch, size, precision, runtime in product(
            architectures(settings), settings.devices, settings.batch_sizes, settings.img_sizes, settings.precisions, runtimes
        )
    ]


def train_cases(settings: Settings) -> list[MatrixCase]:
    """backbone (with weights) × dataset × subset × protocol × device × train batch × resolution × precision.

    ``scratch`` drops a backbone's weights (``resnet50.a1_in1k`` and ``resnet50`` are one scratch
    case); ``finetune`` of random weights is a skip naming the fix; ``linear``/``knn`` of random
    weights run (a baseline for the pretrained ones; the record says so). The world size is this
    session's (torchrun's ``WORLD_SIZE``): it is part of a case's identity.
    """
    from harness.backbones.weights import WeightsRef, preprocess_of

    world_size = current_world().size
    sizes = settings.train_img_sizes or settings.img_sizes[:1]
    cases: dict[str, MatrixCase] = {}
    for token, dataset, subset, protocol, device, batch, size, precision in product(
        settings.backbones, settings.datasets, settings.subsets, settings.protocols, settings.devices,
        settings.train_batch_sizes, sizes, settings.precisions,
    ):
        ref = backbone_ref(token)
        weights = ref if ref.pretrained and protocol != "scratch" else None
        img_size = preprocess_of(weights or WeightsRef(ref.arch)).input_size if size == NATIVE else int(size)
        case = _case(
            "train", ref.arch, device, precision, batch_size=batch, img_size=img_size, dataset=dataset, subset=subset,
            num_classes=_dataset_classes(dataset), channels_last=settings.channels_last, world_size=world_size,
            weights=weights, protocol=protocol,
            smoke=(dataset, device, precision, protocol) == ("digits", "cpu", "fp32", "scratch") and token in SMOKE_TRAIN_BACKBONES,
            skip=finetune_needs_weights(ref.arch) if protocol == "finetune" and weights is None else None,
        )
        cases.setdefault(case.spec.id, case)
    return list(cases.values())


def plan_cases(settings: Settings) -> list[MatrixCase]:
    """backbone × device × resolution × precision: the batch-size plan of each."""
    return [
        _case("plan", name, device, precision, batch_size=1, img_size=size, num_classes=settings.num_classes)
        for name, device, size, precision in product(architectures(settings), settings.devices, settings.img_sizes, settings.precisions)
    ]


def _dataset_classes(dataset: str) -> int:
    """The class count of a registered dataset; 0 for an image folder (known once it is read)."""
    from harness.data.registry import DATASETS

    return DATASETS[dataset].num_classes if dataset in DATASETS else 0


def build(kind: str, settings: Settings) -> list[MatrixCase]:
    """The cases of ``kind`` under ``settings``."""
    builders = {"inference": inference_cases, "train": train_cases, "plan": plan_cases}
    return builders[kind](settings)
