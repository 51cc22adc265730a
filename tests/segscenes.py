"""Segmentation scenes composed of real objects on textured backgrounds, with exact masks, written in the
three layouts the dense kind reads (VOC, ADE20K, a plain image + mask folder).

Objects are real images: Fashion-MNIST garments (``fashion_objects``, from the idx files) or scikit-learn's
digits (``digit_objects``, embedded). Each scene is a ``side`` px RGB background (two-colour stripes at a
random angle plus low-frequency noise) with 1-3 objects pasted at random places, tinted a random colour.
A pixel is an object's where its grey value is above :data:`SOLID` (of 255); between :data:`EDGE` and
:data:`SOLID` it is the object's soft edge, labelled ignore (VOC's 255 boundary; ADE's 0); else background.
Everything comes from a seeded ``numpy.random.Generator``: the same seed writes the same files.

``python scripts/make_seg_scenes.py --out DIR`` writes ``DIR/voc``, ``DIR/ade`` and ``DIR/folder``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SOLID, EDGE = 96, 32  # grey levels of an object's solid body and of its soft edge (ignored)
IGNORE = 255
FASHION_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
# Four garments of clearly different shapes: the scenes' classes after "background".
SCENE_CLASSES = (0, 1, 7, 8)
# VOC's palette for the first labels (background black, then the colour-map bit pattern), 255 white-ish.
def voc_palette() -> list[int]:
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


@dataclass(frozen=True)
class Scenes:
    """``images`` uint8 ``[N, S, S, 3]``, ``masks`` uint8 ``[N, S, S]`` (0 background, 1..K objects, 255 edge)."""

    images: np.ndarray
    masks: np.ndarray
    classes: tuple[str, ...]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_objects(folder: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST ``(images [N, 28, 28] uint8, labels [N])`` from the idx files in ``folder``."""
    prefix = "train" if split == "train" else "t10k"
    return read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)


def digit_objects() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(images [N, 24, 24] uint8, labels)`` (8 px scaled x3, nearest)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255.0 / 16.0)).round().astype(np.uint8)
    return np.repeat(np.repeat(images, 3, axis=1), 3, axis=2), d.target.astype(np.int64)


def background(rng: np.random.Generator, side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64)
    angle, period = rng.uniform(0, np.pi), rng.uniform(6, 20)
    stripes = (np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period) > 0)[..., None]
    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    coarse = rng.normal(0, 25, (side // 8 + 1, side // 8 + 1, 3))
    noise = np.repeat(np.repeat(coarse, 8, 0), 8, 1)[:side, :side]
    return np.clip(np.where(stripes, a, b) * 0.6 + 50 + noise, 0, 255)


def compose(objects: np.ndarray, labels: np.ndarray, keep: tuple[int, ...], names: tuple[str, ...], n: int, *, side: int = 64,
            seed: int = 0, max_objects: int = 3) -> Scenes:
    """``n`` scenes of 1..``max_objects`` objects whose label is in ``keep`` (scene class = position in ``keep`` + 1)."""
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(np.isin(labels, keep))
    images = np.zeros((n, side, side, 3), dtype=np.uint8)
    masks = np.zeros((n, side, side), dtype=np.uint8)
    h, w = objects.shape[1:]
    for i in range(n):
        image, mask = background(rng, side), np.zeros((side, side), dtype=np.uint8)
        for _ in range(int(rng.integers(1, max_objects + 1))):
            k = int(rng.choice(pool))
            grey = objects[k].astype(np.float64)
            y, x = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
            colour = rng.uniform(120, 255, 3)
            alpha = (grey / 255.0)[..., None]
            region = image[y : y + h, x : x + w]
            image[y : y + h, x : x + w] = region * (1 - alpha) + colour * alpha
            cls = keep.index(int(labels[k])) + 1
            sub = mask[y : y + h, x : x + w]
            sub[grey > EDGE] = IGNORE
            sub[grey > SOLID] = cls
        images[i], masks[i] = image.round().clip(0, 255).astype(np.uint8), mask
    return Scenes(images, masks, ("background", *(names[c] for c in keep)))


def write_voc(out: Path, splits: dict[str, Scenes]) -> None:
    """VOC layout: JPEGImages/*.jpg (quality 95), SegmentationClass/*.png (palette), ImageSets/Segmentation/{split}.txt, classes.txt."""
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    palette = voc_palette()
    for split, scenes in splits.items():
        stems = [f"{split}_{i:05d}" for i in range(len(scenes.images))]
        for stem, image, mask in zip(stems, scenes.images, scenes.masks, strict=True):
            Image.fromarray(image).save(out / "JPEGImages" / f"{stem}.jpg", quality=95)
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(out / "SegmentationClass" / f"{stem}.png")
        (out / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
    (out / "classes.txt").write_text("\n".join(next(iter(splits.values())).classes) + "\n")


def write_ade(out: Path, splits: dict[str, Scenes]) -> None:
    """ADE layout: images/{training,validation}/*.jpg, annotations/.../*.png (mode L: 0 = other/ignore, class c -> c + 1), classes.txt."""
    for split, scenes in splits.items():
        where = {"train": "training", "val": "validation"}[split]
        (out / "images" / where).mkdir(parents=True, exist_ok=True)
        (out / "annotations" / where).mkdir(parents=True, exist_ok=True)
        for i, (image, mask) in enumerate(zip(scenes.images, scenes.masks, strict=True)):
            stem = f"ADE_{where}_{i:08d}"
            Image.fromarray(image).save(out / "images" / where / f"{stem}.jpg", quality=95)
            ade = np.where(mask == IGNORE, 0, mask.astype(np.int64) + 1).astype(np.uint8)
            Image.fromarray(ade, mode="L").save(out / "annotations" / where / f"{stem}.png")
    (out / "classes.txt").write_text("\n".join(next(iter(splits.values())).classes) + "\n")


def write_folder(out: Path, splits: dict[str, Scenes], ignore_index: int = 250) -> None:
    """Plain folder: {split}/images/*.png, {split}/masks/*.png (mode L), dataset.json (classes, ignore_index)."""
    for split, scenes in splits.items():
        (out / split / "images").mkdir(parents=True, exist_ok=True)
        (out / split / "masks").mkdir(parents=True, exist_ok=True)
        for i, (image, mask) in enumerate(zip(scenes.images, scenes.masks, strict=True)):
            Image.fromarray(image).save(out / split / "images" / f"{i:05d}.png")
            Image.fromarray(np.where(mask == IGNORE, ignore_index, mask).astype(np.uint8), mode="L").save(out / split / "masks" / f"{i:05d}.png")
    (out / "dataset.json").write_text(json.dumps({"classes": list(next(iter(splits.values())).classes), "ignore_index": ignore_index}))
