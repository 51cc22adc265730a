"""The ADE20K (SceneParsing) layout: ``images/{training,validation}/<id>.jpg`` and
``annotations/{training,validation}/<id>.png``, single-channel index PNGs where 0 is "other" (ignored,
as ADE's official evaluation does) and 1..C the classes.

Classes: ``objectInfo150.csv``'s names when present (its ``Name`` column, ADE's release file), else
``classes.txt`` (one a line), else ``class_1..class_C`` with C read off the largest label of the masks.
Labels are shifted down by one inside the suite (0 becomes the ignore index 255).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from harness.data.errors import corrupt
from harness.data.segmentation import IGNORE, Pair, folder_pairs, open_image

_SPLIT_DIRS = {"train": "training", "val": "validation"}


def classes(root: Path) -> tuple[str, ...]:
    info = root / "objectInfo150.csv"
    if info.is_file():
        with info.open(encoding="utf-8") as handle:
            return tuple(row["Name"].split(";")[0] for row in csv.DictReader(handle))
    listed = root / "classes.txt"
    if listed.is_file():
        return tuple(line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip())
    raise corrupt(f"ade:{root}", listed, "no class list (objectInfo150.csv or classes.txt)",
                  fix=f"write {listed} with one class name a line, label 1 first (0 is 'other')")


def pairs(root: Path, split: str) -> list[Pair]:
    return folder_pairs(root / "images" / _SPLIT_DIRS[split], root / "annotations" / _SPLIT_DIRS[split], f"ade:{root}", "the annotation")


def read_mask(path: Path, num_classes: int) -> np.ndarray:
    image = open_image(path, "ade")
    if image.mode not in ("L", "P", "I", "I;16"):
        raise corrupt(f"ade:{path.parents[2]}", path, f"an ADE annotation is a single-channel index PNG, got mode {image.mode}",
                      fix="write the labels as an 8-bit (mode L) PNG, 0 = other")
    raw = np.asarray(image, dtype=np.int64)
    mask = np.where(raw == 0, IGNORE, raw - 1)
    bad = np.unique(raw[raw > num_classes])
    if bad.size:
        raise corrupt(f"ade:{path.parents[2]}", path, f"mask labels {bad[:5].tolist()} are outside the {num_classes} classes (labels 1..{num_classes}; 0 = other)",
                      fix="fix the mask, or list the missing classes in classes.txt / objectInfo150.csv")
    return mask
