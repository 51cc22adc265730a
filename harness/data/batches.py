"""Shuffled ``uint8`` batches from a :class:`TensorSplit`, served from the device when the split fits.

Small splits (the suite's regime: <300k images, usually 32-64 px) are moved to the device once
and sliced there: no DataLoader workers, no host-to-device copy per step. Splits that do not
fit (see :func:`fits_on_device`) stay in pinned host memory and are sliced by DataLoader
workers, then copied asynchronously. Both paths use the same seeded permutation, so they
yield identical batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset

from harness.data.types import TensorSplit

# Keep the resident split under a quarter of free device memory: the rest is for weights,
# optimiser state and activations, which for the largest models here need several GB.
DEVICE_SHARE = 0.25


def fits_on_device(split: TensorSplit, device: torch.device) -> bool:
    """Whether ``split`` should live on ``device``: always on CPU (it already does), else <= 25% of free memory."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    nbytes = split.images.nbytes + split.labels.nbytes
    return nbytes <= DEVICE_SHARE * free


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of ``range(n)`` for ``epoch`` (0-based): a CPU generator seeded from (seed, epoch).

    Independent of global RNG and of how many batches were drawn before, so a resumed run sees
    the same order as an uninterrupted one.
    """
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 0))
    return torch.randperm(n, generator=g)


def derive_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed for one (run seed, epoch, stream) triple; streams keep shuffling and augmentation apart."""
    # Large odd multipliers spread nearby inputs apart (a cheap, stable mix; no hash() salt).
    return (seed * 1_000_003 + epoch * 7_919 + stream * 104_729 + 12_345) % (2**63 - 1)


class _Slices(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A dataset whose "index" is a whole batch of indices: one worker call builds one batch."""

    def __init__(self, split: TensorSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.split.images[idx], self.split.labels[idx]


class Batches:
    """Batches of one split on one device, resident or streamed from pinned host memory."""

    def __init__(self, split: TensorSplit, device: torch.device, *, on_device: bool | None = None, num_workers: int = 4) -> None:
        if len(split) == 0:
            raise ValueError("cannot batch an empty split; check the dataset loader and subset indices")
        self.device = device
        self.on_device = fits_on_device(split, device) if on_device is None else on_device
        self.num_workers = num_workers
        if self.on_device:
            self.split = split.to(device)
        else:
            pin = device.type == "cuda"
            self.split = TensorSplit(
                split.images.cpu().pin_memory() if pin else split.images.cpu(),
                split.labels.cpu().pin_memory() if pin else split.labels.cpu(),
                split.classes,
            )

    def __len__(self) -> int:
        return len(self.split)

    def num_batches(self, batch_size: int, drop_last: bool, n: int | None = None) -> int:
        """How many batches one pass over ``n`` images (default: the whole split) yields."""
        n = len(self.split) if n is None else n
        return n // batch_size if drop_last else -(-n // batch_size)

    def iterate(self, batch_size: int, *, order: torch.Tensor | None = None, drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(uint8 images, int64 labels)`` on the device in ``order`` (default: sequential)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        idx = torch.arange(len(self.split)) if order is None else order
        # Sized by the order, which may be a part of the split (a torchrun rank's share).
        stop = self.num_batches(batch_size, drop_last, len(idx)) * batch_size
        chunks = [idx[i : min(i + batch_size, stop)] for i in range(0, stop, batch_size)]
        if self.on_device:
            for chunk in chunks:
                sel = chunk.to(self.device, non_blocking=True)
                yield self.split.images[sel], self.split.labels[sel]
            return
        loader = DataLoader(
            _Slices(self.split),
            sampler=chunks,  # each "index" is a whole batch of indices
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        for images, labels in loader:
            yield images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
