"""A team's own images: ``imagefolder:PATH`` read with ``torchvision.datasets.ImageFolder``.

Layouts, checked in this order (``PATH`` relative paths are resolved against the data root):

* ``PATH/train/<class>/*`` plus ``PATH/test/<class>/*`` or ``PATH/val/<class>/*``: the given
  split. ``test`` wins when both exist, because ``val`` is then the team's tuning set and the
  benchmark reports held-out accuracy (it carves its own validation split from training data).
* ``PATH/train/<class>/*`` alone, or ``PATH/<class>/*``: a stratified 80/20 train/test split of
  those images, seeded with the constant ``HOLDOUT_SEED`` so it is identical on every machine.

Every image is decoded with PIL, converted to RGB and resized to ``img_size``. This module is the
form's reader (:class:`harness.data.registry.PathForm`): ``resolve``, ``check``, ``check_classes``,
``load`` and ``facts_dir``; ``folder_samples`` is what ``python -m harness data to-wds`` writes as shards.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

from harness.data.convert import decode_images
from harness.data.errors import DatasetCorrupt, DatasetUnavailable, DatasetUnusable, corrupt
from harness.data.registry import IMAGEFOLDER_PREFIX
from harness.data.shard_index import check_image_header
from harness.data.subsets import split_validation
from harness.data.types import TensorSplit
from harness.files import special_kind

# 80/20 is the usual hold-out share when a team supplies no test set.
HOLDOUT_FRACTION = 0.2
# Any fixed value works; it is a constant (not a run option) so the held-out images never
# change between machines or runs. Changing it invalidates every recorded imagefolder baseline.
HOLDOUT_SEED = 20_240_601


def resolve(path_text: str, root: Path) -> Path:
    """``~`` expanded; absolute paths kept; relative paths taken under the data root."""
    path = Path(path_text).expanduser()
    return path if path.is_absolute() else root / path


def check(path_text: str, root: Path, split: str = "train") -> Path:
    """The folder ``imagefolder:path_text`` names, or :class:`DatasetUnavailable` when it does not exist."""
    base = resolve(path_text, root)
    if not base.is_dir():
        raise DatasetUnavailable(
            f"dataset {IMAGEFOLDER_PREFIX + path_text!r} ({split} split): folder {base} does not exist (relative paths are taken "
            f"under the data root {root}). Fix: pass an absolute path after 'imagefolder:', or put the "
            "folder under the data root (--data-root PATH or BACKBONE_BENCH_DATA=PATH).",
            dataset=IMAGEFOLDER_PREFIX + path_text,
            path=base,
        )
    return base


def _has_image(folder: Path) -> bool:
    return any(p.suffix.lower() in IMG_EXTENSIONS and p.is_file() for p in folder.rglob("*"))


def check_classes(path_text: str, root: Path) -> None:
    """Refuse an image folder that cannot train a classifier (:class:`DatasetUnusable`): one with no
    image, or with images of one class only (every prediction would be right: top-1 100%).
    Reads directory entries, no image: a session calls it before any case runs. A folder or file this
    user may not read is named as such, not as missing."""
    name = f"{IMAGEFOLDER_PREFIX}{path_text}"
    try:
        _check_classes(name, path_text, root)
    except PermissionError as exc:
        where = exc.filename or resolve(path_text, root)
        raise DatasetUnusable(f"dataset {name!r}: cannot read {where} (permission denied). Fix: give this user read access to the "
                              "folder and its images (chmod -R u+rX), or copy them somewhere readable.", dataset=name, path=Path(where)) from None


def _check_classes(name: str, path_text: str, root: Path) -> None:
    base = check(path_text, root)
    folder = base / "train" if (base / "train").is_dir() else base
    # As torchvision's ImageFolder: every sub-folder is a class; here only those holding an image count.
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and _has_image(d))
    layout = f"{folder}/<class name>/<image> with extensions {', '.join(IMG_EXTENSIONS)}"
    if not classes and not _has_image(folder):
        raise DatasetUnusable(f"dataset {name!r}: {folder} is empty: it holds no image. Fix: put images of each class in {layout}.",
                              dataset=name, path=folder)
    if len(classes) == 1:
        raise DatasetUnusable(f"dataset {name!r}: {folder} holds one class ({classes[0]}); a classifier needs at least 2 classes. "
                              f"Fix: add a folder of images per class, {layout}.", dataset=name, path=folder)
    eval_dir = next((d for d in (base / "test", base / "val") if d.is_dir()), None) if folder != base else None
    if eval_dir is not None:
        held = sorted(d.name for d in eval_dir.iterdir() if d.is_dir() and _has_image(d))
        if held != classes:
            missing, extra = sorted(set(classes) - set(held)), sorted(set(held) - set(classes))
            raise DatasetCorrupt(f"dataset {name!r}: {eval_dir} and {folder} hold different classes (missing from {eval_dir.name}: "
                                 f"{missing[:10]}, only in {eval_dir.name}: {extra[:10]}). Fix: give both the same class folders.",
                                 dataset=name, path=eval_dir)
    for split_dir in (folder, *([eval_dir] if eval_dir is not None else [])):
        _check_files(name, split_dir)


def _check_files(name: str, folder: Path) -> None:
    """Refuse, before any case decodes one, an image-named entry that is no regular file (a FIFO or a
    device would hang the read, a broken link fail it), and an image PIL cannot identify or that is over
    its decompression limit. Opens each image's header only."""
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMG_EXTENSIONS or path.is_dir():
            continue
        if not path.is_file():  # stat follows links: a link to an image is one
            raise DatasetUnusable(f"dataset {name!r}: {path} is {special_kind(path)}, not an image file. Fix: replace it with the image "
                                  "file or remove it.", dataset=name, path=path)
        check_image_header(name, path, None, path, fix=f"delete or replace {path}")


def _scan(name: str, folder: Path) -> ImageFolder:
    try:
        return ImageFolder(str(folder))
    except FileNotFoundError as exc:  # no class sub-folders, or a class folder with no images
        raise corrupt(
            name,
            folder,
            f"not an image-folder layout ({exc})",
            fix=f"put images in {folder}/<class name>/<image> with extensions {', '.join(IMG_EXTENSIONS)}",
        ) from exc


def facts_dir(resolved: Path) -> Path:
    """Where the folder's ``dataset.json`` is: the folder itself."""
    return resolved


def folder_samples(path_text: str, split: str, root: Path) -> tuple[list[tuple[Path, int]], tuple[str, ...]]:
    """The ``(image file, label)`` pairs of ``split`` in the order :func:`load` stacks them, and the class names."""
    name = f"{IMAGEFOLDER_PREFIX}{path_text}"
    base = check(path_text, root, split)
    check_classes(path_text, root)
    train_dir = base / "train"
    eval_dir = next((d for d in (base / "test", base / "val") if d.is_dir()), None)
    if eval_dir is not None and not train_dir.is_dir():
        raise DatasetCorrupt(
            f"dataset {name!r}: found {eval_dir} but no {train_dir}. Fix: add {train_dir}/<class>/..., "
            f"or move the class folders directly under {base} to use a held-out split.",
            dataset=name,
            path=train_dir,
        )
    if eval_dir is not None:
        train = _scan(name, train_dir)
        chosen = train if split == "train" else _scan(name, eval_dir)
        if chosen.classes != train.classes:
            missing, extra = sorted(set(train.classes) - set(chosen.classes)), sorted(set(chosen.classes) - set(train.classes))
            raise DatasetCorrupt(
                f"dataset {name!r}: {eval_dir} and {train_dir} hold different classes (missing from "
                f"{eval_dir.name}: {missing}, only in {eval_dir.name}: {extra}). Fix: give both the same class folders.",
                dataset=name,
                path=eval_dir,
            )
        samples = chosen.samples
    else:
        chosen = _scan(name, train_dir if train_dir.is_dir() else base)
        all_labels = torch.tensor(chosen.targets, dtype=torch.int64)
        keep_train, keep_test = split_validation(
            torch.arange(len(all_labels)), all_labels, fraction=HOLDOUT_FRACTION, seed=HOLDOUT_SEED
        )
        samples = [chosen.samples[i] for i in (keep_train if split == "train" else keep_test).tolist()]
    return [(Path(p), label) for p, label in samples], tuple(chosen.classes)


def load(path_text: str, split: str, root: Path, *, img_size: int) -> TensorSplit:
    """Load ``split`` of the image folder ``path_text`` (see the module docstring for layouts)."""
    name = f"{IMAGEFOLDER_PREFIX}{path_text}"
    samples, classes = folder_samples(path_text, split, root)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    images = decode_images(
        [p for p, _ in samples],
        img_size,
        on_error=lambda p, e: corrupt(name, p, f"unreadable image ({type(e).__name__}: {e})", fix=f"delete or replace {p}"),
    )
    return TensorSplit(images, labels, classes)
