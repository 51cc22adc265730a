"""Devices: discovery, validation, synchronisation, precision support and machine facts."""

from __future__ import annotations

import functools
import platform
import re
from pathlib import Path

import torch

from harness.contract import DEVICE_TYPES, PRECISIONS, unknown

__all__ = [
    "DEVICE_TYPES", "DTYPES", "PRECISIONS", "available_devices", "cpu_model", "gpu_name",
    "parse_device", "precision_unsupported_reason", "synchronize", "unavailable_reason",
]

# The torch dtype of each precision name in harness.contract.PRECISIONS (tests check they agree).
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The device names parse_device accepts, as the hint lists them: every type, plus cuda:N after cuda.
_DEVICE_FORMS = tuple(form for kind in DEVICE_TYPES for form in ((kind, "cuda:N") if kind == "cuda" else (kind,)))


def parse_device(text: str) -> str:
    """Validate a device name (``cpu``, ``cuda``, ``cuda:N``, ``mps``) and return it normalised."""
    name = text.strip().lower()
    if name in DEVICE_TYPES or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ValueError(unknown("device", name, _DEVICE_FORMS))


def available_devices() -> list[str]:
    """Every device type this machine can run: cpu always, cuda and mps when present."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


def unavailable_reason(device: str) -> str | None:
    """Why ``device`` cannot run here, or ``None`` when it can."""
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return None
    if kind == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device is visible (torch.cuda.is_available() is False)"
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            return f"only {count} CUDA device(s) are visible (cuda:0 to cuda:{count - 1})"
        return None
    if kind == "mps" and "mps" not in available_devices():
        return "no MPS device is visible (torch.backends.mps.is_available() is False)"
    return None


def precision_unsupported_reason(device: str, precision: str) -> str | None:
    """Why ``precision`` cannot run on ``device``, or ``None`` when it can."""
    kind = device.split(":")[0]
    if precision == "fp32":
        return None
    if kind == "cpu" and precision == "fp16":
        # CPU fp16 kernels are incomplete and emulated where present: the figure would describe
        # nothing a user deploys. bf16 has native kernels on AVX512-BF16/AMX CPUs.
        return "fp16 is not a deployment precision on CPU (kernels missing or emulated); use bf16"
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "bf16 needs an Ampere or newer GPU"
    if kind == "mps" and precision == "bf16":
        return "bf16 is not supported by the MPS backend"
    return None


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` so a clock read after it covers that work."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


@functools.cache
def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), falling back to ``platform.processor()``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name(device: str = "cuda") -> str | None:
    """The CUDA device's name, or ``None`` without CUDA."""
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(torch.device(device if device.startswith("cuda") else "cuda"))
