"""Segmentation datasets: the in-memory split, the checks every form's masks pass, and how a form is read.

A segmentation dataset is named by its form and a path, ``voc:PATH``, ``ade:PATH`` or ``segfolder:PATH``
(:data:`harness.data.registry.SEG_FORMS`; one module per form: ``seg_voc``, ``seg_ade``, ``seg_folder``).
Every form is read into one :class:`SegSplit`: images ``uint8 [N, 3, S, S]`` and masks ``int64 [N, S, S]``
whose values are class indices ``0..C-1`` or :data:`IGNORE` (255, VOC's and DINOv2's ignore index),
whatever the form's own ignore value is. Images are resized bilinearly to the case's side, masks with
nearest neighbours (a resized mask must hold labels, not blends of them).

Bad files are refused with one line naming the file and the fix (:class:`DatasetCorrupt`): a mask with a
label outside the classes, an image and mask of different sizes, a VOC mask that is no palette PNG.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
import torch
import torch.nn.functional as F

from harness.data.errors import DatasetUnavailable, DatasetUnusable, corrupt
from harness.data.registry import SEG_FORMS, SegForm, seg_form

if TYPE_CHECKING:
    from PIL import Image as PILImage

# The one ignore index inside the suite (VOC's boundary value; DINOv2's and mmseg's cross-entropy default).
IGNORE = 255
SEG_SPLITS = ("train", "val")


@dataclass(frozen=True)
class SegSplit:
    """One split of a segmentation dataset: ``images`` uint8 ``[N, 3, S, S]``, ``masks`` int64 ``[N, S, S]``
    (class index or :data:`IGNORE`), the class names, and each image's file stem."""

    images: torch.Tensor
    masks: torch.Tensor
    classes: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.masks.dtype != torch.int64 or self.masks.shape != (self.images.shape[0], *self.images.shape[2:]):
            raise ValueError(f"masks must be int64 [N, H, W] matching the images, got {self.masks.dtype} {tuple(self.masks.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, indices: torch.Tensor) -> SegSplit:
        picked = torch.arange(len(self))[indices].reshape(-1).tolist()
        return SegSplit(self.images[indices], self.masks[indices], self.classes, tuple(self.names[i] for i in picked))


@dataclass(frozen=True)
class Pair:
    """One image file and its mask file."""

    image: Path
    mask: Path


class SegReader(Protocol):
    """What each form's module provides (its :class:`~harness.data.registry.SegForm` names it)."""

    def classes(self, root: Path) -> tuple[str, ...]:
        """The class names, in label order (ignore excluded)."""
        ...

    def pairs(self, root: Path, split: str) -> list[Pair]:
        """The image/mask files of ``split`` (``train`` or ``val``)."""
        ...

    def read_mask(self, path: Path, classes: int) -> np.ndarray:
        """The mask as ``int64 [H, W]`` of class indices or :data:`IGNORE`; ``DatasetCorrupt`` naming the fix otherwise."""
        ...


# The image files a folder-paired layout (ADE's, segfolder's) reads.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def folder_pairs(images: Path, masks: Path, dataset: str, what: str) -> list[Pair]:
    """Every image of ``images`` (sorted) with the mask of its stem in ``masks`` (``<stem>.png``); a missing
    mask is the dataset's corruption, named as ``what`` of the image (``"the annotation"``, ``"the mask"``)."""
    out = []
    for image in sorted(p for p in images.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if images.is_dir() else []:
        mask = masks / f"{image.stem}.png"
        if not mask.is_file():
            raise corrupt(dataset, mask, f"{what} of {image.name} is absent", fix=f"add it, or remove {image}")
        out.append(Pair(image, mask))
    return out


def reader(form: SegForm) -> SegReader:
    return cast(SegReader, importlib.import_module(form.module))


def resolve(name: str, data_root: Path | None) -> tuple[SegForm, Path]:
    """The form of ``name`` and its folder: an absolute path as given, a relative one under the data root."""
    from harness.data.registry import default_data_root

    form = seg_form(name)
    if form is None:
        raise ValueError(f"segmentation dataset {name!r}: name it as " + ", ".join(f"'{f.usage}'" for f in SEG_FORMS.values()))
    path = Path(name[len(form.prefix):]).expanduser()
    root = data_root.expanduser() if data_root is not None else default_data_root()
    return form, path if path.is_absolute() else root / path


def open_image(path: Path, dataset: str) -> PILImage.Image:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise corrupt(dataset, path, f"not a readable image ({exc})", fix=f"replace or remove {path}") from None
    return image


def check_labels(mask: np.ndarray, classes: Sequence[str], path: Path, dataset: str, where: str) -> None:
    """Every value of ``mask`` (already mapped: class index or IGNORE) names a class."""
    values = np.unique(mask)
    bad = [int(v) for v in values if v != IGNORE and not 0 <= v < len(classes)]
    if bad:
        raise corrupt(dataset, path, f"mask labels {bad[:5]} are outside the {len(classes)} classes {where}",
                      fix="fix the mask, or add the missing classes to the class list")


def check_pair(pair: Pair, reader_: SegReader, classes: Sequence[str], dataset: str) -> np.ndarray:
    """The pair's mask after every check (readable, same size as its image, labels in the classes)."""
    image = open_image(pair.image, dataset)
    mask = reader_.read_mask(pair.mask, len(classes))
    if mask.shape != (image.height, image.width):
        raise corrupt(dataset, pair.mask, f"mask is {mask.shape[1]}x{mask.shape[0]} px but its image {pair.image.name} is {image.width}x{image.height} px",
                      fix="write each mask at its image's size")
    return mask


def check_dataset(name: str, data_root: Path | None) -> None:
    """Read every image header and mask of both splits and apply the checks: what preflight runs
    before any case (``DatasetUnavailable``, ``DatasetCorrupt``, ``DatasetUnusable``)."""
    form, root = resolve(name, data_root)
    if not root.is_dir():
        raise DatasetUnavailable(f"segmentation dataset {name!r}: {root} is not a folder; expected {form.usage}", dataset=name, path=root)
    module = reader(form)
    classes = module.classes(root)
    for split in SEG_SPLITS:
        pairs = module.pairs(root, split)
        if not pairs:
            raise DatasetUnusable(f"segmentation dataset {name!r}: the {split} split has no images under {root}", dataset=name, path=root)
        for pair in pairs:
            check_pair(pair, module, classes, name)


def load_seg_split(name: str, split: str, *, img_size: int, data_root: Path | None) -> SegSplit:
    """``split`` of the segmentation dataset ``name`` at ``img_size`` px (images bilinear, masks nearest)."""
    if split not in SEG_SPLITS:
        raise ValueError(f"segmentation split {split!r}: use one of {', '.join(SEG_SPLITS)}")
    form, root = resolve(name, data_root)
    if not root.is_dir():
        raise DatasetUnavailable(f"segmentation dataset {name!r}: {root} is not a folder; expected {form.usage}", dataset=name, path=root)
    module = reader(form)
    classes = module.classes(root)
    pairs = module.pairs(root, split)
    if not pairs:
        raise DatasetUnusable(f"segmentation dataset {name!r}: the {split} split has no images under {root}", dataset=name, path=root)
    images, masks = [], []
    for pair in pairs:
        mask = check_pair(pair, module, classes, name)
        image = open_image(pair.image, name).convert("RGB")
        images.append(_resize_image(np.asarray(image), img_size))
        masks.append(_resize_mask(mask, img_size))
    return SegSplit(torch.stack(images), torch.stack(masks), tuple(classes), tuple(p.image.stem for p in pairs))


def _resize_image(array: np.ndarray, side: int) -> torch.Tensor:
    x = torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1)  # a copy: PIL's buffer is read-only
    if x.shape[1:] == (side, side):
        return x.contiguous()
    y = F.interpolate(x[None].float(), size=(side, side), mode="bilinear", align_corners=False, antialias=True)
    return y[0].round().clamp(0, 255).to(torch.uint8)


def _resize_mask(mask: np.ndarray, side: int) -> torch.Tensor:
    m = torch.from_numpy(mask.astype(np.int64))
    if m.shape == (side, side):
        return m
    return F.interpolate(m[None, None].float(), size=(side, side), mode="nearest-exact")[0, 0].to(torch.int64)


def listed(root: Path, files: Callable[[str], tuple[Path, Path]], stems: Sequence[str]) -> list[Pair]:
    """The pairs of ``stems`` through ``files`` (stem -> image, mask)."""
    return [Pair(*files(stem)) for stem in stems]
