"""A team's own backbone, offered the way docs/own-backbones.md says: a plain ViT-Tiny with 8 px patches.

timm's ``vit_tiny_patch16_224`` (12 blocks, width 192, 3 heads) built with ``patch_size=8``: at 64 px it
reads an 8x8 token grid (the name's 16 px patches give 4x4), which is what a dense probe's 1x1 head places
its labels on. Built for 64 px with ``dynamic_img_size=True``: the position embedding is an 8x8 grid and is
resampled on the fly at another side, so the same weights run at 32 px (a 4x4 grid) or 128 px.

    python -m harness bench -- -m dense --backbones examples.vit_patch8:build@/tmp/w/vit_tiny_patch16_224_p8_fmnist.safetensors
    python -m harness bench -- -m dense --backbones examples.vit_patch8:build      # random weights: its twin

Weights: ``scripts/pretrain_fashion.py --backbones vit_tiny_patch16_224 --patch-size 8 --save-size 64``
writes a checkpoint with these keys and shapes (docs/segmentation.md, "Measured here").
"""

from __future__ import annotations

import timm
from torch import nn

ARCH, PATCH, SIDE = "vit_tiny_patch16_224", 8, 64


def build(num_classes: int = 10) -> nn.Module:
    """ViT-Tiny, 8 px patches, an 8x8 position grid (64 px), any side at run time; a ``num_classes`` head (0: none)."""
    model: nn.Module = timm.create_model(ARCH, patch_size=PATCH, img_size=SIDE, dynamic_img_size=True, num_classes=num_classes)
    return model


build.family = "transformer"  # type: ignore[attr-defined]  # what the suite reads of a factory (docs/own-backbones.md)
