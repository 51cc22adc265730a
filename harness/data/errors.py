"""Exceptions raised by the data layer, each carrying the message a user needs to fix it.

The pytest layer turns :class:`DatasetUnavailable` into a skip (the data simply is not on this
machine) and lets :class:`DatasetCorrupt` fail loudly (the data is there but broken). Both keep
the dataset name and the path involved as attributes so callers can report them without parsing
the message.
"""

from __future__ import annotations

from pathlib import Path

# The fixes the pytest layer offers; kept in one place so every message names the same options.
ROOT_FIXES = "pass --data-root PATH, set the environment variable BACKBONE_BENCH_DATA=PATH, or pass --download"


class DatasetError(Exception):
    """Base class for every data-layer failure tied to one dataset and one path."""

    def __init__(self, message: str, *, dataset: str, path: Path) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.path = path


class DatasetUnavailable(DatasetError):
    """The dataset is not on disk and was not downloaded; the message says where we looked."""


class DatasetUnusable(DatasetError):
    """The dataset reads but cannot train a classifier: an empty image folder, or one of one class."""


class DatasetCorrupt(DatasetError):
    """A dataset file exists but cannot be read (wrong checksum, truncated, wrong format)."""


def unavailable(dataset: str, split: str, missing: Path, *, root: Path, layout: str, download_mb: int | None) -> DatasetUnavailable:
    """Build the standard "not found offline" error for ``dataset``.

    ``layout`` is the directory (relative to ``root``) that torchvision expects, shown so the user
    can check an existing copy; ``download_mb`` (approximate archive size) is shown when the
    dataset can be downloaded, ``None`` when it cannot (a team's own image folder).
    """
    how = (
        f"{ROOT_FIXES} to fetch it (about {download_mb} MB)"
        if download_mb is not None
        else "pass an absolute path after 'imagefolder:' or put the folder under the data root "
        "(--data-root PATH or BACKBONE_BENCH_DATA=PATH)"
    )
    return DatasetUnavailable(
        f"dataset {dataset!r} ({split} split) is not available offline: {missing} does not exist "
        f"(expected layout: {root / layout}). Fix: {how}.",
        dataset=dataset,
        path=missing,
    )


def corrupt(dataset: str, path: Path, problem: str, *, fix: str | None = None) -> DatasetCorrupt:
    """Build the standard "file is broken" error naming ``path`` and the fix.

    The default fix is to delete the file and download again, right for every torchvision
    dataset; image folders pass their own ``fix``.
    """
    fix = fix or f"delete {path} and download it again (pass --download)"
    return DatasetCorrupt(f"dataset {dataset!r}: {path} is corrupt: {problem}. Fix: {fix}.", dataset=dataset, path=path)
