"""File checks run before handing a dataset to torchvision, so failures name the exact file.

torchvision's own checks answer one yes/no for a whole dataset ("not found or corrupted") and
want every split's files present. The loaders instead check just the files the requested split
reads: a missing file raises :class:`DatasetUnavailable`, a wrong checksum, bad header or
unparsable file raises :class:`DatasetCorrupt` naming it.
"""

from __future__ import annotations

import hashlib
import math
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import torch

from harness.data.errors import DatasetUnavailable, corrupt, unavailable
from harness.data.registry import DatasetInfo

T = TypeVar("T")

# Exceptions that mean "this file's content is not what the format promises". Parsers in
# torchvision, numpy, pickle, scipy and PIL raise these (torchvision's idx reader uses assert).
PARSE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    EOFError,
    AssertionError,
    RuntimeError,
    pickle.UnpicklingError,
)
# Files are hashed in 1 MiB reads: large enough to run at disk speed, small in memory.
_HASH_BLOCK = 2**20


def md5sum(path: Path) -> str:
    """Hex md5 of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def require_files(
    info: DatasetInfo, split: str, root: Path, files: Sequence[tuple[Path, str | None]], *, verify: bool
) -> None:
    """Check that each ``(path, md5)`` exists and, when ``verify``, has that md5.

    ``md5`` is ``None`` for files torchvision publishes no checksum for (the extracted MNIST
    idx files); those are validated by their headers instead.
    """
    for path, _ in files:
        if not path.exists():
            raise unavailable(info.name, split, path, root=root, layout=info.layout, download_mb=info.download_mb)
    if verify:
        for path, expected in files:
            if expected is not None and (got := md5sum(path)) != expected:
                raise corrupt(info.name, path, f"md5 is {got}, the official file's is {expected} (incomplete download?)")


def download(info: DatasetInfo, root: Path, fetch: Callable[[], object]) -> None:
    """Run torchvision's own ``fetch`` (download + extract + md5), turning failures into ``DatasetUnavailable``."""
    try:
        fetch()
    except Exception as exc:  # urllib, http, tarfile and md5 failures all mean "could not download"
        raise DatasetUnavailable(
            f"dataset {info.name!r}: download into {root / info.layout} failed: {exc}. Fix: check the "
            f"network, or download it on another machine and copy it there (--data-root PATH or "
            f"BACKBONE_BENCH_DATA=PATH).",
            dataset=info.name,
            path=root / info.layout,
        ) from exc


def construct(info: DatasetInfo, files: Sequence[Path], probe: Callable[[Path], None], build: Callable[[], T]) -> T:
    """Run ``build`` (a torchvision constructor); on a parse error, find and name the bad file.

    ``probe`` reads one file and raises when it is malformed; it runs only on the error path,
    so a healthy dataset is parsed once.
    """
    try:
        return build()
    except PARSE_ERRORS as exc:
        for path in files:
            try:
                probe(path)
            except PARSE_ERRORS as probe_exc:
                raise corrupt(info.name, path, f"{type(probe_exc).__name__}: {probe_exc}") from exc
        names = ", ".join(str(p) for p in files)
        raise corrupt(info.name, files[0].parent, f"reading {names} failed with {type(exc).__name__}: {exc}") from exc


def check_labels(info: DatasetInfo, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], where: Path) -> None:
    """Raise ``DatasetCorrupt`` unless labels match images one-to-one and index ``classes``."""
    if len(classes) != info.num_classes:
        raise corrupt(info.name, where, f"{len(classes)} class names, expected {info.num_classes}")
    if labels.shape[0] != images.shape[0]:
        raise corrupt(info.name, where, f"{labels.shape[0]} labels for {images.shape[0]} images")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise corrupt(info.name, where, f"labels span {int(labels.min())}..{int(labels.max())}, expected 0..{len(classes) - 1}")


def check_idx(info: DatasetInfo, path: Path, *, magic: int, ndim: int) -> int:
    """Validate an MNIST idx file's magic number and length; return its item count."""
    header_len = 4 + 4 * ndim
    with open(path, "rb") as f:
        header = f.read(header_len)
    if len(header) < header_len:
        raise corrupt(info.name, path, f"{len(header)} bytes, shorter than the {header_len}-byte idx header")
    got = int.from_bytes(header[:4], "big")
    if got != magic:
        raise corrupt(info.name, path, f"bad idx magic number 0x{got:08x}, expected 0x{magic:08x}")
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected, actual = header_len + math.prod(dims), path.stat().st_size
    if actual != expected:
        raise corrupt(info.name, path, f"{actual} bytes, but its header {dims} needs {expected} (truncated?)")
    return dims[0]
