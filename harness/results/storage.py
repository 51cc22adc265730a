"""The one JSON writer: atomic, never overwriting, pytest-benchmark's storage layout.

Runs are saved as ``<storage>/<baseline_key>/NNNN_<name>.json`` exactly where
``pytest-benchmark list/compare --storage <storage>`` look for them. A file is written to a
temporary name in the same directory and then linked into place with :func:`os.link`, which
fails rather than replacing an existing file: a crash leaves no half-written run, and an old
baseline is never overwritten, even by two sessions saving at once.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from harness.files import write_atomic

_RUN_FILE = re.compile(r"^(\d{4})_.*\.json$")
# Run names become file names and run ids: no separators, no spaces, no leading dot or dash.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class StorageError(OSError):
    """A run could not be saved; nothing was written."""


def dumps(data: Any) -> str:
    """JSON text of a run: indented like pytest-benchmark's, non-finite floats refused."""
    return json.dumps(data, indent=4, sort_keys=False, allow_nan=False, ensure_ascii=True) + "\n"


def write_new(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; raise ``FileExistsError`` if ``path`` exists."""
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), replace=False)


def next_number(folder: Path) -> int:
    """The next free run number in ``folder`` (1 for an empty or missing folder)."""
    numbers = [int(m.group(1)) for p in folder.glob("*.json") if (m := _RUN_FILE.match(p.name))]
    return max(numbers, default=0) + 1


def check_run_name(name: str) -> str:
    """``name`` if a run can be saved under it (``NNNN_<name>.json``), else :class:`StorageError` with the fix.

    Called when the options are parsed, so ``--benchmark-save "my run"`` fails before any case runs.
    """
    if not _NAME.fullmatch(name):
        raise StorageError(
            f"invalid run name {name!r}: a run name starts with a letter or digit and holds only letters, digits, "
            "'.', '_' and '-' (e.g. --benchmark-save=main)"
        )
    return name


def save_run(storage: Path, key: str, name: str, data: dict[str, Any]) -> Path:
    """Save a run as ``storage/key/NNNN_name.json`` and return its path."""
    check_run_name(name)
    text = dumps(data)
    folder = storage / key
    for _ in range(100):  # another session may take a number between our scan and our link
        path = folder / f"{next_number(folder):04d}_{name}.json"
        try:
            write_new(path, text)
        except FileExistsError:
            continue
        return path
    raise StorageError(f"could not find a free run number in {folder}")
