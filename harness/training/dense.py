"""The linear segmentation probe of DINOv2 and AM-RADIO on frozen multi-scale features.

* **Features**: the frozen backbone's intermediate maps through timm's ``forward_intermediates(x,
  indices=N, intermediates_only=True)`` (CNNs, ViTs and hybrids alike give NCHW maps; a team's own model
  or a CLIP tower qualifies by providing the same method). ``last`` reads the last map, ``last4`` the
  last four (DINOv2's "ms"/4-layer variant); each is computed once per split and reused by every
  learning rate and seed.
* **Head**: every chosen map bilinearly resized to the largest one's size, concatenated, BatchNorm, a
  1x1 conv to the classes (DINOv2's ``BNHead``); logits bilinearly upsampled to the mask's size,
  cross-entropy with the ignore index 255.
* **Training**: AdamW (weight decay 1e-4), linearly decaying lr (mmseg's
  poly schedule of power 1), a fixed number of steps at batch :data:`BATCH`; the lr is chosen on a
  validation split carved from the training images (:mod:`harness.training.selection`) by validation
  mIoU, then the head is retrained on every training image.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.backbones.registry import BackboneUnsupported
from harness.data.segmentation import IGNORE
from harness.runtime.devices import synchronize
from harness.training.seg_metrics import confusion

# How many of the last intermediate maps the head reads (--seg-layers).
LAYERS = {"last": 1, "last4": 4}
# Images per step: small enough for a CPU step, enough pixels for the head's BatchNorm batch statistics.
BATCH = 16
# AdamW's weight decay on the head (not searched: a 1x1 conv of a few thousand weights).
WEIGHT_DECAY = 1e-4
# The lr grid (AdamW, batch 16) from 1e-3 up in half-decade steps. Measured on the must-show scenes at 60
# steps: the search chose 1e-2 for 5 of 6 backbones, so at short budgets the top end is the one used.
LR_GRID: tuple[float, ...] = (1e-3, 3e-3, 1e-2)
DEFAULT_LR = 3e-3
# Features are extracted this many images at a time (no gradients: memory is the maps of one batch).
FEATURE_BATCH = 64


class NoDenseFeatures(BackboneUnsupported):
    """A backbone that gives no multi-scale feature maps (no ``forward_intermediates``)."""


def intermediates_of(model: nn.Module, name: str) -> nn.Module:
    """The module whose ``forward_intermediates`` gives ``model``'s maps: the model, or a CLIP tower's timm trunk."""
    for candidate in (model, getattr(model, "trunk", None), getattr(getattr(model, "tower", None), "trunk", None)):
        if candidate is not None and callable(getattr(candidate, "forward_intermediates", None)):
            return candidate
    raise NoDenseFeatures(f"{name} gives no multi-scale features: it has no forward_intermediates(x, indices=N, intermediates_only=True) "
                          "(timm's API for CNNs and ViTs); use a timm backbone that has one, or add that method to your own model")


def check_dense_capable(arch: str) -> None:
    """Raise :class:`NoDenseFeatures` when ``arch`` gives no multi-scale maps; built without weights
    (the meta device) where it can be, so preflight checks a whole matrix in a moment."""
    from harness.backbones.factory import create_backbone
    from harness.backbones.own import is_own

    if is_own(arch) or arch.startswith("clip:"):
        model = create_backbone(arch, num_classes=0, img_size=224 if arch.startswith("clip:") else 64)
    else:
        import timm

        try:
            with torch.device("meta"):
                model = timm.create_model(arch, num_classes=0)
        except Exception:  # noqa: BLE001 - a model that computes on real tensors in __init__: built for real
            model = timm.create_model(arch, num_classes=0)
    intermediates_of(model, arch)


class FeatureMaps(nn.Module):
    """The frozen backbone as a map of an image batch to its last ``layers`` NCHW feature maps."""

    def __init__(self, backbone: nn.Module, name: str, layers: int) -> None:
        super().__init__()
        self.backbone = intermediates_of(backbone, name)
        self.layers = layers

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.backbone.forward_intermediates(x, indices=self.layers, intermediates_only=True)  # type: ignore[operator]
        out = [m for m in maps if isinstance(m, torch.Tensor) and m.ndim == 4]
        if len(out) != self.layers:
            raise NoDenseFeatures(f"forward_intermediates gave {len(out)} NCHW maps where {self.layers} were asked")
        return out


class LinearSegHead(nn.Module):
    """DINOv2's ``BNHead``: resize every map to the largest, concatenate, BatchNorm, 1x1 conv."""

    def __init__(self, channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(sum(channels))
        self.conv = nn.Conv2d(sum(channels), num_classes, kernel_size=1)

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        x = torch.cat([m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)
        logits: torch.Tensor = self.conv(self.bn(x))
        return logits


def upsampled_logits(head: nn.Module, maps: Sequence[torch.Tensor], side: int) -> torch.Tensor:
    """The head's logits bilinearly upsampled to ``side`` x ``side`` (the mask's size)."""
    logits: torch.Tensor = head(maps)
    return F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)


class DenseModel(nn.Module):
    """Backbone maps + head + upsampling: what a deployed segmenter runs per frame (the timed forward)."""

    def __init__(self, maps: FeatureMaps, head: LinearSegHead) -> None:
        super().__init__()
        self.maps, self.head = maps, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsampled_logits(self.head, self.maps(x), int(x.shape[-1]))


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - m) / s


@torch.no_grad()
def extract_maps(maps: FeatureMaps, images: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device) -> list[torch.Tensor]:
    """Every image's maps, per layer ``float32 [N, C, h, w]`` on the CPU."""
    maps = maps.to(device).eval()
    dtype = next(maps.parameters()).dtype
    parts: list[list[torch.Tensor]] = []
    for lo in range(0, images.shape[0], FEATURE_BATCH):
        batch = normalise(images[lo : lo + FEATURE_BATCH].to(device), mean, std).to(dtype)
        parts.append([m.float().cpu() for m in maps(batch)])
    return [torch.cat([p[i] for p in parts]) for i in range(len(parts[0]))]


@dataclass(frozen=True)
class TrainedHead:
    head: LinearSegHead
    seconds: float
    final_loss: float


def train_head(feats: Sequence[torch.Tensor], masks: torch.Tensor, num_classes: int, *, lr: float, steps: int, seed: int,
               device: torch.device) -> TrainedHead:
    """Fit the head on cached maps ``feats`` (per layer ``[N, C, h, w]``) and ``masks`` ``[N, S, S]`` for ``steps``
    AdamW steps at batch :data:`BATCH`, lr decaying linearly to 0; the seed sets the init and the batch order."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    torch.manual_seed(seed)
    head = LinearSegHead([int(f.shape[1]) for f in feats], num_classes).to(device).train()
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / steps)
    gen = torch.Generator().manual_seed(seed)
    n, side = int(masks.shape[0]), int(masks.shape[-1])
    feats = [f.to(device) for f in feats]
    masks = masks.to(device)
    order = torch.randperm(n, generator=gen)
    cursor, loss = 0, torch.tensor(0.0)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        if cursor + min(BATCH, n) > n:  # a new epoch: reshuffle
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + BATCH].to(device)
        cursor += BATCH
        logits = upsampled_logits(head, [f[idx] for f in feats], side)
        loss = F.cross_entropy(logits, masks[idx], ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
    synchronize(device)
    return TrainedHead(head.eval(), time.perf_counter() - start, float(loss.detach()))


@torch.no_grad()
def evaluate(head: nn.Module, feats: Sequence[torch.Tensor], masks: torch.Tensor, num_classes: int, device: torch.device) -> tuple[torch.Tensor, float]:
    """(confusion ``[C, C]``, mean cross-entropy over labelled pixels) of the head on cached maps."""
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    total_loss, total_pixels = 0.0, 0
    side = int(masks.shape[-1])
    for lo in range(0, int(masks.shape[0]), FEATURE_BATCH):
        target = masks[lo : lo + FEATURE_BATCH].to(device)
        logits = upsampled_logits(head, [f[lo : lo + FEATURE_BATCH].to(device) for f in feats], side)
        labelled = int((target != IGNORE).sum())
        if labelled:
            total_loss += float(F.cross_entropy(logits, target, ignore_index=IGNORE, reduction="sum"))
            total_pixels += labelled
        conf += confusion(logits.argmax(1), target, num_classes)
    return conf, total_loss / max(total_pixels, 1)
