"""Frozen-backbone features of whole splits, extracted once and cached on disk.

The ``linear`` and ``knn`` protocols train nothing in the backbone, so a split's features
depend only on what :class:`FeatureKey` names: weights, dataset, split, resolution,
normalisation, precision, device type and the torch/timm versions. They are extracted once per
key; every case needing them (other subset sizes, seeds, knn after linear) reads the cached
full-split tensors and indexes into them.

A cache file is ``<root>/<backbone>/<dataset>-<split>-<img>px-<precision>[-init<seed>]-<digest>.pt``, written
through :func:`harness.files.write_atomic`, so a reader never sees half a file; two
processes extracting the same key both write whole files and the last one wins.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import re
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from harness.contract import DEVICE_TYPES, PRECISIONS
from harness.data.augment import prepare
from harness.data.batches import Batches
from harness.data.types import TensorSplit
from harness.errors import OUT_OF_MEMORY
from harness.files import write_atomic
from harness.runtime.devices import DTYPES, synchronize
from harness.runtime.progress import task

SPLITS = ("train", "test")
# Hex characters of the sha256 kept in the digest: 64 bits, no collision among a few thousand keys.
DIGEST_CHARS = 16
# Longest dataset part of a file name: an imagefolder's full path would exceed NAME_MAX (255).
_LABEL_CHARS = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


def _library_versions() -> dict[str, str]:
    """The torch and timm versions (kernels and model code both change features in the last bits)."""
    try:
        timm_version = metadata.version("timm")
    except metadata.PackageNotFoundError:
        timm_version = "absent"
    return {"torch": str(torch.__version__), "timm": timm_version}


def _part(text: str) -> str:
    """``text`` as one path component: runs of characters other than ``A-Za-z0-9._@+-`` become ``-``,
    no leading dot or dash (no hidden files, no ``..``)."""
    return _UNSAFE.sub("-", text).lstrip(".-")[:_LABEL_CHARS] or "_"


@dataclass(frozen=True)
class FeatureKey:
    """Everything extracted features depend on; its :meth:`digest` names the cache file.

    ``weights_sha256`` is ``None`` for random weights, and then ``init_seed`` must be set (the
    features are those of one initialisation); with weights it must be ``None``, since a seed
    would split the cache for features that do not depend on it. The extraction batch size is
    not part of the key: it changes nothing but the order of float sums.
    """

    backbone: str
    weights_sha256: str | None
    init_seed: int | None
    dataset: str
    split: str
    held_size: int
    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    precision: str
    device_type: str
    # --robustness: the test split under a corruption ("fog-s3-seed0"), held at img_size; None: the split itself.
    corruption: str | None = None

    def __post_init__(self) -> None:
        if not self.backbone or not self.dataset:
            raise ValueError(f"backbone and dataset must be non-empty, got {self.backbone!r} and {self.dataset!r}")
        if self.weights_sha256 is None and self.init_seed is None:
            raise ValueError("random weights (weights_sha256=None) need init_seed: the features depend on the initialisation")
        if self.weights_sha256 is not None and (not self.weights_sha256 or self.init_seed is not None):
            raise ValueError("with weights_sha256 set, init_seed must be None (pretrained features do not depend on a seed)")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.held_size < 1 or self.img_size < 1:
            raise ValueError(f"held_size and img_size must be >= 1, got {self.held_size} and {self.img_size}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device_type not in DEVICE_TYPES:
            raise ValueError(f"device_type must be one of {DEVICE_TYPES}, got {self.device_type!r}")
        for name in ("mean", "std"):
            value = tuple(float(v) for v in getattr(self, name))
            if len(value) != 3:
                raise ValueError(f"{name} must hold 3 values (RGB), got {value}")
            object.__setattr__(self, name, value)  # lists in, hashable tuples stored
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    def _fields(self) -> dict[str, object]:
        out = dataclasses.asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)  # JSON and weights_only both keep lists
        if self.corruption is None:
            del out["corruption"]  # a clean split's digest (and cache file) is the one it had before corruptions existed
        return out

    def digest(self) -> str:
        """First 16 hex characters of the sha256 of the sorted JSON of every field plus torch and timm versions."""
        text = json.dumps({**self._fields(), **_library_versions()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]

    def describe(self) -> dict[str, object]:
        """Every field, the library versions and the digest: what a cache file stores and is checked against."""
        return {**self._fields(), **_library_versions(), "digest": self.digest()}


@dataclass(frozen=True)
class Features:
    """A split's features ``float32 [N, D]`` and labels ``int64 [N]`` on the CPU, and where they came from.

    ``seconds`` is the device-synchronised extraction time of the pass that succeeded, or the
    read time on a hit; ``batch_size`` is the batch the extraction used (after any halving).
    """

    features: torch.Tensor
    labels: torch.Tensor
    key: FeatureKey
    hit: bool
    seconds: float
    path: Path
    batch_size: int

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and labels of the subset at ``indices`` (indices into the full split)."""
        return self.features[indices], self.labels[indices]


def _check_split(key: FeatureKey, split: TensorSplit, device: torch.device, autocast_dtype: torch.dtype | None) -> None:
    side = tuple(split.images.shape[-2:])
    if side != (key.held_size, key.held_size):
        raise ValueError(f"the split holds {side} images but the key says held_size={key.held_size}")
    if device.type != key.device_type:
        raise ValueError(f"extracting on {device.type} under a key for {key.device_type}")
    expected = None if key.precision == "fp32" else DTYPES[key.precision]
    if autocast_dtype != expected:
        raise ValueError(f"autocast_dtype {autocast_dtype} does not match the key's precision {key.precision!r}")


def _release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _one_pass(model: torch.nn.Module, batches: Batches, key: FeatureKey, batch_size: int, autocast_dtype: torch.dtype | None) -> tuple[torch.Tensor, float]:
    device = batches.device
    cast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    parts: list[torch.Tensor] = []
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode(), cast, task(f"{key.split} features", total=len(batches), unit="img") as advance:
        for images, _ in batches.iterate(batch_size):
            out = model(prepare(images, size=key.img_size, mean=key.mean, std=key.std))
            if out.ndim != 2 or out.shape[0] != images.shape[0]:
                raise ValueError(f"the model returned {tuple(out.shape)} for a batch of {images.shape[0]}; "
                                 "build it with num_classes=0 so forward returns pooled features [B, D]")
            parts.append(out.float().cpu())
            advance(images.shape[0])
    synchronize(device)
    seconds = time.perf_counter() - start
    # Concatenated outside inference mode: a normal tensor, usable by autograd (the linear probe).
    return torch.cat(parts), seconds


def extract(model: torch.nn.Module, split: TensorSplit, key: FeatureKey, *, device: torch.device, batch_size: int,
            autocast_dtype: torch.dtype | None) -> tuple[torch.Tensor, int, float]:
    """Features of ``split`` in order, with the batch used and the seconds of the successful pass.

    ``model`` (on ``device``, forward returning ``[B, D]``) runs in eval mode, its mode restored
    afterwards. A batch that runs out of memory halves the batch size and restarts the pass, so
    the features come from one batch size: the largest power-of-two fraction of ``batch_size`` that fits.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_split(key, split, device, autocast_dtype)
    batches = Batches(split, device)
    was_training = model.training
    model.eval()
    try:
        while True:
            try:
                features, seconds = _one_pass(model, batches, key, batch_size, autocast_dtype)
                break
            except OUT_OF_MEMORY:
                if batch_size == 1:
                    raise
            _release_memory()  # outside the except block: its traceback no longer pins the batch
            batch_size //= 2
    finally:
        model.train(was_training)
    if not torch.isfinite(features).all():
        raise ValueError(f"features of {key.backbone} on {key.dataset}/{key.split} hold NaN/inf "
                         f"(overflow under {key.precision}?); not caching them")
    return features, batch_size, seconds


class FeatureCache:
    """Features on disk under ``root``, one file per :class:`FeatureKey`.

    A file that cannot be read, or whose key, shapes or labels do not match what was asked
    for (corrupt, truncated, written by another version, a dataset changed under the same
    name), is treated as absent: :meth:`get_or_extract` extracts again and overwrites it
    atomically. Nothing about a bad file fails the case.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: FeatureKey) -> Path:
        """``root/<backbone>/<dataset>-<split>-<img>px-<precision>[-init<seed>]-<digest>.pt``: readable, made unique by the digest."""
        seed = f"-init{key.init_seed}" if key.weights_sha256 is None else ""
        corruption = f"-{_part(key.corruption)}" if key.corruption is not None else ""
        name = f"{_part(key.dataset)}-{key.split}{corruption}-{key.img_size}px-{key.precision}{seed}-{key.digest()}.pt"
        return self.root / _part(key.backbone) / name

    def get(self, key: FeatureKey, *, labels: torch.Tensor | None = None) -> Features | None:
        """The cached features of ``key``, or ``None`` when absent, unreadable or not matching.

        With ``labels``, the cached labels must also equal them (same length, same values).
        """
        path = self.path_for(key)
        if not path.is_file():
            return None
        start = time.perf_counter()
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # a damaged file raises anything from EOFError to zipfile errors
            warnings.warn(f"feature cache {path} is unreadable ({type(error).__name__}: {error}); re-extracting", stacklevel=2)
            return None
        problem = _mismatch(data, key, labels)
        if problem is not None:
            warnings.warn(f"feature cache {path}: {problem}; re-extracting", stacklevel=2)
            return None
        return Features(data["features"], data["labels"], key, True, time.perf_counter() - start, path, int(data["batch_size"]))

    def get_or_extract(self, key: FeatureKey, model: torch.nn.Module, split: TensorSplit, *, device: torch.device,
                       batch_size: int, autocast_dtype: torch.dtype | None) -> Features:
        """The features of ``split`` under ``key``: read from the cache when a matching file exists,
        else extracted with :func:`extract` and saved atomically (replacing any bad file)."""
        cached = self.get(key, labels=split.labels.cpu())
        if cached is not None:
            return cached
        return self.extract_and_save(key, model, split, device=device, batch_size=batch_size, autocast_dtype=autocast_dtype)

    def extract_and_save(self, key: FeatureKey, model: torch.nn.Module, split: TensorSplit, *, device: torch.device,
                         batch_size: int, autocast_dtype: torch.dtype | None) -> Features:
        """Extract ``split`` with :func:`extract` and save it under ``key`` atomically (replacing any
        file there); for a caller that already looked the key up with :meth:`get`."""
        features, used, seconds = extract(model, split, key, device=device, batch_size=batch_size, autocast_dtype=autocast_dtype)
        path = self.path_for(key)
        labels = split.labels.cpu().clone()  # not a view of the split's tensor
        payload = {"features": features, "labels": labels, "key": key.describe(), "batch_size": used, "seconds": seconds}
        write_atomic(path, lambda tmp: torch.save(payload, tmp))
        return Features(features, labels, key, False, seconds, path, used)


def _mismatch(data: object, key: FeatureKey, labels: torch.Tensor | None) -> str | None:
    """Why a loaded cache payload cannot serve ``key`` (and ``labels``), or ``None`` when it can."""
    if not isinstance(data, dict) or not {"features", "labels", "key", "batch_size"} <= data.keys():
        return "not a feature file (missing entries)"
    if data["key"] != key.describe():
        return "written under another key"
    feats, stored = data["features"], data["labels"]
    if not isinstance(feats, torch.Tensor) or feats.dtype != torch.float32 or feats.ndim != 2:
        return "features are not float32 [N, D]"
    if not isinstance(stored, torch.Tensor) or stored.dtype != torch.int64 or stored.shape != (feats.shape[0],):
        return "labels are not int64 [N] matching the features"
    if labels is not None and (stored.shape != labels.shape or not torch.equal(stored, labels)):
        return f"labels differ from the split's ({stored.shape[0]} cached, {labels.shape[0]} now): the dataset changed"
    return None
