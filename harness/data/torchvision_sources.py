"""Loaders for the datasets torchvision knows, through torchvision's real dataset classes.

Each loader checks the files its split reads (``harness.data.checks``), then builds the real
torchvision class and converts its arrays to a :class:`TensorSplit` at ``img_size``.

Why the ``_Local*`` subclasses: torchvision's ``_check_integrity``/``_check_exists`` insist on
*every* split's files and on their md5s, and answer only "not found or corrupted". The
subclasses override exactly that one method (and CIFAR's metadata md5, checked in
``_load_meta``) to return "present", because ``require_files`` has already checked the
requested split's files, with their official md5s taken from the same torchvision class
attributes, and raised a precise error. ``verify=False`` skips the md5 comparison (the
test-suite's generated files, or a re-packed copy); parsing errors are still caught.
Downloads always go through the unmodified torchvision class, which checks md5s itself.
"""

from __future__ import annotations

import os
import pickle
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets as tvd

from harness.data.checks import check_idx, check_labels, construct, download, require_files
from harness.data.convert import decode_images, from_nhwc, resize_square, to_rgb
from harness.data.errors import corrupt
from harness.data.registry import DatasetInfo
from harness.data.types import TensorSplit

# idx magic numbers: 0x00000803 = unsigned bytes, 3 dims (images); 0x00000801 = 1 dim (labels).
_IDX_IMAGES, _IDX_LABELS = 0x0803, 0x0801
# STL-10 stores 96x96 RGB images column-major as raw bytes.
_STL_IMAGE_BYTES = 3 * 96 * 96


class _LocalCIFAR10(tvd.CIFAR10):  # type: ignore[misc]  # torchvision ships no py.typed: its classes are Any
    meta = {**tvd.CIFAR10.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return True


class _LocalCIFAR100(tvd.CIFAR100):  # type: ignore[misc]  # torchvision ships no py.typed: its classes are Any
    meta = {**tvd.CIFAR100.meta, "md5": None}

    def _check_integrity(self) -> bool:
        return True


def _local_idx(real: type[tvd.MNIST]) -> type[tvd.MNIST]:
    """``real`` (MNIST or Fashion-MNIST) reading files we checked ourselves.

    torchvision derives the folder from the class name; keep the real class's folder.
    """

    class Local(real):  # type: ignore[misc]  # torchvision ships no py.typed: its classes are Any
        def _check_exists(self) -> bool:
            return True

        @property
        def raw_folder(self) -> str:
            return os.path.join(self.root, real.__name__, "raw")

        @property
        def processed_folder(self) -> str:
            return os.path.join(self.root, real.__name__, "processed")

    return Local


_LocalMNIST = _local_idx(tvd.MNIST)
_LocalFashionMNIST = _local_idx(tvd.FashionMNIST)


class _LocalSVHN(tvd.SVHN):  # type: ignore[misc]  # torchvision ships no py.typed: its classes are Any
    def _check_integrity(self) -> bool:
        return True


class _LocalSTL10(tvd.STL10):  # type: ignore[misc]  # torchvision ships no py.typed: its classes are Any
    def _check_integrity(self) -> bool:
        return True


def _finish(info: DatasetInfo, images: torch.Tensor, labels: torch.Tensor, classes: list[str], where: Path, img_size: int) -> TensorSplit:
    labels = labels.to(torch.int64)
    check_labels(info, images, labels, classes, where)
    return TensorSplit(resize_square(to_rgb(images), img_size), labels.contiguous(), tuple(classes))


def _probe_pickle(path: Path) -> None:
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    if not isinstance(entry, dict):
        raise ValueError(f"expected a pickled dict, got {type(entry).__name__}")
    if "data" in entry:
        labels = entry.get("labels", entry.get("fine_labels"))
        if labels is None:
            raise KeyError("no 'labels' or 'fine_labels' entry")
        data = np.asarray(entry["data"])
        if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
            raise ValueError(f"data {data.shape} and {len(labels)} labels; expected [N, 3072] and N labels")


def load_cifar(info: DatasetInfo, split: str, root: Path, *, img_size: int, download_: bool, verify: bool) -> TensorSplit:
    """CIFAR-10 / CIFAR-100 from ``root/cifar-10-batches-py`` or ``root/cifar-100-python``."""
    real, local = (tvd.CIFAR10, _LocalCIFAR10) if info.name == "cifar10" else (tvd.CIFAR100, _LocalCIFAR100)
    train = split == "train"
    if download_:
        download(info, root, lambda: real(str(root), train=train, download=True))
    folder = root / real.base_folder
    listed = [*(real.train_list if train else real.test_list), [real.meta["filename"], real.meta["md5"]]]
    files = [(folder / name, md5) for name, md5 in listed]
    require_files(info, split, root, files, verify=verify)
    ds = construct(info, [p for p, _ in files], _probe_pickle, lambda: local(str(root), train=train))
    return _finish(info, from_nhwc(ds.data), torch.as_tensor(ds.targets), list(ds.classes), folder, img_size)


def load_mnist(info: DatasetInfo, split: str, root: Path, *, img_size: int, download_: bool, verify: bool) -> TensorSplit:
    """MNIST / Fashion-MNIST from the extracted idx files in ``root/MNIST/raw`` or ``root/FashionMNIST/raw``."""
    real, local = (tvd.MNIST, _LocalMNIST) if info.name == "mnist" else (tvd.FashionMNIST, _LocalFashionMNIST)
    train = split == "train"
    if download_:
        download(info, root, lambda: real(str(root), train=train, download=True))
    raw = root / real.__name__ / "raw"
    prefix = "train" if train else "t10k"
    image_file, label_file = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
    # torchvision publishes md5s only for the .gz archives, so the idx headers are the check.
    require_files(info, split, root, [(image_file, None), (label_file, None)], verify=verify)
    n_images = check_idx(info, image_file, magic=_IDX_IMAGES, ndim=3)
    if (n_labels := check_idx(info, label_file, magic=_IDX_LABELS, ndim=1)) != n_images:
        raise corrupt(info.name, label_file, f"{n_labels} labels but {image_file.name} holds {n_images} images")
    ds = construct(info, [image_file, label_file], lambda p: None, lambda: local(str(root), train=train))
    return _finish(info, ds.data.unsqueeze(1), ds.targets, list(real.classes), raw, img_size)


def _probe_mat(path: Path) -> None:
    from scipy.io import loadmat

    loadmat(path)


def load_svhn(info: DatasetInfo, split: str, root: Path, *, img_size: int, download_: bool, verify: bool) -> TensorSplit:
    """SVHN (cropped digits) from ``root/svhn/{train,test}_32x32.mat``; label 10 means digit 0."""
    from scipy.io.matlab import MatReadError

    folder = root / "svhn"  # torchvision puts the .mat files directly in its root; keep them apart
    if download_:
        download(info, root, lambda: tvd.SVHN(str(folder), split=split, download=True))
    _, filename, md5 = tvd.SVHN.split_list[split]
    require_files(info, split, root, [(folder / filename, md5)], verify=verify)
    try:
        ds = construct(info, [folder / filename], _probe_mat, lambda: _LocalSVHN(str(folder), split=split))
    except MatReadError as exc:  # scipy's own parse error is not one of the generic ones
        raise corrupt(info.name, folder / filename, f"MatReadError: {exc}") from exc
    classes = [str(d) for d in range(10)]
    return _finish(info, torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels), classes, folder, img_size)


def load_stl10(info: DatasetInfo, split: str, root: Path, *, img_size: int, download_: bool, verify: bool) -> TensorSplit:
    """STL-10 labelled splits from ``root/stl10_binary`` (the 100k unlabelled images are not read)."""
    if download_:
        download(info, root, lambda: tvd.STL10(str(root), split=split, download=True))
    folder = root / tvd.STL10.base_folder
    listed = tvd.STL10.train_list[:2] if split == "train" else tvd.STL10.test_list
    files = [(folder / name, md5) for name, md5 in listed] + [(folder / tvd.STL10.class_names_file, None)]
    require_files(info, split, root, files, verify=verify)
    (x_file, _), (y_file, _) = files[0], files[1]
    n_images, rest = divmod(x_file.stat().st_size, _STL_IMAGE_BYTES)
    if rest:
        raise corrupt(info.name, x_file, f"size is not a whole number of {_STL_IMAGE_BYTES}-byte images (truncated?)")
    if y_file.stat().st_size != n_images:
        raise corrupt(info.name, y_file, f"{y_file.stat().st_size} labels for {n_images} images in {x_file.name}")
    ds = construct(info, [x_file, y_file], lambda p: None, lambda: _LocalSTL10(str(root), split=split))
    images = torch.from_numpy(np.ascontiguousarray(ds.data))
    return _finish(info, images, torch.from_numpy(ds.labels.astype(np.int64)), list(ds.classes), folder, img_size)


class _LocalFlowers102(tvd.Flowers102):  # type: ignore[misc]  # torchvision ships no py.typed: its classes are Any
    def _check_integrity(self) -> bool:
        return True


def load_flowers102(info: DatasetInfo, split: str, root: Path, *, img_size: int, download_: bool, verify: bool) -> TensorSplit:
    """Oxford Flowers-102 from ``root/flowers-102``: "train" is the official train+val (2,040), "test" 6,149.

    The JPEGs vary in size; each is resized (shorter side) and centre-cropped to ``img_size``.
    """
    if download_:
        download(info, root, lambda: tvd.Flowers102(str(root), split="test", download=True))
    folder = root / "flowers-102"
    mats = [(folder / name, md5) for key, (name, md5) in tvd.Flowers102._file_dict.items() if key != "image"]
    require_files(info, split, root, [(folder / "jpg", None), *mats], verify=verify)
    paths: list[Path] = []
    labels: list[int] = []
    for part in ("train", "val") if split == "train" else ("test",):
        ds = construct(info, [p for p, _ in mats], _probe_mat, partial(_LocalFlowers102, str(root), split=part))
        # torchvision keeps the file list private; these two lists are its whole state.
        paths.extend(Path(p) for p in ds._image_files)
        labels.extend(int(y) for y in ds._labels)
    images = decode_images(paths, img_size, on_error=lambda p, e: corrupt(info.name, p, f"{type(e).__name__}: {e}", fix=f"delete {folder} and download it again (pass --download)"))
    return _finish(info, images, torch.tensor(labels, dtype=torch.int64), list(tvd.Flowers102.classes), folder, img_size)
