"""The known datasets, their sizes, and where the data root is.

``DATASETS`` holds facts about each named dataset (classes, official split sizes, where
torchvision keeps it under the data root). The ``imagefolder:PATH`` form is not listed here:
its classes and sizes come from the folder itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.contract import unknown

# Environment variable naming the data root; the pytest option --data-root overrides it.
DATA_ROOT_ENV = "BACKBONE_BENCH_DATA"
IMAGEFOLDER_PREFIX = "imagefolder:"
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about one named dataset.

    ``train_size``/``test_size`` are the official split sizes as ``load_split`` returns them;
    ``native_size`` is the stored image side in pixels (``None`` when images vary);
    ``layout`` is the directory under the data root that must exist; ``download_mb`` is the
    approximate download size (``None`` for the embedded ``digits``).
    """

    name: str
    num_classes: int
    train_size: int
    test_size: int
    native_size: int | None
    layout: str
    download_mb: int | None

    def split_size(self, split: str) -> int:
        """The official number of images in ``split`` ("train" or "test")."""
        return self.train_size if check_split(split) == "train" else self.test_size


# Sizes are the official ones (torchvision docs / dataset papers). flowers102 "train" is the
# official train+val union (1020 + 1020): with 10 images per class per split, training on
# train alone leaves too little to measure anything, and the benchmark carves its own
# validation split out of the training subset anyway. download_mb are archive sizes rounded up.
DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("cifar10", 10, 50_000, 10_000, 32, "cifar-10-batches-py", 163),
        DatasetInfo("cifar100", 100, 50_000, 10_000, 32, "cifar-100-python", 162),
        DatasetInfo("svhn", 10, 73_257, 26_032, 32, "svhn", 246),
        DatasetInfo("mnist", 10, 60_000, 10_000, 28, "MNIST/raw", 12),
        DatasetInfo("fashion_mnist", 10, 60_000, 10_000, 28, "FashionMNIST/raw", 31),
        DatasetInfo("stl10", 10, 5_000, 8_000, 96, "stl10_binary", 2_641),
        DatasetInfo("flowers102", 102, 2_040, 6_149, None, "flowers-102", 330),
        # Embedded in scikit-learn: 1,797 images split 75/25 (see harness.data.digits).
        DatasetInfo("digits", 10, 1_347, 450, 8, "(embedded in scikit-learn)", None),
    )
}


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
    """The registered dataset names, sorted; ``imagefolder:PATH`` is accepted in addition."""
    return sorted(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; unknown names raise ``ValueError`` with close matches."""
    if name in DATASETS:
        return DATASETS[name]
    raise ValueError(
        f"{unknown('dataset', name, dataset_names())}, "
        f"or '{IMAGEFOLDER_PREFIX}PATH' for a folder of images (PATH/<class>/*.png)"
    )


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
