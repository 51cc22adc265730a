"""The Pascal VOC segmentation layout: ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (palette PNGs
whose indices are the labels, 255 the boundary to ignore), ``ImageSets/Segmentation/{train,val}.txt``.

Classes: VOC's 21 (background + 20) unless the folder holds a ``classes.txt`` (one name a line, label
order), as teams relabelling VOC-style data do. A mask must be a palette ("P" mode) PNG: an RGB render
of the palette would read as colours, not labels, so it is refused naming the conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.data.errors import corrupt
from harness.data.segmentation import IGNORE, IMAGE_SUFFIXES, Pair, check_labels, open_image

DATASET = "voc"
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
_SPLIT_FILES = {"train": "train.txt", "val": "val.txt"}


def classes(root: Path) -> tuple[str, ...]:
    listed = root / "classes.txt"
    if listed.is_file():
        return tuple(line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip())
    return VOC_CLASSES


def pairs(root: Path, split: str) -> list[Pair]:
    index = root / "ImageSets" / "Segmentation" / _SPLIT_FILES[split]
    if not index.is_file():
        raise corrupt(f"voc:{root}", index, "the split list is missing", fix=f"write {index} with one image id a line")
    out = []
    for stem in (line.strip() for line in index.read_text(encoding="utf-8").splitlines()):
        if not stem:
            continue
        image = next((p for p in (root / "JPEGImages" / f"{stem}{ext}" for ext in IMAGE_SUFFIXES) if p.is_file()), None)
        mask = root / "SegmentationClass" / f"{stem}.png"
        if image is None:
            raise corrupt(f"voc:{root}", root / "JPEGImages" / f"{stem}.jpg", f"listed in {index.name} but absent", fix=f"add the image or drop {stem} from {index}")
        if not mask.is_file():
            raise corrupt(f"voc:{root}", mask, f"listed in {index.name} but absent", fix=f"add the mask or drop {stem} from {index}")
        out.append(Pair(image, mask))
    return out


def read_mask(path: Path, num_classes: int) -> np.ndarray:
    image = open_image(path, DATASET)
    if image.mode != "P" or image.getpalette() is None:
        raise corrupt(f"voc:{path.parents[1]}", path, f"a VOC mask must be a palette PNG (mode P) whose indices are the labels, got mode {image.mode}",
                      fix="save it with its palette (PIL: Image.fromarray(labels, 'P') + putpalette), or use segfolder: for plain index PNGs")
    mask = np.asarray(image, dtype=np.int64)
    check_labels(mask, [str(i) for i in range(num_classes)], path, f"voc:{path.parents[1]}", f"(classes.txt or VOC's 21; {IGNORE} = ignore)")
    return mask
