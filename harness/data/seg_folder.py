"""A plain segmentation folder: ``{train,val}/images/<name>.<ext>``, ``{train,val}/masks/<name>.png``
(single-channel index PNGs) and ``dataset.json``::

    {"classes": ["floor", "wall", "box"], "ignore_index": 255}

``ignore_index`` (optional, default 255) is mapped to the suite's 255; every other value must be a class.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.data.errors import corrupt
from harness.data.segmentation import IGNORE, Pair, check_labels, folder_pairs, open_image


def _spec(root: Path) -> dict[str, object]:
    path = root / "dataset.json"
    fix = f'write {path} as {{"classes": ["a", "b"], "ignore_index": 255}}'
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise corrupt(f"segfolder:{root}", path, "it is missing", fix=fix) from None
    except json.JSONDecodeError as exc:
        raise corrupt(f"segfolder:{root}", path, f"not JSON ({exc})", fix=fix) from None
    names = spec.get("classes") if isinstance(spec, dict) else None
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise corrupt(f"segfolder:{root}", path, "'classes' must list at least two class names", fix=fix)
    if not isinstance(spec.get("ignore_index", IGNORE), int):
        raise corrupt(f"segfolder:{root}", path, "'ignore_index' must be an integer", fix=fix)
    return dict(spec)


def classes(root: Path) -> tuple[str, ...]:
    return tuple(str(n) for n in _spec(root)["classes"])  # type: ignore[attr-defined]


def pairs(root: Path, split: str) -> list[Pair]:
    return folder_pairs(root / split / "images", root / split / "masks", f"segfolder:{root}", "the mask")


def read_mask(path: Path, num_classes: int) -> np.ndarray:
    root = path.parents[2]
    ignore = int(_spec(root).get("ignore_index", IGNORE))  # type: ignore[call-overload]
    image = open_image(path, "segfolder")
    if image.mode not in ("L", "P", "I", "I;16"):
        raise corrupt(f"segfolder:{root}", path, f"a mask is a single-channel index PNG, got mode {image.mode}", fix="write the labels as a mode L PNG")
    raw = np.asarray(image, dtype=np.int64)
    mask = np.where(raw == ignore, IGNORE, raw)
    check_labels(mask, [str(i) for i in range(num_classes)], path, f"segfolder:{root}", "(dataset.json 'classes')")
    return mask
