"""Writing a file so that no reader ever sees half of it: the one atomic writer of the project.

A leaf: run storage, reports, feature caches and checkpoints all write through
:func:`write_atomic`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: Path, write: Callable[[Path], object], *, replace: bool = True) -> None:
    """Have ``write`` fill a temporary file beside ``path``, then move it into place at once.

    Readers never see half a file. With ``replace=False`` the move is :func:`os.link`, which
    raises ``FileExistsError`` rather than replace an existing file (baselines); otherwise
    :func:`os.replace` (reports, checkpoints).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved run is as readable as any file
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
