"""Which power source to read for a device on this machine, and which NVML GPU torch's ``cuda:N`` is."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.edge.jetson import JetsonFacts
from harness.edge.power import PowerSampler, PowerUnavailable
from harness.edge.samplers import JtopSampler, NvmlSampler, RaplSampler, TegrastatsSampler


def _torch_cuda_index(device: str) -> tuple[int, str]:
    """The torch index of ``cuda`` / ``cuda:N``, and a note when it had to be assumed.

    ``cuda`` without an index is torch's current device: under xdist the plugin gives each
    worker its GPU with ``torch.cuda.set_device(N)`` and leaves the case's device ``cuda``.
    """
    _, _, index = device.partition(":")
    if index and not index.isdigit():
        raise ValueError(f"device {device!r}: write cuda or cuda:N with N a GPU index")
    if index:
        return int(index), ""
    try:
        import torch

        return int(torch.cuda.current_device()), ""
    except Exception as error:  # a torch without CUDA (AssertionError), no driver (RuntimeError)
        return 0, f"torch's current device unknown ({type(error).__name__}: {error}); cuda taken as cuda:0"


def _pci_bus_id(torch_index: int) -> str:
    """The PCI bus id of a torch CUDA device, as NVML writes it (``domain:bus:device.function``)."""
    import torch

    props: Any = torch.cuda.get_device_properties(torch_index)  # pci_* fields: recent torch only, not in its stubs
    return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"


def nvml_index(device: str, nvml: Any = None) -> tuple[int, str]:
    """The NVML index of the GPU torch calls ``device``, and how it was found.

    NVML numbers GPUs in PCI bus order and ignores ``CUDA_VISIBLE_DEVICES``; torch numbers the
    visible GPUs in CUDA's order (fastest first by default). The PCI bus id names the same GPU in
    both. Without it, torch's own ``CUDA_VISIBLE_DEVICES`` mapping (right when CUDA's order is the
    bus order), else the torch index itself, and the note says which. ``nvml``: the pynvml
    module (imported when absent).
    """
    index, note = _torch_cuda_index(device)
    if nvml is None:
        import pynvml

        nvml = pynvml
    notes = [note] if note else []
    try:
        bus_id = _pci_bus_id(index)
        nvml.nvmlInit()
        found = int(nvml.nvmlDeviceGetIndex(nvml.nvmlDeviceGetHandleByPciBusId(bus_id)))
        return found, "; ".join([*notes, f"torch cuda:{index} is NVML GPU {found} (PCI {bus_id})"])
    except Exception as error:  # old torch (no pci_* fields), no CUDA, or NVML without this bus id
        notes.append(f"no PCI bus id match for torch cuda:{index} ({type(error).__name__}: {error})")
    try:
        import torch

        mapped = int(torch.cuda._get_nvml_device_index(index))  # private; absent in older torch
        return mapped, "; ".join([*notes, f"torch cuda:{index} is NVML GPU {mapped} by CUDA_VISIBLE_DEVICES"])
    except Exception as error:
        notes.append(f"no CUDA_VISIBLE_DEVICES mapping ({type(error).__name__}: {error})")
    return index, "; ".join([*notes, f"NVML GPU {index} assumed to be torch cuda:{index}"])


def pick_sampler(
    device: str, jetson: JetsonFacts | None, rapl_root: Path = Path("/sys/class/powercap")
) -> tuple[PowerSampler | None, str]:
    """The best power sampler for ``device`` on this machine, and a reason when there is none."""
    reasons: list[str] = []
    if jetson is not None:
        if shutil.which("tegrastats"):
            return TegrastatsSampler(), "tegrastats module input rail"
        reasons.append("tegrastats not on PATH")
        try:
            return JtopSampler(), "jtop total power"
        except Exception as error:  # ImportError, or jtop's service not running
            reasons.append(f"jtop unavailable ({type(error).__name__}: {error})")
        return None, "Jetson power unavailable: " + "; ".join(reasons)
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        try:
            index, how = nvml_index(device)
            return NvmlSampler(index), f"NVML GPU energy (GPU board only, not the host CPU); {how}"
        except (PowerUnavailable, ImportError) as error:
            return None, f"NVML unavailable: {error}"
    if kind == "cpu":
        try:
            return RaplSampler(rapl_root), "RAPL CPU package energy"
        except PowerUnavailable as error:
            return None, str(error)
    return None, f"no power source for device {device!r}; supported: cpu (RAPL), cuda[:N] (NVML), or a Jetson"


__all__ = ["nvml_index", "pick_sampler"]
