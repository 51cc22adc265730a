"""Write small datasets in the real on-disk formats torchvision reads, for the data-layer tests.

Every writer returns the images it wrote as uint8 ``[N, 3 or 1, H, W]`` plus int64 labels per
split, so tests can compare what ``load_split`` returns pixel for pixel. Pixel values come from
a seeded ``numpy.random.Generator``, never from global state.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Written:
    """What a writer put on disk for one split: images ``[N, C, H, W]`` uint8 and labels."""

    images: np.ndarray
    labels: np.ndarray


def random_images(n: int, channels: int, height: int, width: int, seed: int) -> np.ndarray:
    """Deterministic uint8 noise images ``[n, channels, height, width]``."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, channels, height, width), dtype=np.uint8)


def balanced_labels(n: int, num_classes: int) -> np.ndarray:
    """Labels 0, 1, ..., K-1, 0, 1, ... of length ``n``."""
    return np.arange(n, dtype=np.int64) % num_classes


class _Py2Pickler(pickle._Pickler):  # type: ignore[misc]  # the pure-Python pickler has a dispatch table
    """Writes ``bytes`` as Python 2 ``str`` opcodes, as the official CIFAR pickles do.

    Loaded with ``encoding="latin1"`` (as torchvision does) these keys become ``str``; with
    ``encoding="bytes"`` they stay ``b"data"``; numpy's array payload follows the same rule.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(path: Path, obj: object) -> None:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def write_cifar10(root: Path, *, per_batch: int = 20, n_test: int = 30, seed: int = 0) -> dict[str, Written]:
    """``root/cifar-10-batches-py``: five training batches of ``per_batch``, one test batch, meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out: dict[str, list[Written]] = {"train": [], "test": []}
    names = [(f"data_batch_{i}", "train") for i in range(1, 6)] + [("test_batch", "test")]
    for i, (name, split) in enumerate(names):
        n = per_batch if split == "train" else n_test
        images = random_images(n, 3, 32, 32, seed + i)
        labels = (balanced_labels(n, 10) + i) % 10
        _py2_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels.tolist(), b"data": images.reshape(n, 3072), b"filenames": [f"{j}.png".encode() for j in range(n)]})
        out[split].append(Written(images, labels))
    _py2_pickle(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072})
    return {s: Written(np.concatenate([w.images for w in ws]), np.concatenate([w.labels for w in ws])) for s, ws in out.items()}


def write_cifar100(root: Path, *, n_train: int = 200, n_test: int = 100, seed: int = 10) -> dict[str, Written]:
    """``root/cifar-100-python``: ``train``, ``test`` and ``meta`` with 100 fine classes."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for i, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images = random_images(n, 3, 32, 32, seed + i)
        labels = balanced_labels(n, 100)[::-1].copy()
        _py2_pickle(folder / split, {b"filenames": [b"x.png"] * n, b"fine_labels": labels.tolist(), b"coarse_labels": (labels // 5).tolist(), b"data": images.reshape(n, 3072)})
        out[split] = Written(images, labels)
    _py2_pickle(folder / "meta", {b"fine_label_names": [f"class_{k:03d}".encode() for k in range(100)], b"coarse_label_names": [f"super_{k}".encode() for k in range(20)]})
    return out


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file: magic ``0x00000800 | ndim`` (unsigned bytes), big-endian dims, then data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_mnist(root: Path, *, folder: str = "MNIST", n_train: int = 40, n_test: int = 20, seed: int = 20) -> dict[str, Written]:
    """``root/<folder>/raw`` with the four extracted idx files (MNIST or FashionMNIST)."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = {}
    for i, (prefix, split, n) in enumerate((("train", "train", n_train), ("t10k", "test", n_test))):
        images = random_images(n, 1, 28, 28, seed + i)
        labels = balanced_labels(n, 10)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[:, 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8))
        out[split] = Written(images, labels)
    return out


def write_svhn(root: Path, *, n_train: int = 30, n_test: int = 20, seed: int = 30) -> dict[str, Written]:
    """``root/svhn/{train,test}_32x32.mat``: ``X`` is [32, 32, 3, N], ``y`` uses 10 for digit 0."""
    from scipy.io import savemat

    (root / "svhn").mkdir(parents=True)
    out = {}
    for i, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images = random_images(n, 3, 32, 32, seed + i)
        labels = balanced_labels(n, 10)
        stored = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(n, 1)
        savemat(root / "svhn" / f"{split}_32x32.mat", {"X": images.transpose(2, 3, 1, 0), "y": stored})
        out[split] = Written(images, labels)
    return out


def write_stl10(root: Path, *, n_train: int = 10, n_test: int = 10, seed: int = 40) -> dict[str, Written]:
    """``root/stl10_binary``: column-major 96x96 images, 1-based labels, ``class_names.txt``."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    out = {}
    for i, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images = random_images(n, 3, 96, 96, seed + i)
        labels = balanced_labels(n, 10)
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        out[split] = Written(images, labels)
    (folder / "class_names.txt").write_text("\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n")
    return out


def write_png(path: Path, image_chw: np.ndarray) -> None:
    """Save uint8 ``[C, H, W]`` (C = 1 or 3) losslessly as PNG (whatever ``path``'s suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    hwc = image_chw.transpose(1, 2, 0)
    Image.fromarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).save(path, format="PNG")


def write_flowers102(root: Path, *, per_part: int = 3, height: int = 32, width: int = 48, seed: int = 50) -> dict[str, Written]:
    """``root/flowers-102`` with ``jpg/image_#####.jpg`` (PNG-encoded, so lossless), labels and set ids.

    Training is the official ``trnid`` then ``valid`` ids; ``tstid`` is the test split.
    """
    from scipy.io import savemat

    folder = root / "flowers-102"
    n = 3 * per_part
    images = random_images(n, 3, height, width, seed)
    labels = (np.arange(n, dtype=np.int64) * 11) % 102
    for k in range(n):
        write_png(folder / "jpg" / f"image_{k + 1:05d}.jpg", images[k])
    ids = np.arange(1, n + 1)
    savemat(folder / "imagelabels.mat", {"labels": (labels + 1).reshape(1, n)})
    savemat(folder / "setid.mat", {"trnid": ids[:per_part].reshape(1, -1), "valid": ids[per_part : 2 * per_part].reshape(1, -1), "tstid": ids[2 * per_part :].reshape(1, -1)})
    return {"train": Written(images[: 2 * per_part], labels[: 2 * per_part]), "test": Written(images[2 * per_part :], labels[2 * per_part :])}


def write_imagefolder(base: Path, classes: tuple[str, ...], per_class: int, *, size: int = 32, seed: int = 60, channels: int = 3) -> Written:
    """``base/<class>/img_###.png``; returns images in ImageFolder's order (class, then file name)."""
    images = random_images(len(classes) * per_class, channels, size, size, seed)
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), per_class)
    for k, (image, label) in enumerate(zip(images, labels, strict=True)):
        write_png(base / classes[label] / f"img_{k:03d}.png", image)
    return Written(images, labels)


def write_digits_folder(base: Path, *, img_size: int = 32, limit: int | None = None) -> dict[str, Written]:
    """The embedded digits as an image folder ``base/{train,test}/<digit>/NNNN.png`` (grey 8-bit PNGs at
    ``img_size``, the suite's 75/25 split; the first ``limit`` images of each split when given) plus
    ``base/dataset.json`` saying ``hflip: false``, as ``scripts/digits_transfer.py`` writes its folders."""
    import json

    from harness.data.datasets import load_split

    out: dict[str, Written] = {}
    for split in ("train", "test"):
        data = load_split("digits", split, img_size=img_size)  # type: ignore[arg-type]
        images, labels = data.images[:limit].numpy(), data.labels[:limit].numpy()
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            write_png(base / split / str(label) / f"{i:04d}.png", image[:1])  # grey: the loader replicates it to RGB
        out[split] = Written(images, labels)
    (base / "dataset.json").write_text(json.dumps({"hflip": False}))
    return out
