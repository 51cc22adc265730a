"""Writing a file so that no reader ever sees half of it: the one atomic writer of the project.

A leaf: run storage, reports, feature caches and checkpoints all write through
:func:`write_atomic`.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a temporary file in use then reads as abandoned
    fcntl = None  # type: ignore[assignment]

TEMP_SUFFIX = ".tmp"


def write_atomic(path: Path, write: Callable[[Path], object], *, replace: bool = True) -> None:
    """Have ``write`` fill a temporary file beside ``path``, then move it into place at once.

    Readers never see half a file. With ``replace=False`` the move is :func:`os.link`, which
    raises ``FileExistsError`` rather than replace an existing file (baselines); otherwise
    :func:`os.replace` (reports, checkpoints). The temporary file, ``.<name>.<random>.tmp``, is
    locked (:func:`in_use`) until it is gone, so a recovery of files left by a killed writer
    (:func:`harness.results.storage.recover_orphans`) never takes one that is still being written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    tmp = Path(name)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        write(tmp)
        os.chmod(tmp, file_mode())  # a saved run is as readable as any file
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)  # the lock goes with the last descriptor, after the temporary name is gone


def in_use(path: Path) -> bool:
    """Whether a live :func:`write_atomic` holds the temporary file ``path`` (a killed one holds nothing)."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True  # its writer has just moved it into place
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's lock, if it got it
    return False


def file_mode() -> int:
    """The mode a new file gets from ``open``: 0666 less the umask (mkstemp's 0600 is too tight for a saved run)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def special_kind(path: Path) -> str:
    """What ``path`` is when it is not a regular file: a folder, a FIFO, a device, a socket, a broken link."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "a broken link" if path.is_symlink() else "nothing readable"
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "a special file"
