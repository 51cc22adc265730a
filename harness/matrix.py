"""The matrix: expand validated :class:`Settings` into the list of cases a session runs.

A combination this machine cannot run (a device it lacks, a precision the device does not
support) stays in the list with the reason, so it shows up as a skip, never as a silent pass
or an absent row.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

from harness.cases import CaseSpec
from harness.devices import precision_unsupported_reason, unavailable_reason
from harness.models import lookup
from harness.settings import Settings

# The smoke profile: every selected backbone at batch 1, 32 px, fp32, eager, on the CPU — the
# per-frame latency question, cheap enough to run offline in about a minute.
SMOKE_IMG_SIZE = 32
# The training smoke: one small backbone per family on the embedded digits, a few minutes on a CPU.
SMOKE_TRAIN_BACKBONES = ("resnet18", "deit_small_patch16_224", "mobilevit_xs")


@dataclass(frozen=True)
class Case:
    """A case and, when it cannot run on this machine, why."""

    spec: CaseSpec
    skip: str | None = None


def _skip_reason(device: str, precision: str) -> str | None:
    return unavailable_reason(device) or precision_unsupported_reason(device, precision)


def inference_cases(settings: Settings) -> list[Case]:
    """backbone × device × batch × resolution × precision × runtime."""
    cases: list[Case] = []
    runtimes = list(dict.fromkeys([*settings.runtimes, *(["compile"] if settings.compile else [])]))
    for name, device, batch, size, precision, runtime in product(
        settings.backbones, settings.devices, settings.batch_sizes, settings.img_sizes, settings.precisions, runtimes
    ):
        entry = lookup(name)
        smoke = device == "cpu" and batch == 1 and size == SMOKE_IMG_SIZE and precision == "fp32" and runtime == "eager"
        spec = CaseSpec(
            kind="inference",
            backbone=name,
            family=entry.family,
            edge=entry.edge,
            device=device,
            batch_size=batch,
            img_size=size,
            precision=precision,
            num_classes=settings.num_classes,
            channels_last=settings.channels_last,
            runtime=runtime,
            smoke=smoke and not settings.channels_last,
        )
        cases.append(Case(spec, _skip_reason(device, precision)))
    return cases


def train_cases(settings: Settings) -> list[Case]:
    """backbone × dataset × subset × device × train batch × precision (resolution from the first img size)."""
    cases: list[Case] = []
    size = settings.img_sizes[0]
    for name, dataset, subset, device, batch, precision in product(
        settings.backbones, settings.datasets, settings.subsets, settings.devices, settings.train_batch_sizes, settings.precisions
    ):
        entry = lookup(name)
        spec = CaseSpec(
            kind="train",
            backbone=name,
            family=entry.family,
            edge=entry.edge,
            device=device,
            batch_size=batch,
            img_size=size,
            precision=precision,
            num_classes=_dataset_classes(dataset),
            channels_last=settings.channels_last,
            dataset=dataset,
            subset=subset,
            smoke=dataset == "digits" and device == "cpu" and precision == "fp32" and name in SMOKE_TRAIN_BACKBONES,
        )
        cases.append(Case(spec, _skip_reason(device, precision)))
    return cases


def _dataset_classes(dataset: str) -> int:
    """The class count of a registered dataset; 0 for an image folder (known once it is read)."""
    from harness.data.registry import DATASETS

    return DATASETS[dataset].num_classes if dataset in DATASETS else 0


def plan_cases(settings: Settings) -> list[Case]:
    """backbone × device × resolution × precision: the batch-size plan of each."""
    cases: list[Case] = []
    for name, device, size, precision in product(settings.backbones, settings.devices, settings.img_sizes, settings.precisions):
        entry = lookup(name)
        spec = CaseSpec(
            kind="plan", backbone=name, family=entry.family, edge=entry.edge, device=device, batch_size=1,
            img_size=size, precision=precision, num_classes=settings.num_classes,
        )
        cases.append(Case(spec, _skip_reason(device, precision)))
    return cases
