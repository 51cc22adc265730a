"""The vocabulary of weights every weights source shares: what a backbone's weights are (:class:`WeightsRef`),
the file found for them (:class:`ResolvedWeights`, sha256 digested), the preprocessing they expect, and
the errors each source raises. A leaf of the backbones room: :mod:`harness.backbones.weights` (timm tags,
own files) and :mod:`harness.backbones.clip` (open_clip tags) both build on it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import unknown

FILE_SEP = "@"


SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


SIDECAR_KEYS = ("mean", "std", "input_size", "interpolation")


SIDECAR_FORMAT = '{"mean": [r, g, b], "std": [r, g, b] > 0, "input_size": N > 0, "interpolation": "bilinear" | "bicubic" | "nearest"}'


# harness.backbones.clip's prefix and hf-hub tag, spelt here too: clip imports this module, not the reverse.
_CLIP, _HF_HUB_TAG = "clip:", "hf-hub"


class UnknownWeights(ValueError):
    """An unknown tag, a missing or unreadable own file, or a name that cannot be read; the message has the fix."""


class WeightsUnavailable(RuntimeError):
    """A valid tag not cached offline (a skip): the message names every place looked and the fetch command."""


class WeightsMismatch(ValueError):
    """A checkpoint whose tensors do not fit the architecture, counted."""


@dataclass(frozen=True)
class WeightsRef:
    """What weights a backbone starts from: a timm tag, an own file (absolute), or neither (random)."""

    arch: str
    tag: str | None = None
    file: Path | None = None

    @property
    def pretrained(self) -> bool:
        """Whether any weights are loaded."""
        return self.tag is not None or self.file is not None

    @property
    def label(self) -> str | None:
        """The tag, or the file's stem as ``[A-Za-z0-9_]+``; ``None`` for random weights."""
        if self.file is not None:
            return re.sub(r"[^A-Za-z0-9_]+", "_", self.file.stem).strip("_") or "file"
        if self.tag == _HF_HUB_TAG and self.arch.startswith(_CLIP):  # clip:hf-hub:ORG/NAME: the repo is the weights
            return self.arch[len(_CLIP):]
        return self.tag

    @property
    def name(self) -> str:
        """``resnet50.a1_in1k``, ``resnet18@digits04`` or ``resnet18``: safe in a test id (a CLIP tag follows
        a ``/``: ``clip:ViT-B-32/openai``; a hf-hub model is its arch)."""
        if self.arch.startswith(_CLIP) and not self.file:
            return self.arch if self.tag in (None, _HF_HUB_TAG) else f"{self.arch}/{self.tag}"
        return f"{self.arch}{FILE_SEP}{self.label}" if self.file else f"{self.arch}.{self.tag}" if self.tag else self.arch


@dataclass(frozen=True)
class Preprocess:
    """The normalisation, training side and resize interpolation the weights expect."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    interpolation: str


@dataclass(frozen=True)
class ResolvedWeights:
    """The file a :class:`WeightsRef` loads, its sha256 and where it was found."""

    ref: WeightsRef
    path: Path
    sha256: str
    source: str  # "hf-cache" | "timm-cache" | "file" | "download"


def _rgb(values: Sequence[float]) -> tuple[float, float, float]:
    red, green, blue = values
    return float(red), float(green), float(blue)


def with_sidecar(base: Preprocess, file: Path) -> Preprocess:
    sidecar = file.with_name(file.name + ".json")
    if not sidecar.is_file():
        return base
    try:
        data = json.loads(sidecar.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        changes: dict[str, Any] = {key: _sidecar_value(key, value) for key, value in data.items()}
    except (OSError, ValueError) as exc:
        raise UnknownWeights(f"{sidecar}: {exc}; it holds some of {SIDECAR_FORMAT}") from exc
    return dataclasses.replace(base, **changes)


def _sidecar_value(key: str, value: Any) -> Any:
    numbers = isinstance(value, list) and len(value) == 3 and all(type(x) in (int, float) for x in value)
    if (key == "mean" and numbers) or (key == "std" and numbers and min(value) > 0):
        return _rgb(value)
    if (key == "input_size" and type(value) is int and value > 0) or (key == "interpolation" and value in INTERPOLATIONS):
        return value
    raise ValueError(f"{key} {value!r} is not valid" if key in SIDECAR_KEYS else unknown("key", key, SIDECAR_KEYS))


def hf_cache_dir() -> Path:
    # huggingface_hub freezes its cache constants at import; read the same variables now instead.
    env = os.environ
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expanduser(env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")))


def resolved(ref: WeightsRef, path: Path, source: str) -> ResolvedWeights:
    return ResolvedWeights(ref, path, sha256_file(path), source)


def sha256_file(path: Path) -> str:
    """The file's sha256, hashed once per (resolved path, size, mtime): a rewritten file is hashed again."""
    real = Path(path).resolve()
    stat = real.stat()
    return _sha256(str(real), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)  # a session loads a few dozen checkpoints: 256 never evicts a live one
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
