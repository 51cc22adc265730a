"""The in-memory form of a dataset split, shared by the loaders and the training engine."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorSplit:
    """One split of a dataset held as tensors.

    ``images`` is ``uint8`` of shape ``[N, C, H, W]`` (C is 3: grey sources are replicated so
    every backbone sees RGB); ``labels`` is ``int64`` of shape ``[N]`` with values in
    ``range(len(classes))``. Keeping ``uint8`` makes a 50k-image 32 px split 150 MB, small
    enough to live on the device; normalisation happens per batch in the engine. ``captions``: one
    text per image where the source has them (a WebDataset shard's ``txt`` members), kept for a
    caption-based protocol; ``None`` when it has none.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    captions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 [N] matching images, got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.captions is not None and len(self.captions) != self.images.shape[0]:
            raise ValueError(f"captions must be one per image, got {len(self.captions)} for {self.images.shape[0]} images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def take(self, indices: torch.Tensor) -> TensorSplit:
        """The sub-split at ``indices`` (a view of the same classes)."""
        captions = None
        if self.captions is not None:
            picked = torch.arange(len(self))[indices].reshape(-1).tolist()  # index tensors, masks and slices alike
            captions = tuple(self.captions[i] for i in picked)
        return TensorSplit(self.images[indices], self.labels[indices], self.classes, captions)

    def to(self, device: torch.device | str) -> TensorSplit:
        return TensorSplit(self.images.to(device), self.labels.to(device), self.classes, self.captions)
