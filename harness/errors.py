"""The errors every room shares: a bad option value, and what running out of memory raises.

A leaf: it imports nothing of the project, so the lowest room can raise these and the top
(argparse, the plugin) can catch them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    # What running out of memory raises: CUDA/MPS allocations (torch.OutOfMemoryError) or the host
    # (MemoryError). Callers that treat out-of-memory as "does not fit" catch exactly these.
    OUT_OF_MEMORY: tuple[type[BaseException], ...]


def __getattr__(name: str) -> object:
    # OUT_OF_MEMORY is built on first use: importing torch here would load it (seconds) for every
    # SettingError, including `python -m harness --help` and its usage errors.
    if name == "OUT_OF_MEMORY":
        import torch

        return (torch.OutOfMemoryError, MemoryError)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SettingError(ValueError):
    """A bad option value; the message names the valid choices."""
