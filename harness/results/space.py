"""Before any case runs: can the run's destination take it? Writable, and room for its size.

A session that measures for an hour and then finds its storage read-only or its disk full has
lost the hour; :func:`check_destination` refuses it up front, naming the fix. The size of a run
is estimated from the selected case count and a case's share of the stored runs (:func:`case_bytes`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from harness.results.storage import StorageError, reason_of

# A case's share of a saved run when the storage holds no run to measure it on: the committed smoke
# runs hold 5-10 KB per case (a latency case's raw samples, a training case's curve); 32 KiB leaves
# room for the longer sample lists of a larger --bench-time.
CASE_BYTES = 32 * 1024
# Stored runs read to measure a case's share (the newest ones): enough to see the usual cases,
# few enough that a storage of hundreds of runs is not read before every session.
_SIZED_RUNS = 5


def check_destination(folder: Path, what: str, cases: int = 1) -> None:
    """Raise :class:`StorageError` naming the fix when ``folder`` cannot take a run of ``cases`` cases.

    Called before any case runs: the folder (or the nearest existing folder above it, where it
    would be created) must take a new file, and its disk must have room for ``cases`` times a
    case's share (:func:`case_bytes`).
    """
    existing = check_writable(folder, what)
    fix = f"pass a writable folder with space ({what} DIR) or fix this one"
    per_case = case_bytes(folder)
    need, free = cases * per_case, shutil.disk_usage(existing).free
    if free < need:
        raise StorageError(f"{what} {folder}: {size_text(free)} free, a run of {cases} case(s) needs about {size_text(need)} "
                           f"({size_text(per_case)} per case); free some space or {fix}")


def check_writable(folder: Path, what: str) -> Path:
    """The nearest existing folder at or above ``folder`` (where it would be created), when a new file can
    be written there; else :class:`StorageError` naming ``what`` and the fix. A file where the folder
    should be fails the probe too."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".backbone-bench-probe.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise StorageError(f"{what} {folder}: cannot write there ({reason_of(exc)}); pass a writable folder with space "
                           f"({what} DIR) or fix this one") from None
    return existing


def size_text(count: int) -> str:
    """``count`` bytes for a reader: KiB below a MiB, then MiB, GiB, TiB with one decimal."""
    if count < 2**20:
        return f"{count / 2**10:.1f} KiB"
    for unit, power in (("MiB", 20), ("GiB", 30)):
        if count < 2 ** (power + 10):
            return f"{count / 2**power:.1f} {unit}"
    return f"{count / 2**40:.1f} TiB"


def case_bytes(storage: Path) -> int:
    """A case's share of a saved run: the largest among the newest runs in ``storage``, else :data:`CASE_BYTES`."""
    runs = sorted(storage.glob("*/*.json"), key=lambda p: p.name)[-_SIZED_RUNS:] if storage.is_dir() else []
    shares = []
    for path in runs:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            count = len(doc.get("benchmarks", [])) + len(doc.get("backbone_bench", {}).get("failed", []))
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable run says nothing of size; storage check names it
        if count:
            shares.append(path.stat().st_size // count)
    return max(shares, default=CASE_BYTES)
