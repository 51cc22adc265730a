"""Camera corruptions of a test split: ImageNet-C's (Hendrycks & Dietterich 2019) and robot conditions.

The rows (names, groups) are :data:`harness.contract.CORRUPTION_SPECS`; this module is how each runs.
Every corruption is a function of a float batch ``[N, 3, H, W]`` in [0, 1] on the split's device, a
severity 1-5 and a ``torch.Generator`` on that device, built from torch, kornia (filters, plasma
fractal, colour spaces) and torchvision (libjpeg): no per-image Python loop but JPEG's, and on a GPU
case the corruption runs on the GPU.

Why not the ``imagecorruptions`` package: 1.1.2 (its latest) fails on today's stack: ``fog`` calls
``np.float_`` (removed in NumPy 2), ``glass_blur``/``gaussian_blur`` pass ``multichannel`` (removed in
scikit-image 0.19+); it draws from NumPy's global RNG, and its ``motion_blur`` picks a random angle.

Parameters are CIFAR-10-C's (Hendrycks' ``make_cifar_c.py``: ImageNet-C re-tuned for 32 px images;
ImageNet-C's 224 px radii would erase a 32 px digit at severity 1), for the suite's 28-32 px images.
At another evaluation size the spatial ones (blur radii, kernel lengths) scale with ``size / 32``.
Own choices, marked below: motion blur's kernel (a fixed horizontal direction; ImageNet-C's is
ImageMagick's one-sided Gaussian at a random angle) and ``low_light`` (RoboDepth's dark, our levels).

A corrupted split is deterministic: its generator is seeded by (seed, corruption, severity), so every
backbone and protocol sees the same corrupted images on one device type (CPU and CUDA generators differ).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from harness.contract import CORRUPTION_SPECS, SEVERITIES, unknown
from harness.data.types import TensorSplit

# The resolution CIFAR-10-C's parameters are for.
BASE_SIZE = 32
# Images corrupted per chunk: 2,048 x 3 x 224 x 224 floats is 1.2 GB, so a GPU case at 224 px stays well in memory.
CHUNK = 2048

Fn = Callable[[torch.Tensor, int, torch.Generator, float], torch.Tensor]



def gaussian_noise(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]  # CIFAR-10-C std, in [0, 1] units
    return x + c * torch.randn(x.shape, generator=g, device=x.device)


def shot_noise(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    c = [500, 250, 100, 75, 50][severity - 1]  # CIFAR-10-C photons at full white
    return torch.poisson(x * c, generator=g) / c


def impulse_noise(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]  # CIFAR-10-C share of values hit, half salt, half pepper (skimage's s&p)
    u = torch.rand(x.shape, generator=g, device=x.device)
    return x.masked_fill(u < c / 2, 0.0).masked_fill((u >= c / 2) & (u < c), 1.0)


def disk_kernel(radius: float, alias_blur: float, device: torch.device) -> torch.Tensor:
    """ImageNet-C's defocus kernel: the aliased disk of ``radius`` on a 17 x 17 grid (a larger one past 8 px),
    normalised, then smoothed by a 3 x 3 Gaussian of ``alias_blur`` (cv2.GaussianBlur, reflect-101 border)."""
    from kornia.filters import gaussian_blur2d

    half = 8 if radius <= 8 else int(radius)
    t = torch.arange(-half, half + 1, device=device, dtype=torch.float32)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    disk = ((xx**2 + yy**2) <= radius**2).float()
    disk = disk / disk.sum()
    return gaussian_blur2d(disk[None, None], (3, 3), (alias_blur, alias_blur), border_type="reflect")[0, 0]


def defocus_blur(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    from kornia.filters import filter2d

    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)][severity - 1]  # CIFAR-10-C
    return filter2d(x, disk_kernel(radius * scale, alias, x.device)[None], border_type="reflect")


# Motion blur: a uniform line kernel along 0 degrees (the camera panning), kornia's, of this length in px
# at 32 px. Ours: CIFAR-10-C's trail is a one-sided Gaussian of sigma 1-3 px (ImageMagick), ~3 sigma long.
MOTION_LENGTHS = (3, 5, 5, 7, 9)
MOTION_ANGLE = 0.0


def motion_kernel_size(severity: int, scale: float) -> int:
    """The odd kernel length of ``severity`` at ``scale`` x 32 px (at least 3)."""
    length = max(3, round(MOTION_LENGTHS[severity - 1] * scale))
    return length if length % 2 else length + 1


def motion_blur(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    from kornia.filters import motion_blur as kornia_motion_blur

    return kornia_motion_blur(x, motion_kernel_size(severity, scale), MOTION_ANGLE, 0.0, border_type="reflect")


def fog(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    from kornia.contrib import diamond_square

    amount, decay = [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)][severity - 1]  # CIFAR-10-C
    n, _, h, w = x.shape

    def draw(shape: tuple[int, ...], device: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.rand(shape, generator=g, device=device, dtype=dtype)

    # ImageNet-C's plasma fractal divides its wibble by `decay` per level: kornia's roughness 1/decay.
    plasma = diamond_square((n, 1, h, w), roughness=1.0 / decay, random_fn=draw, normalize_range=(0.0, 1.0), device=x.device)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + amount * plasma) * peak / (peak + amount)


def brightness(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    from kornia.color import hsv_to_rgb, rgb_to_hsv

    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]  # CIFAR-10-C: added to HSV value
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([hsv[:, :2], (hsv[:, 2:] + c).clamp(0.0, 1.0)], dim=1)
    return hsv_to_rgb(hsv)


def contrast(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]  # CIFAR-10-C
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def pixelate(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]  # CIFAR-10-C: box down to this share of the side, box back up
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(int(h * c), int(w * c)), mode="area")
    return F.interpolate(small, size=(h, w), mode="area")


def jpeg_compression(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    from torchvision.io import decode_jpeg, encode_jpeg

    quality = [80, 65, 58, 50, 40][severity - 1]  # CIFAR-10-C
    as_bytes = to_uint8(x)
    encoded = encode_jpeg(list(as_bytes), quality=quality)
    decoded = decode_jpeg(encoded, device=x.device)
    return torch.stack(decoded).float() / 255.0


# low_light (ours, after RoboDepth's dark): exposure cut to this share, then read at high gain: shot noise
# of LOW_LIGHT_PHOTONS at full white (a phone-class sensor in a dim room) plus Gaussian read noise.
LOW_LIGHT_EXPOSURE = (0.6, 0.5, 0.4, 0.3, 0.2)
LOW_LIGHT_PHOTONS = 100.0
LOW_LIGHT_READ_NOISE = 0.01


def low_light(x: torch.Tensor, severity: int, g: torch.Generator, scale: float) -> torch.Tensor:
    dark = x * LOW_LIGHT_EXPOSURE[severity - 1]
    shot = torch.poisson(dark * LOW_LIGHT_PHOTONS, generator=g) / LOW_LIGHT_PHOTONS
    return shot + LOW_LIGHT_READ_NOISE * torch.randn(x.shape, generator=g, device=x.device)


FUNCTIONS: Mapping[str, Fn] = {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "motion_blur": motion_blur, "fog": fog, "brightness": brightness,
    "contrast": contrast, "pixelate": pixelate, "jpeg_compression": jpeg_compression, "low_light": low_light,
}


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats as uint8, rounded (a corrupted image is stored and read back as 8-bit, like ImageNet-C's files)."""
    return (x.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def generator_seed(name: str, severity: int, seed: int) -> int:
    """The generator seed of one corrupted split: the same for every backbone, protocol and training seed."""
    return (seed * 1_000_003 + zlib.crc32(name.encode()) * 8 + severity) % 2**63


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``images`` at ``size`` x ``size`` as :func:`harness.data.augment.prepare` resizes them (bilinear,
    antialiased when shrinking), rounded back to uint8: the corruption applies at the resolution the model sees."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    x = images.float()
    shrink = size < min(x.shape[-2], x.shape[-1])
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return x.clamp_(0.0, 255.0).round_().to(torch.uint8)


def corrupt(images: torch.Tensor, name: str, severity: int, *, seed: int = 0) -> torch.Tensor:
    """``images`` (uint8 ``[N, 3, H, W]``) under corruption ``name`` at ``severity``, as uint8 on their device.

    Deterministic: the same images, name, severity, seed and device type give the same bytes.
    Raises ``ValueError`` for an unknown name or a severity outside 1-5.
    """
    if name not in CORRUPTION_SPECS:
        raise ValueError(unknown("corruption", name, CORRUPTION_SPECS))
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {SEVERITIES}, got {severity!r}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}")
    fn, scale = FUNCTIONS[name], images.shape[-1] / BASE_SIZE
    g = torch.Generator(device=images.device)
    g.manual_seed(generator_seed(name, severity, seed))
    parts = [to_uint8(fn(chunk.float() / 255.0, severity, g, scale)) for chunk in torch.split(images, CHUNK)]
    return torch.cat(parts) if parts else images.clone()


def corrupted_split(split: TensorSplit, name: str, severity: int, size: int, *, seed: int = 0) -> TensorSplit:
    """``split`` resized to the evaluation ``size`` and corrupted: held at ``size``, its labels and classes kept."""
    return TensorSplit(corrupt(resized(split.images, size), name, severity, seed=seed), split.labels, split.classes, split.captions)
