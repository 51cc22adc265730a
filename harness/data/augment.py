"""Batch-level normalisation and augmentation, run on the device where the batch lives.

Batches arrive as ``uint8 [B, C, H, W]``. ``standard`` augmentation (zero-padded random crop
plus optional horizontal flip) is one gather per batch driven by an explicit
``torch.Generator``, so it is reproducible and independent of global RNG. timm's RandAugment
(PIL, per image, on the CPU) and Mixup/CutMix (numpy RNG) are wrapped so their global RNG use is
seeded per epoch and scoped by :func:`scoped_global_rng`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from harness.contract import SCRATCH_MEAN, SCRATCH_STD

# One channel's mean/std of harness.contract.SCRATCH_MEAN/SCRATCH_STD (the same on every channel).
MEAN = SCRATCH_MEAN[0]
STD = SCRATCH_STD[0]


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """``uint8`` (or float in [0, 255]) images to float ``(x / 255 - 0.5) / 0.5``."""
    x = images.to(dtype).div_(255.0).sub_(MEAN).div_(STD)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def prepare(
    images: torch.Tensor,
    *,
    size: int | None = None,
    mean: tuple[float, float, float] = SCRATCH_MEAN,
    std: tuple[float, float, float] = SCRATCH_STD,
    channels_last: bool = False,
) -> torch.Tensor:
    """A ``uint8`` batch as a model's float input, on the batch's device: resized to ``size`` x
    ``size`` (bilinear; antialiased when shrinking) when its side differs, then normalised with
    the model's per-channel ``mean``/``std`` (in [0, 1] units, as timm's pretrained configs give them).

    Splits are held at their stored resolution (32 px for CIFAR) and resized here, per batch,
    so a 224 px fine-tune keeps a 50k-image split at 150 MB on the device instead of 7.5 GB.
    With the defaults it equals :func:`normalize`.
    """
    x = images.float()
    if size is not None and (x.shape[-2], x.shape[-1]) != (size, size):
        shrink = size < min(x.shape[-2], x.shape[-1])
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
        x = x.clamp_(0.0, 255.0)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    x = x.div_(255.0).sub_(m).div_(s)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def crop_padding(img_size: int) -> int:
    """Zero padding for the random crop: 4 px at 32 px (the CIFAR convention), scaled with size."""
    return max(1, round(4 * img_size / 32))


def random_crop_flip(images: torch.Tensor, pad: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-image random crop of ``images`` zero-padded by ``pad`` px, then flip each with p=0.5 if ``hflip``.

    Works on any dtype (uint8 included) on the batch's device; ``generator`` must live on that device.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images [B, C, H, W], got {tuple(images.shape)}")
    b, _, h, w = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = dy[:, None] + torch.arange(h, device=dev)
    cols = torch.arange(w, device=dev).expand(b, w)
    if hflip:
        flip = torch.rand(b, generator=generator, device=dev) < 0.5
        cols = torch.where(flip[:, None], cols.flip(1), cols)
    cols = dx[:, None] + cols
    batch = torch.arange(b, device=dev)[:, None, None]
    # Advanced indices around the channel slice put their dims first: result is [B, H, W, C].
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


@contextmanager
def scoped_global_rng(seed: int) -> Iterator[None]:
    """Seed Python's and numpy's global RNGs (used by timm's augmentations) and restore them afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


class RandAugmentBatch:
    """timm RandAugment (``rand-m9-n2-mstd0.5``, the timm/DeiT default) applied image by image.

    RandAugment in timm works on PIL images, so each batch round-trips through the CPU; this is
    an option for accuracy studies, not for throughput. Uses global RNG: call inside
    :func:`scoped_global_rng`.
    """

    def __init__(self, img_size: int, config: str = "rand-m9-n2-mstd0.5") -> None:
        from timm.data.auto_augment import rand_augment_transform

        # timm's create_transform uses 45% of the image size as the maximum translation.
        hparams = {"translate_const": int(img_size * 0.45), "img_mean": (128, 128, 128)}
        self.transform = rand_augment_transform(config, hparams)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        host = images.permute(0, 2, 3, 1).cpu().numpy()
        out = [np.asarray(self.transform(Image.fromarray(img))) for img in host]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(images.device)


class MixBatch:
    """timm Mixup and/or CutMix on a normalised float batch; returns soft targets that carry label smoothing.

    An alpha of 0 turns that kind of mixing off. With both alphas > 0, timm's ``Mixup`` picks
    CutMix or Mixup per batch with probability 0.5 each (``switch_prob``, timm's and DeiT's
    default). Every batch is mixed (``prob`` 1.0). Uses numpy's global RNG: call inside
    :func:`scoped_global_rng`.
    """

    def __init__(self, num_classes: int, label_smoothing: float, *, mixup_alpha: float, cutmix_alpha: float) -> None:
        from timm.data.mixup import Mixup

        if not (mixup_alpha > 0 or cutmix_alpha > 0):
            raise ValueError(f"MixBatch needs mixup_alpha > 0 or cutmix_alpha > 0, got {mixup_alpha} and {cutmix_alpha}")
        # Typed as what its unannotated __call__ returns: (mixed batch, soft targets).
        self.mix: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] = Mixup(  # type: ignore[no-untyped-call]  # unannotated in timm
            mixup_alpha=mixup_alpha,
            cutmix_alpha=cutmix_alpha,
            switch_prob=0.5,
            label_smoothing=label_smoothing,
            num_classes=num_classes,
        )

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(x, labels)
