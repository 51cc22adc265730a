"""Pixel conversions shared by every loader: to uint8 RGB ``[N, 3, S, S]`` at the benchmark size.

Images are resized once, at load time, so that a 300k-image split at 32 px (about 920 MB)
stays in memory and the training loop never resizes. Non-square images are resized so the
shorter side is ``size`` and then centre-cropped (the usual evaluation preprocessing; it keeps
the aspect ratio instead of squashing). Square images are simply resized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# Resizing works on float32 chunks holding at most this many output values (64 Mi values,
# 256 MB): bounded transient memory even when enlarging 50k images to 224 px.
_CHUNK_VALUES = 64 * 2**20
# Decoded full-resolution images are buffered up to this many uint8 values (64 MB) before
# being resized in same-size groups: ~200 VGA frames, or a handful of 12 MP photos.
_DECODE_BUFFER_VALUES = 64 * 2**20

K = TypeVar("K")


def check_img_size(img_size: int) -> int:
    """Return ``img_size`` if it is a positive int, else raise ``ValueError``."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ValueError(f"img_size must be a positive integer number of pixels (e.g. 32), got {img_size!r}")
    return img_size


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """``[N, 1 or 3, H, W]`` uint8 → ``[N, 3, H, W]``, replicating grey to three channels."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images [N, 1 or 3, H, W], got shape {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1).contiguous() if images.shape[1] == 1 else images.contiguous()


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` to ``[N, C, size, size]``.

    Bilinear on float, with antialiasing only when shrinking (antialias changes nothing useful
    when enlarging and torch ignores it there anyway), then rounded and clamped back to uint8.
    The shorter side becomes ``size``; the longer side is centre-cropped. When the images
    already have the target size they are returned unchanged (bit-exact).
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    h, w = int(images.shape[2]), int(images.shape[3])
    if h == size and w == size:
        return images
    scale = size / min(h, w)
    # round(), not int(): a 500x375 image at 32 px becomes 43x32, not 42x32.
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    antialias = min(h, w) > size
    chunk_len = max(1, _CHUNK_VALUES // (images.shape[1] * max(new_h * new_w, h * w)))
    for start in range(0, images.shape[0], chunk_len):
        chunk = images[start : start + chunk_len].float()
        resized = F.interpolate(chunk, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=antialias)
        cropped = resized[:, :, top : top + size, left : left + size]
        out[start : start + chunk_len] = cropped.round().clamp_(0, 255).to(torch.uint8)
    return out


def from_nhwc(array: np.ndarray) -> torch.Tensor:
    """A numpy uint8 ``[N, H, W, C]`` (or ``[N, H, W]``) array as a torch ``[N, C, H, W]`` tensor."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(-1)
    return tensor.permute(0, 3, 1, 2)


def decode_images(
    paths: Sequence[Path],
    size: int,
    *,
    on_error: Callable[[Path, Exception], Exception],
) -> torch.Tensor:
    """Decode image files with PIL into uint8 ``[N, 3, size, size]`` (see :func:`decode_stream`)."""
    return decode_stream(((Path(p), Path(p)) for p in paths), len(paths), size, on_error=on_error)


def decode_stream(
    sources: Iterable[tuple[K, Path | IO[bytes]]],
    count: int,
    size: int,
    *,
    on_error: Callable[[K, Exception], Exception],
) -> torch.Tensor:
    """Decode ``count`` images, each ``(name, file path or open binary file)``, into uint8 ``[count, 3, size, size]``.

    Image files and the members of a tar (WebDataset shards) read through this one path, so a
    folder and its shards give the same pixels. Each image is converted to RGB (grey and palette
    images included); images of different sizes can be mixed. Decoded images are buffered up to
    ``_DECODE_BUFFER_VALUES`` and resized in groups of equal size (one ``interpolate`` call per
    group instead of one per image, which is ~10x faster for small images). An image PIL cannot
    read is passed to ``on_error`` with its name and the original exception; the exception it
    returns is raised from it. ``sources`` yielding other than ``count`` images is a ``ValueError``.
    """
    out = torch.empty((count, 3, size, size), dtype=torch.uint8)
    pending: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    buffered = 0

    def flush() -> None:
        for group in pending.values():
            batch = from_nhwc(np.stack([array for _, array in group]))
            out[torch.tensor([i for i, _ in group])] = resize_square(batch, size)
        pending.clear()

    seen = 0
    for i, (name, source) in enumerate(sources):
        if i >= count:
            raise ValueError(f"more than the {count} images expected (at {name})")
        try:
            with Image.open(source) as img:
                rgb = np.array(img.convert("RGB"))  # a writable copy, as torch.from_numpy wants
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL raises the first three on bad files
            raise on_error(name, exc) from exc
        pending.setdefault(rgb.shape[:2], []).append((i, rgb))
        buffered += rgb.size
        seen = i + 1
        if buffered >= _DECODE_BUFFER_VALUES:
            flush()
            buffered = 0
    if seen != count:
        raise ValueError(f"{seen} images where {count} were expected")
    flush()
    return out
