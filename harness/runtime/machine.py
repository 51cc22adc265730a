"""Machine facts for a run's ``machine_info`` and the baseline key that keeps runs comparable.

Runs land under ``baselines/<baseline_key>/``. The key names the hardware class the figures
belong to — the CPU model for CPU-only runs, the GPU model when CUDA cases ran, the board and
power mode on a Jetson, plus an edge-constraint profile — so a 15 W Jetson run never gates a
MAXN run and a laptop never gates a workstation.
"""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from harness.contract import slug
from harness.edge.jetson import JetsonFacts, jetson_facts
from harness.edge.profiles import EdgeProfile
from harness.runtime.devices import cpu_model, gpu_name


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_facts(devices: list[str], edge_profile: EdgeProfile | None = None) -> dict[str, object]:
    """Facts that decide whether two runs are comparable, for ``machine_info``.

    ``devices`` are the devices the session's cases ran on.
    """
    uses_cuda = any(d.startswith("cuda") for d in devices)
    jetson = jetson_facts()
    facts: dict[str, object] = {
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "timm": _version("timm"),
        "fvcore": _version("fvcore"),
        "onnxruntime": _version("onnxruntime"),
        "cuda": torch.version.cuda if uses_cuda else None,
        "cudnn": torch.backends.cudnn.version() if uses_cuda else None,  # type: ignore[no-untyped-call]  # unannotated in torch
        "gpu_name": gpu_name() if uses_cuda else None,
        "gpu_count": torch.cuda.device_count() if uses_cuda else 0,
        "cpu_model": cpu_model(),
        "cpu_threads_default": torch.get_num_threads(),
        "devices": sorted(set(devices)),
        "jetson": jetson.as_machine_info() if jetson else None,
        "edge_profile": edge_profile.as_record() if edge_profile else None,
    }
    facts["device_kind"] = "jetson" if jetson else ("cuda" if uses_cuda else ("mps" if "mps" in devices else "cpu"))
    facts["baseline_key"] = baseline_key(facts, jetson, edge_profile)
    return facts


def baseline_key(facts: dict[str, object], jetson: JetsonFacts | None = None, edge_profile: EdgeProfile | None = None) -> str:
    """``<system>-<python>-<arch>-<hardware>[-<edge profile>]``, a valid directory name."""
    base = f"{platform.system()}-{platform.python_implementation()}-{'.'.join(platform.python_version_tuple()[:2])}-{platform.architecture()[0]}"
    if jetson is not None:
        hardware = jetson.key_suffix()
    elif facts.get("gpu_name"):
        hardware = f"cuda-{slug(str(facts['gpu_name']))}"
    elif facts.get("device_kind") == "mps":
        hardware = f"mps-{slug(str(facts['cpu_model']))}"
    else:
        hardware = f"cpu-{slug(str(facts['cpu_model']))}"
    key = f"{base}-{hardware}"
    if edge_profile is not None:
        key += f"-{edge_profile.key_suffix()}"
    return key
