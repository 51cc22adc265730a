"""The known datasets, their sizes, and where the data root is.

``DATASETS`` holds facts about each named dataset, one row each: classes, official split sizes,
where torchvision keeps it under the data root, its loader, whether its images may be mirrored and
its measured step budget. Everything else reads the row: a dataset whose loader exists is one row;
a new format is one loader module plus one row. Datasets named by a path (``imagefolder:PATH``,
``wds:PATTERN``) are not rows: their classes and sizes come from the files themselves, and
``PATH_FORMS`` names the module that reads each form.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from harness.contract import unknown

if TYPE_CHECKING:
    from harness.data.types import TensorSplit

# Environment variable naming the data root; the pytest option --data-root overrides it.
DATA_ROOT_ENV = "BACKBONE_BENCH_DATA"
IMAGEFOLDER_PREFIX = "imagefolder:"
WDS_PREFIX = "wds:"
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one named dataset.

    ``train_size``/``test_size`` are the official split sizes as ``load_split`` returns them;
    ``native_size`` is the stored image side in pixels (``None`` when images vary);
    ``layout`` is the directory under the data root that must exist; ``download_mb`` is the
    approximate download size (``None`` for data embedded in an installed package). ``loader``
    names the function that reads a split, ``"module:function"`` (imported when a split is
    loaded, so naming a dataset costs no import), called as
    ``loader(info, split, root, img_size=, download_=, verify=)``. ``hflip``: training may mirror
    its images (not glyphs: a mirrored 2 or 7 is no digit). ``steps``: a measured step budget that
    replaces the HyperRule's (:mod:`harness.training.schedule`), ``None`` for the rule.
    """

    name: str
    num_classes: int
    train_size: int
    test_size: int
    native_size: int | None
    layout: str
    download_mb: int | None
    loader: str
    hflip: bool = True
    steps: int | None = None

    @property
    def embedded(self) -> bool:
        """Shipped inside an installed package: nothing to download, small enough for a CPU smoke."""
        return self.download_mb is None

    def load(self, split: str, root: Path, *, img_size: int, download: bool, verify: bool) -> TensorSplit:
        """``split`` read by the row's loader."""
        module, function = self.loader.split(":")
        read = cast(Callable[..., "TensorSplit"], getattr(importlib.import_module(module), function))
        return read(self, split, root, img_size=img_size, download_=download, verify=verify)

    def split_size(self, split: str) -> int:
        """The official number of images in ``split`` ("train" or "test")."""
        return self.train_size if check_split(split) == "train" else self.test_size


# Sizes are the official ones (torchvision docs / dataset papers). flowers102 "train" is the
# official train+val union (1020 + 1020): with 10 images per class per split, training on
# train alone leaves too little to measure anything, and the benchmark carves its own
# validation split out of the training subset anyway. download_mb are archive sizes rounded up.
_TV = "harness.data.torchvision_sources"
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("cifar10", 10, 50_000, 10_000, 32, "cifar-10-batches-py", 163, f"{_TV}:load_cifar"),
        DatasetInfo("cifar100", 100, 50_000, 10_000, 32, "cifar-100-python", 162, f"{_TV}:load_cifar"),
        DatasetInfo("svhn", 10, 73_257, 26_032, 32, "svhn", 246, f"{_TV}:load_svhn", hflip=False),
        DatasetInfo("mnist", 10, 60_000, 10_000, 28, "MNIST/raw", 12, f"{_TV}:load_mnist", hflip=False),
        DatasetInfo("fashion_mnist", 10, 60_000, 10_000, 28, "FashionMNIST/raw", 31, f"{_TV}:load_mnist", hflip=False),
        DatasetInfo("stl10", 10, 5_000, 8_000, 96, "stl10_binary", 2_641, f"{_TV}:load_stl10"),
        DatasetInfo("flowers102", 102, 2_040, 6_149, None, "flowers-102", 330, f"{_TV}:load_flowers102"),
        # Embedded in scikit-learn: 1,797 images split 75/25 (see harness.data.digits). Steps: resnet18
        # from scratch reaches >= 97 % top-1 on the 450 test images from 80 steps on (8 epochs of 10
        # steps at batch 128; 98.0/98.2 % for seeds 0/1); 100 leaves a margin.
        DatasetInfo("digits", 10, 1_347, 450, 8, "(embedded in scikit-learn)", None, "harness.data.digits:load", hflip=False, steps=100),
    )
}


@dataclass(frozen=True)
class PathForm:
    """A dataset named by a path instead of a registry row: ``imagefolder:PATH`` or ``wds:PATTERN``.

    ``module`` reads it and provides the same five functions (:class:`harness.data.datasets.FormReader`):
    ``resolve``, ``check``, ``check_classes``, ``load`` and ``facts_dir``; it is imported only when a
    split is read or checked, so parsing a name costs no import. ``names_files``: PATH names files
    (a shard pattern), so the dataset's folder, whose name ids show, is PATH's parent.
    """

    prefix: str
    module: str
    names_files: bool
    usage: str

    @property
    def word(self) -> str:
        """The form as ids spell it: ``imagefolder``, ``wds``."""
        return self.prefix.rstrip(":")

    def folder_name(self, path_text: str) -> str:
        """The name of the dataset's folder: ``/data/bins`` gives ``bins``, ``/data/bins/train-{0..9}.tar`` too."""
        parts = path_text.replace("\\", "/").rstrip("/").split("/")
        parts = parts[:-1] if self.names_files else parts
        return parts[-1] if parts and parts[-1] else "root"


PATH_FORMS: dict[str, PathForm] = {
    form.prefix: form
    for form in (
        PathForm(IMAGEFOLDER_PREFIX, "harness.data.imagefolder", False, "'imagefolder:PATH' for a folder of images (PATH/<class>/*.png)"),
        PathForm(WDS_PREFIX, "harness.data.shards", True, "'wds:PATTERN' for WebDataset shards (PATH/train-{000000..000009}.tar)"),
    )
}


def path_form(name: str) -> PathForm | None:
    """The path form ``name`` is written in (by its prefix), ``None`` for a registered name."""
    return next((form for prefix, form in PATH_FORMS.items() if name.startswith(prefix)), None)


# Fixed-size datasets are held at least at 32 px: the side every loader gave a 32 px case before
# batches were resized on the device, so such cases read exactly the images they always did.
_HELD_FLOOR = 32


def held_size(name: str, img_size: int) -> int:
    """The side a split is held at (in memory, on the device) for a case at ``img_size``.

    A dataset of one stored size is held at that size, at least 32 px and at most ``img_size``;
    batches are resized to ``img_size`` on the device (``harness.data.augment.prepare``), so a
    224 px fine-tune on CIFAR keeps 50,000 images at 150 MB instead of 7.5 GB. Datasets whose
    images vary (flowers102, image folders) are resized to ``img_size`` once, on load.
    """
    info = DATASETS.get(name)
    if info is None or info.native_size is None:
        return img_size
    return min(img_size, max(info.native_size, _HELD_FLOOR))


def dataset_names() -> list[str]:
    """The registered dataset names, sorted; the path forms (``imagefolder:PATH``, ``wds:PATTERN``) are accepted in addition."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; unknown names raise ``ValueError`` with close matches."""
    if name in DATASETS:
        return DATASETS[name]
    forms = "".join(f", or {form.usage}" for form in PATH_FORMS.values())
    raise ValueError(f"{unknown('dataset', name, dataset_names())}{forms}")


def check_split(split: str) -> str:
    """Return ``split`` if it is "train" or "test", else raise ``ValueError`` naming both."""
    if split in SPLITS:
        return split
    raise ValueError(
        f"{unknown('split', str(split), SPLITS)} (a validation split is carved out of the training "
        "subset by harness.data.subsets.split_validation)"
    )


def default_data_root() -> Path:
    """The data root: ``$BACKBONE_BENCH_DATA`` when set and non-empty, else ``~/.cache/backbone-bench/data``."""
    env = os.environ.get(DATA_ROOT_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "backbone-bench" / "data"


def markdown_table() -> str:
    """The registered datasets as the manual shows them (docs/reference/contract.md)."""
    lines = ["| dataset | classes | train / test images | stored side | under the data root | download | flips | steps |",
             "|---|---|---|---|---|---|---|---|"]
    for d in DATASETS.values():
        side = f"{d.native_size} px" if d.native_size else "varies"
        download = "embedded" if d.download_mb is None else f"{d.download_mb} MB"
        steps = str(d.steps) if d.steps is not None else "HyperRule"
        lines.append(f"| `{d.name}` | {d.num_classes} | {d.train_size:,} / {d.test_size:,} | {side} | `{d.layout}` | {download} | "
                     f"{'yes' if d.hflip else 'no'} | {steps} |")
    return "\n".join(lines) + "\n"


# --- segmentation datasets (the dense kind): named by a form and a path, one reader module per form ---

@dataclass(frozen=True)
class SegForm:
    """A segmentation dataset layout: ``voc:PATH``, ``ade:PATH`` or ``segfolder:PATH``.

    ``module`` reads it (:class:`harness.data.segmentation.SegReader`: ``classes``, ``pairs``, ``read_mask``),
    imported only when a split is read or checked."""

    prefix: str
    module: str
    usage: str

    @property
    def word(self) -> str:
        return self.prefix.rstrip(":")


SEG_FORMS: dict[str, SegForm] = {
    form.prefix: form
    for form in (
        SegForm("voc:", "harness.data.seg_voc", "voc:PATH for the Pascal VOC layout (JPEGImages/, SegmentationClass/ palette PNGs, "
                "ImageSets/Segmentation/{train,val}.txt; 255 = ignore)"),
        SegForm("ade:", "harness.data.seg_ade", "ade:PATH for the ADE20K layout (images/{training,validation}/, annotations/{training,validation}/ "
                "index PNGs; 0 = other, ignored)"),
        SegForm("segfolder:", "harness.data.seg_folder", "segfolder:PATH for {train,val}/images/ + {train,val}/masks/ index PNGs and a "
                "dataset.json naming the classes and the ignore index"),
    )
}


def seg_form(name: str) -> SegForm | None:
    """The segmentation form ``name`` is written in (by its prefix), ``None`` for another name."""
    return next((form for prefix, form in SEG_FORMS.items() if name.startswith(prefix)), None)
