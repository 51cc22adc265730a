"""The identity of a benchmark case.

A :class:`CaseSpec` is the single source of a case's test id, its pytest markers and the
identity keys of its JSON record. Nothing else re-derives them: a new axis is one field here.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.contract import FAMILY_SPECS, KINDS, PROTOCOLS, unknown
from harness.data.registry import DATASETS, path_form, seg_form

if TYPE_CHECKING:
    from harness.backbones.weights import WeightsRef


# Inference cases at or below this many pixels per batch (img_size**2 * batch) are cheap on a
# CPU; above it (224 px at batch > 1, or 32 px at batch > 49) a case is marked `slow`.
_SLOW_PIXELS = 224 * 224


# Every marker a case can carry (CaseSpec.markers), declared once: pytest registers these.
MARKERS: dict[str, str] = {
    **{name: f"{kind.meaning} (kind)" for name, kind in KINDS.items()},
    **{family.name: family.meaning for family in FAMILY_SPECS.values()},
    "edge": "edge-tagged backbones",
    "gpu": "cases that run on an accelerator (cuda, mps)",
    "jetson": "edge backbones at batch 1: the cases meant to run on a Jetson board",
    "smoke": "the small fast offline subset (CPU, 32 px, batch 1, fp32; digits for training)",
    "slow": "large inputs, full datasets, batch-size searches",
}


# Words of a -m expression that are no marker names.
_MARK_OPERATORS = {"and", "or", "not", "True", "False", "None"}


def marker_names(expression: str) -> list[str]:
    """The marker names a ``-m`` expression tests (``"inference and not slow"`` → inference, slow);
    arguments of the ``name(key=value)`` form are dropped."""
    text = re.sub(r"(?<=\w)\(\s*\w+\s*=(?:[^()'\"]|'[^']*'|\"[^\"]*\")*\)", " ", expression)  # name(key=...) keeps its name
    names = re.findall(r"[\w.:+\-\[\]/\\]+", text)
    return list(dict.fromkeys(name for name in names if name not in _MARK_OPERATORS))


def unknown_markers_message(expression: str, registered: list[str]) -> str | None:
    """The usage error of a ``-m`` expression naming a marker nobody declared (it would select
    nothing and exit 5 silently), with the closest declared names; ``None`` when every name is declared."""
    unknown = [name for name in marker_names(expression) if name not in registered]
    if not unknown:
        return None
    ours = list(MARKERS)
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, ours, n=3, cutoff=0.6) or difflib.get_close_matches(name, registered, n=3, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return (f"-m {expression!r}: no marker named {', '.join(parts)}; the benchmark markers are {', '.join(ours)} "
            "(pytest --markers lists all; -k selects by test id, e.g. -k cpu)")

@dataclass(frozen=True)
class CaseSpec:
    """What one case measures: backbone × device × batch × resolution × precision (× data)."""

    kind: str  # a row of harness.contract.KINDS
    backbone: str
    family: str
    edge: bool
    device: str
    batch_size: int
    img_size: int
    precision: str
    num_classes: int = 10
    channels_last: bool = False
    runtime: str = "eager"
    dataset: str | None = None
    subset: str | None = None
    smoke: bool = False
    # Processes training the case together (torchrun --nproc-per-node); batch_size stays global.
    world_size: int = 1
    # Train cases: the pretrained weights the backbone starts from (None: random initialisation)
    # and how they are used (harness.contract.PROTOCOLS). Inference and plan cases measure the
    # architecture, whatever its weights: latency and memory do not depend on them.
    weights: WeightsRef | None = None
    protocol: str = "scratch"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not in the contract: {', '.join(KINDS)}")
        if self.kind == "train" and (self.dataset is None or self.subset is None):
            raise ValueError("a train case needs a dataset and a subset")
        if self.kind == "dense" and self.dataset is None:
            raise ValueError("a dense case needs a segmentation dataset")
        if self.protocol not in PROTOCOLS:
            raise ValueError(unknown("protocol", self.protocol, PROTOCOLS))
        if self.kind not in ("train", "dense") and self.weights is not None:
            raise ValueError(f"{self.kind} cases measure the architecture: weights belong to train and dense cases")
        if self.kind != "train" and self.protocol != "scratch":
            raise ValueError(f"{self.kind} cases measure the architecture: a protocol belongs to train cases")
        if self.weights is not None and self.weights.arch != self.backbone:
            raise ValueError(f"weights of {self.weights.arch} given for backbone {self.backbone}")
        if self.world_size < 1 or (self.world_size > 1 and self.kind != "train"):
            raise ValueError(f"world_size {self.world_size}: only train cases run on several processes; use world_size=1 for {self.kind}")

    @property
    def id(self) -> str:
        """The pytest id, e.g. ``convnextv2_tiny-cpu-bs1-32px-fp32`` or ``resnet18-cifar10_5k-cpu-bs128-32px-fp32``.

        A train case on several processes ends in ``-ws{N}``; one process adds nothing, so the
        ids (and the baselines keyed by them) of single-process runs stay as they were. A train
        case names its weights with its backbone (``resnet50.a1_in1k``, ``resnet18@digits04``) and
        its protocol after the subset, except ``scratch``, which adds nothing for the same reason:
        ``convnextv2_tiny.fcmae_ft_in1k-cifar10_5k-linear-cuda-bs128-224px-fp32``.
        """
        if self.kind == "train":
            protocol = [] if self.protocol == "scratch" else [self.protocol]
            parts = [self.backbone_name, f"{self.dataset_label}_{self.subset}", *protocol, self.device, f"bs{self.batch_size}", f"{self.img_size}px", self.precision]
        elif self.kind == "plan":
            parts = [self.backbone, self.device, f"{self.img_size}px", self.precision]
        elif self.kind == "dense":  # resnet18@fmnist-voc-scenes-cpu-64px-fp32: latency is at batch 1, not an axis
            parts = [self.backbone_name, self.dataset_label, self.device, f"{self.img_size}px", self.precision]
        else:
            parts = [self.backbone, self.device, f"bs{self.batch_size}", f"{self.img_size}px", self.precision]
        if self.channels_last:
            parts.append("cl")
        if self.runtime != "eager":
            parts.append(self.runtime)
        if self.world_size > 1:
            parts.append(f"ws{self.world_size}")
        return "-".join(parts)

    @property
    def backbone_name(self) -> str:
        """The backbone with its weights, as ids show it: ``resnet50.a1_in1k``, ``resnet18@digits04``, ``resnet18``."""
        return self.weights.name if self.weights is not None else self.backbone

    @property
    def dataset_label(self) -> str:
        """The dataset as it appears in ids: ``imagefolder:/data/bins`` reads ``imagefolder-bins``,
        ``wds:/data/bins/train-{000000..000009}.tar`` reads ``wds-bins`` (the shards' folder)."""
        name = str(self.dataset)
        form = path_form(name)
        if form is not None:
            return f"{form.word}-{form.folder_name(name[len(form.prefix):])}"
        seg = seg_form(name)
        if seg is not None:  # voc:/data/scenes reads voc-scenes
            parts = name[len(seg.prefix):].replace("\\", "/").rstrip("/").split("/")
            return f"{seg.word}-{parts[-1] or 'root'}"
        return name

    @property
    def case_id(self) -> str:
        """The key a comparison matches cases on across runs."""
        return f"{self.kind}/{self.id}"

    @property
    def is_accelerated(self) -> bool:
        return self.device.split(":")[0] in ("cuda", "mps")

    def markers(self) -> list[str]:
        """Marker names: kind, family, ``edge``, ``gpu``, ``jetson``, ``smoke``, ``slow``."""
        names: list[str] = [self.kind, self.family]
        if self.edge:
            names.append("edge")
        if self.is_accelerated:
            names.append("gpu")
        # The Jetson track: edge-tagged backbones at batch 1, the latency a robot sees per frame.
        if self.edge and self.batch_size == 1 and self.kind == "inference":
            names.append("jetson")
        if self.smoke:
            names.append("smoke")
        if self.is_slow:
            names.append("slow")
        return names

    @property
    def is_slow(self) -> bool:
        if self.kind == "train":  # a dataset embedded in a package is small enough for a CPU smoke
            info = DATASETS.get(str(self.dataset))
            return info is None or not info.embedded
        if self.kind in ("plan", "dense"):
            return True  # dozens of probe runs, up to thousands of images per batch; a dense case trains heads on a folder
        return self.img_size * self.img_size * self.batch_size > _SLOW_PIXELS

    def identity(self) -> dict[str, object]:
        """The flat identity keys of the case's JSON record (``extra_info``)."""
        keys: dict[str, object] = {
            "kind": self.kind,
            "case_id": self.case_id,
            "backbone": self.backbone,
            "family": self.family,
            "edge": self.edge,
            "device": self.device,
            "batch_size": self.batch_size,
            "img_size": self.img_size,
            "num_classes": self.num_classes,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "runtime": self.runtime,
        }
        if self.kind == "train":
            keys.update(dataset=self.dataset, subset=self.subset, train_batch_size=self.batch_size, world_size=self.world_size,
                        protocol=self.protocol, weights=self.weights.label if self.weights is not None else None,
                        backbone_name=self.backbone_name)
        if self.kind == "plan":
            del keys["batch_size"], keys["runtime"]
        if self.kind == "dense":
            keys.update(dataset=self.dataset, weights=self.weights.label if self.weights is not None else None, backbone_name=self.backbone_name)
        from harness.backbones.own import is_own

        if is_own(self.backbone):  # a team's code: where it lives and digests that tell its versions apart
            from harness.backbones.own_model import own_identity

            keys.update(own_identity(self.backbone, self.num_classes, self.img_size))
        return keys
