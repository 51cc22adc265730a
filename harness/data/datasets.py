"""``load_split``: any known dataset split as an in-memory uint8 :class:`TensorSplit`.

Every split comes back as RGB uint8 ``[N, 3, img_size, img_size]`` (grey replicated, resized
once here), int64 labels and the class names. Results are cached per process, keyed by
``(name, split, data root, img_size, verify_checksums)``; treat the returned tensors as
read-only, since later callers receive the same objects.

On-disk layout under the data root (``--data-root``, else ``$BACKBONE_BENCH_DATA``, else
``~/.cache/backbone-bench/data``), exactly where torchvision's classes look (``--download``
creates it):

=================  ============================================================================
name               files read (relative to the data root)
=================  ============================================================================
cifar10            ``cifar-10-batches-py/data_batch_1..5`` (train), ``test_batch``, ``batches.meta``
cifar100           ``cifar-100-python/train``, ``test``, ``meta``
svhn               ``svhn/train_32x32.mat``, ``svhn/test_32x32.mat`` (torchvision's root is ``svhn/``)
mnist              ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (extracted, no .gz)
fashion_mnist      ``FashionMNIST/raw/`` with the same four idx file names
stl10              ``stl10_binary/{train,test}_{X,y}.bin``, ``class_names.txt`` (unlabelled file unused)
flowers102         ``flowers-102/jpg/image_*.jpg``, ``imagelabels.mat``, ``setid.mat``
digits             none: scikit-learn's embedded copy
imagefolder:PATH   ``PATH/{train,test|val}/<class>/*`` or ``PATH/<class>/*`` (see ``imagefolder``)
wds:PATTERN        WebDataset shards ``PATTERN`` (train) and their test sibling (see ``shards``)
=================  ============================================================================

Files with an official md5 in torchvision are checked against it unless
``verify_checksums=False``; a missing file raises :class:`DatasetUnavailable`, an unreadable
one :class:`DatasetCorrupt`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Literal, Protocol, cast

from harness.data.convert import check_img_size
from harness.data.errors import DatasetCorrupt, DatasetError, DatasetUnavailable, unavailable
from harness.data.registry import (
    DATASETS,
    DatasetInfo,
    PathForm,
    check_split,
    dataset_info,
    dataset_names,
    default_data_root,
    path_form,
)
from harness.data.types import TensorSplit

__all__ = [
    "DATASETS",
    "DatasetCorrupt",
    "DatasetError",
    "DatasetInfo",
    "DatasetUnavailable",
    "check_available",
    "clear_cache",
    "dataset_names",
    "dataset_source",
    "default_data_root",
    "load_split",
    "reader",
]

_CacheKey = tuple[str, str, str, int, bool]
_CACHE: dict[_CacheKey, TensorSplit] = {}


def clear_cache() -> None:
    """Forget every cached split (frees their memory once no caller holds them)."""
    _CACHE.clear()


class FormReader(Protocol):
    """What the module of a path form (:class:`harness.data.registry.PathForm`) provides; modules satisfy protocols for mypy."""

    def resolve(self, path_text: str, root: Path) -> Path: ...

    def check(self, path_text: str, root: Path) -> Path: ...

    def check_classes(self, path_text: str, root: Path) -> None: ...

    def load(self, path_text: str, split: str, root: Path, *, img_size: int) -> TensorSplit: ...

    def facts_dir(self, resolved: Path) -> Path: ...


def reader(form: PathForm) -> FormReader:
    """The module that reads ``form`` (imported now: naming a dataset imports nothing)."""
    return cast(FormReader, importlib.import_module(form.module))


def _base(root: Path | None) -> Path:
    return Path(root).expanduser() if root is not None else default_data_root()


def dataset_source(name: str, root: Path | None = None) -> str:
    """What ``name`` reads: a registered name as it is, a path form (``imagefolder:PATH``, ``wds:PATTERN``)
    with its path resolved (a relative PATH is under ``root``, default ``default_data_root()``), so two
    spellings of one folder or one shard set are one source."""
    form = path_form(name)
    if form is None:
        return name
    path_text = name[len(form.prefix) :]
    if not path_text:
        raise ValueError(f"{name!r} names no path; write {form.usage}")
    return form.prefix + str(reader(form).resolve(path_text, _base(root)).resolve())


def check_available(name: str, root: Path | None = None) -> None:
    """Raise :class:`DatasetUnavailable` when dataset ``name`` is not on this machine: its folder
    under the data root (or the image folder, or the shards a pattern names) does not exist. Cheap,
    reads no file: a session checks every dataset it was given before any case runs; the files
    themselves are checked when a case loads them."""
    base, form = _base(root), path_form(name)
    if form is not None:
        reader(form).check(name[len(form.prefix) :], base)
        return
    info = dataset_info(name)
    if info.download_mb is not None and not (base / info.layout).is_dir():  # download_mb None: embedded
        raise unavailable(name, "train", base / info.layout, root=base, layout=info.layout, download_mb=info.download_mb)


# An image folder (or the folder of a shard set) states what its images are in dataset.json, e.g. {"hflip": false} for glyphs.
FOLDER_FACTS = "dataset.json"


def hflip_of(name: str, root: Path | None = None) -> bool:
    """Whether training may mirror images of dataset ``name``: its registry row's ``hflip`` (not for
    glyphs), and for an image folder or shard set what its ``dataset.json`` says (default: yes).

    Raises ``ValueError`` for a ``dataset.json`` that is not a JSON object with a boolean ``hflip``.
    """
    form = path_form(name)
    if form is None:
        return dataset_info(name).hflip
    facts = reader(form).facts_dir(Path(dataset_source(name, root)[len(form.prefix) :])) / FOLDER_FACTS
    if not facts.is_file():
        return True
    try:
        value = json.loads(facts.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{facts}: not readable JSON ({exc}); write e.g. {{\"hflip\": false}}") from None
    if not isinstance(value, dict) or not isinstance(value.get("hflip", True), bool):
        raise ValueError(f"{facts}: expected an object whose 'hflip' is true or false, got {value!r}")
    return bool(value.get("hflip", True))


def load_split(
    name: str,
    split: Literal["train", "test"],
    *,
    root: Path | None = None,
    download: bool = False,
    img_size: int = 32,  # CIFAR's native size, the common resolution of the small-data regime
    verify_checksums: bool = True,
) -> TensorSplit:
    """Load ``split`` of dataset ``name`` as uint8 RGB at ``img_size`` x ``img_size``.

    ``name`` is a registered name (``dataset_names()``), ``imagefolder:PATH`` or ``wds:PATTERN``. ``root``
    defaults to ``default_data_root()``. ``download=True`` fetches a missing torchvision
    dataset first. Raises ``ValueError`` for an unknown name/split or bad ``img_size``,
    :class:`DatasetUnavailable` when the files are absent, :class:`DatasetCorrupt` when they
    cannot be read.
    """
    split = check_split(split)  # type: ignore[assignment]
    check_img_size(img_size)
    base = _base(root)
    source, form = dataset_source(name, base), path_form(name)
    # A path form's source is its resolved path; a registered dataset's files are under the data root.
    key: _CacheKey = (source, split, source if form is not None else str(base.resolve()), img_size, verify_checksums)
    if key in _CACHE:
        return _CACHE[key]
    if form is not None:
        result = reader(form).load(name[len(form.prefix) :], split, base, img_size=img_size)
    else:
        result = dataset_info(name).load(split, base, img_size=img_size, download=download, verify=verify_checksums)
    _CACHE[key] = result
    return result
