"""The one JSON writer: atomic, never overwriting, pytest-benchmark's storage layout.

Runs are saved as ``<storage>/<baseline_key>/NNNN_<name>.json`` exactly where
``pytest-benchmark list/compare --storage <storage>`` look for them. A file is written to a
temporary name in the same directory and then linked into place with :func:`os.link`, which
fails rather than replacing an existing file: a crash leaves no half-written run, and an old
baseline is never overwritten, even by two sessions saving at once.

A run that cannot be saved is not lost: :func:`save_run` writes it to a fallback file
(:func:`unsaved_dir`) and raises :class:`SaveFailed` naming it and the command that moves it into
place (``python -m harness storage adopt``). A writer killed mid-save leaves its temporary file;
the next save into that folder, and ``python -m harness storage check --repair``, recover it
(:func:`recover_orphans`).
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import shlex
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.files import TEMP_SUFFIX, file_mode, in_use, special_kind, write_atomic

_RUN_FILE = re.compile(r"^(\d{4})_.*\.json$")
# write_atomic's temporary file for NNNN_<name>.json: .NNNN_<name>.json.<random>.tmp
_TEMP_FILE = re.compile(r"^\.\d{4}_(?P<name>.+)\.json\.[^.]+" + re.escape(TEMP_SUFFIX) + "$")
# Run names become file names and run ids: no separators, no spaces, no leading dot or dash.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Where a run goes when its storage refuses it, unless this variable names another folder.
UNSAVED_ENV = "BACKBONE_BENCH_UNSAVED"
# The longest file name a run name becomes is its fallback's temporary file (write_fallback through
# write_atomic): ".<name>-<UTC stamp>.json.<8 random>.tmp"; the storage's own is 19 characters shorter.
NAME_OVERHEAD = len(".-20260101T000000.000000Z.json.abcdefgh") + len(TEMP_SUFFIX)
# What almost every file system takes (ext4, xfs, btrfs, APFS, NTFS): the limit where pathconf cannot say.
_PORTABLE_NAME_MAX = 255


class StorageError(OSError):
    """A run could not be saved; nothing was written."""


class SaveFailed(StorageError):
    """The storage refused a run, which was written to ``fallback`` instead.

    ``reason`` is why the storage refused it, ``command`` the shell command that moves the
    fallback into place once the storage is fixed.
    """

    def __init__(self, target: str, reason: str, fallback: Path, command: str) -> None:
        super().__init__(f"could not save the run to {target}: {reason}; it was written to {fallback} instead")
        self.target, self.reason, self.fallback, self.command = target, reason, fallback, command


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


def check_run_name(name: str, *folders: Path) -> str:
    """``name`` if a run can be saved under it (``NNNN_<name>.json``), else :class:`StorageError` with the fix.

    Called when the options are parsed, so ``--benchmark-save "my run"`` fails before any case runs;
    with ``folders`` (the storage), the name must also fit their file systems' longest file name with
    every file a save derives from it (:data:`NAME_OVERHEAD`), the fallback folder's included.
    """
    if not _NAME.fullmatch(name):
        raise StorageError(
            f"invalid run name {name!r}: a run name starts with a letter or digit and holds only letters, digits, "
            "'.', '_' and '-' (e.g. --benchmark-save=main)"
        )
    limits = {folder: name_max(folder) for folder in ((*folders, unsaved_dir()) if folders else ())}
    where, most = min(limits.items(), key=lambda item: item[1]) if limits else (None, _PORTABLE_NAME_MAX)
    if len(name) + NAME_OVERHEAD > most:
        on = f"{where} takes" if where is not None else "file systems take"
        raise StorageError(f"run name of {len(name)} characters is too long: {on} file names of at most {most} characters, and a "
                           f"save adds up to {NAME_OVERHEAD} to the name (NNNN_NAME.json, its temporary and fallback files); "
                           f"use a name of at most {most - NAME_OVERHEAD} characters")
    return name


def check_json_path(path: Path) -> Path:
    """``path`` if a run can be written there atomically (``--benchmark-json``), else :class:`StorageError`:
    a name too long for its file system with the temporary file beside it, or something other than a file there."""
    temp_overhead = len(".") + len(".abcdefgh") + len(TEMP_SUFFIX)  # write_atomic's temporary name beside it
    most = name_max(path.absolute().parent)
    if len(path.name) + temp_overhead > most:
        raise StorageError(f"--benchmark-json {path}: a file name of {len(path.name)} characters is too long ({path.parent} takes at "
                           f"most {most}, and the temporary file written first adds {temp_overhead}); use a shorter name")
    if path.exists() and not path.is_file() or path.is_symlink() and not path.exists():
        raise StorageError(f"--benchmark-json {path}: {special_kind(path)} is there, not a file; pass the path of a file to write")
    return path


def name_max(folder: Path) -> int:
    """The longest file name ``folder``'s file system takes (that of the nearest existing folder above it)."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        return int(os.pathconf(existing, "PC_NAME_MAX"))
    except (OSError, ValueError):  # no such limit reported (some network file systems): assume the common one
        return _PORTABLE_NAME_MAX


def link_numbered(folder: Path, name: str, place: Callable[[Path], None]) -> Path:
    """Put a run into ``folder`` as ``NNNN_name.json`` under the next free number: ``place(path)``
    raises ``FileExistsError`` when another session took that number first, and the next is tried."""
    for _ in range(100):  # another session may take a number between our scan and our link
        path = folder / f"{next_number(folder):04d}_{name}.json"
        try:
            place(path)
        except FileExistsError:
            if not folder.is_dir():  # the folder's name is taken by a file: no number will do
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)) from None
            continue
        return path
    raise StorageError(f"could not find a free run number in {folder}")


def save_run(storage: Path, key: str, name: str, data: dict[str, Any], *, on_recover: Callable[[str], object] | None = None) -> Path:
    """Save a run as ``storage/key/NNNN_name.json`` and return its path.

    Temporary files that a killed save left in that folder are recovered first, each told to
    ``on_recover`` as one line. When the storage refuses the run (read-only, full, gone), it is
    written to a fallback file and :class:`SaveFailed` raised; a run that is no JSON
    (``ValueError``) or a bad name (:class:`StorageError`) writes nothing.
    """
    check_run_name(name)
    text = dumps(data)
    folder = storage / key
    try:
        for line in recover_orphans(folder):
            if on_recover is not None:
                on_recover(line)
        return link_numbered(folder, name, lambda path: write_new(path, text))
    except StorageError:
        raise
    except OSError as exc:
        raise write_fallback(text, key, name, f"{folder}", reason_of(exc), adopt_command(storage, name)) from None


def write_fallback(text: str, key: str, name: str, target: str, reason: str, command: Callable[[Path], str]) -> SaveFailed:
    """Write a run that ``target`` refused to a fallback file; the :class:`SaveFailed` to raise.

    The fallback is ``<unsaved>/<key>/<name>-<UTC time>.json`` under :func:`unsaved_dir`, or under
    the system's temporary folder when that one refuses it too (the same disk may be full).
    """
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    tried = []
    for root in (unsaved_dir(), Path(tempfile.gettempdir()) / "backbone-bench-unsaved"):
        path = root / key / f"{name}-{stamp}.json"
        try:
            write_new(path, text)
        except OSError as exc:
            tried.append(f"{path}: {reason_of(exc)}")
            continue
        return SaveFailed(target, reason, path, command(path))
    raise StorageError(f"could not save the run to {target} ({reason}), nor to a fallback ({'; '.join(tried)}); "
                       f"set {UNSAVED_ENV}=DIR to a writable folder and re-run")


def unsaved_dir() -> Path:
    """Where unsaved runs go: ``$BACKBONE_BENCH_UNSAVED``, else ``~/.cache/backbone-bench/unsaved``."""
    env = os.environ.get(UNSAVED_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "backbone-bench" / "unsaved"


def adopt_command(storage: Path, name: str) -> Callable[[Path], str]:
    """The command that saves a fallback file into ``storage`` under ``name``."""
    return lambda path: shlex.join(["python", "-m", "harness", "storage", "adopt", str(path), "--benchmark-storage", str(storage), "--name", name])


def save_failure_lines(exc: SaveFailed) -> list[str]:
    """What a caller prints when a save failed: the reason, where the run is, the command that moves it."""
    return [
        f"backbone-bench: could not save the run to {exc.target}: {exc.reason}",
        f"backbone-bench: the run was written to {exc.fallback}",
        f"backbone-bench: once the storage is fixed, move it into place with: {exc.command}",
    ]


def reason_of(exc: OSError) -> str:
    return f"{exc.strerror} (errno {exc.errno})" if exc.strerror else str(exc)


@dataclass(frozen=True)
class Orphan:
    """A temporary file a killed save left: ``complete`` (a whole run, never put in place),
    ``incomplete`` (cut short), ``duplicate`` (already in place: killed before its temporary name
    was removed) or ``foreign`` (whole JSON but no run; left alone)."""

    path: Path
    name: str
    state: str
    detail: str = ""


def find_orphans(folder: Path) -> list[Orphan]:
    """The temporary run files in ``folder`` that no live writer holds."""
    from harness.results.runs import RunError, read_run_file

    found: list[Orphan] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        m = _TEMP_FILE.match(path.name)
        if m is None or not path.is_file() or in_use(path):
            continue
        inode = path.stat()
        if inode.st_nlink > 1 and any(p.stat().st_ino == inode.st_ino for p in folder.glob("*.json")):
            found.append(Orphan(path, m["name"], "duplicate"))
            continue
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            found.append(Orphan(path, m["name"], "incomplete", str(exc)))
            continue
        try:
            read_run_file(path)
        except RunError as exc:
            found.append(Orphan(path, m["name"], "foreign", str(exc).removeprefix(f"{path}: ")))
            continue
        found.append(Orphan(path, m["name"], "complete"))
    return found


def repair_orphan(orphan: Orphan) -> str:
    """Put a complete orphan in place under the next free number, remove an incomplete or duplicate one;
    one line saying what was done."""
    path = orphan.path
    if orphan.state == "complete":
        os.chmod(path, file_mode())  # a writer killed before its chmod left it 0600
        placed = link_numbered(path.parent, orphan.name, lambda target: os.link(path, target))
        path.unlink()
        return f"recovered {path.name}, a complete run a killed save left, as {placed.name}"
    if orphan.state in ("incomplete", "duplicate"):
        path.unlink()
        what = "cut short" if orphan.state == "incomplete" else "already saved under its number"
        return f"removed {path.name}, a run a killed save left {what}"
    return f"left {path.name}: it holds JSON but no run; move or delete it by hand"


def recover_orphans(folder: Path) -> list[str]:
    """Repair every orphan in ``folder`` (:func:`repair_orphan`); a line per file, also for one that could not be."""
    lines = []
    for orphan in find_orphans(folder):
        try:
            lines.append(repair_orphan(orphan))
        except OSError as exc:
            lines.append(f"could not recover {orphan.path.name} ({reason_of(exc)})")
    return lines
