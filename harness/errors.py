"""The errors every room shares: a bad option value, and what running out of memory raises.

A leaf: it imports nothing of the project, so the lowest room can raise these and the top
(argparse, the plugin) can catch them.
"""

from __future__ import annotations

import torch

# What running out of memory raises: CUDA/MPS allocations (torch.OutOfMemoryError) or the host
# (MemoryError). Callers that treat out-of-memory as "does not fit" catch exactly these.
OUT_OF_MEMORY: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, MemoryError)


class SettingError(ValueError):
    """A bad option value; the message names the valid choices."""
