"""The embedded offline dataset ``digits``: scikit-learn's 1,797 real 8x8 handwritten digits.

It needs no download, so every machine (CI included) can run real training end to end. There
is no official split; a stratified 75/25 split with ``random_state=0`` gives 1,347 train and
450 test images.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from harness.data.convert import resize_square, to_rgb
from harness.data.registry import DatasetInfo
from harness.data.types import TensorSplit

# sklearn's pixel values are ink counts 0..16 (4x4 blocks of a 32x32 bitmap).
_MAX_VALUE = 16
# 25% test is train_test_split's default share; with random_state=0 it is the split everyone
# using sklearn's digits gets.
_TEST_SIZE, _SPLIT_SEED = 0.25, 0
CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))


@lru_cache(maxsize=1)
def _native() -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    values = np.asarray(bunch.images, dtype=np.float64)
    # uint8 = round(value * 255 / 16); no value lands on .5 except 8 (127.5 -> 128 either way).
    images = torch.from_numpy(np.round(values * 255 / _MAX_VALUE).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)), test_size=_TEST_SIZE, stratify=bunch.target, random_state=_SPLIT_SEED
    )
    return images, labels, np.sort(train_idx), np.sort(test_idx)


def load_digits_split(split: str, *, img_size: int) -> TensorSplit:
    """``split`` ("train"/"test") of digits as uint8 RGB ``[N, 3, img_size, img_size]``.

    Images are upscaled with bilinear ``interpolate`` (``align_corners=False``, no antialias
    when enlarging) on float, then rounded and clamped back to uint8.
    """
    images, labels, train_idx, test_idx = _native()
    idx = torch.from_numpy(train_idx if split == "train" else test_idx)
    return TensorSplit(resize_square(to_rgb(images[idx]), img_size), labels[idx].contiguous(), CLASSES)


def load(info: DatasetInfo, split: str, root: Path, *, img_size: int, download_: bool, verify: bool) -> TensorSplit:
    """The registry's loader (:attr:`harness.data.registry.DatasetInfo.loader`): embedded, so the root,
    download and checksums play no part."""
    return load_digits_split(split, img_size=img_size)
