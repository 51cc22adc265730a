"""The host's fingerprint and calibration: what a timed number's machine was, beyond its baseline key.

The baseline key names the CPU model string, which a cloud VM shares with hosts of very different
speed and instruction sets. The fingerprint records what decides which kernels torch runs
(``torch.backends.cpu.get_cpu_capability()``, which honours ``ATEN_CPU_CAPABILITY``; the CPU flags
that pick oneDNN/MKL kernels), the cores, caches and memory, and the GPU. The calibration is a
fixed set of short single-thread microbenchmarks (GEMM, memory copy, a small conv, an elementwise
kernel) whose times place this session's machine among others of the same fingerprint.
:mod:`harness.results.hosts` reads both from ``machine_info['host']`` to group runs into host classes.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

# The version of the fingerprint record and of the calibration: runs calibrated by other
# microbenchmarks have scores on another scale, so hosts.py compares scores of one version only.
HOST_SCHEMA = 1
# CPU flags (as /proc/cpuinfo names them) that change which kernels torch, oneDNN and MKL pick;
# the rest of the flag list (sse, aes, ...) never changes a latency of this suite.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")
# Repetitions per microbenchmark; the fastest is reported: the calibration places the hardware, and
# on a shared VM other tenants only ever add time (a median of 5 moved 1.6x between two sessions
# here under 4 sessions' load, mostly the memory copy). 7 keeps the whole near 0.3 s (budget: 2 s).
CAL_REPS = 7
_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")


def _cpu_flags() -> list[str]:
    """The kernel-picking flags of the first CPU in /proc/cpuinfo (x86 ``flags``, arm ``Features``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            present = set(value.split())
            return [flag for flag in KERNEL_FLAGS if flag in present]
    return []


def _caches() -> dict[str, str]:
    """Cache sizes of cpu0 by level and type (``L1d``, ``L2``, ``L3``), as the kernel states them."""
    found: dict[str, str] = {}
    for index in sorted(_CACHE.glob("index*")):
        try:
            level = (index / "level").read_text().strip()
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        suffix = {"Data": "d", "Instruction": "i"}.get(kind, "")
        found[f"L{level}{suffix}"] = size
    return found


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def _gpu() -> dict[str, object] | None:
    """Name, memory and the maximum SM clock of GPU 0 (the clock through NVML when installed)."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    gpu: dict[str, object] = {"name": props.name, "memory_bytes": int(props.total_memory), "count": torch.cuda.device_count(),
                              "sm_clock_max_mhz": None}
    try:
        nvml: Any = importlib.import_module("pynvml")
        nvml.nvmlInit()
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        gpu["sm_clock_max_mhz"] = int(nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM))
    except Exception:  # noqa: BLE001 - NVML absent or refusing: the clock is simply not recorded
        pass
    return gpu


def _fastest_ms(work: Callable[[], object]) -> float:
    work()  # one warm-up: allocations, lazy kernel selection
    times = []
    for _ in range(CAL_REPS):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def calibrate() -> dict[str, float]:
    """The fastest of :data:`CAL_REPS` milliseconds of each microbenchmark on one thread, and their geometric mean ``score_ms``.

    Sizes: each a few milliseconds on a 2024 server core, long enough to rise above timer and
    scheduler noise, short enough for the whole to stay well under 2 s on a slow VM.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the score places a core, not how many a VM lends right now
    try:
        gen = torch.Generator().manual_seed(0)
        a, b = torch.rand(256, 256, generator=gen), torch.rand(256, 256, generator=gen)  # 33.6 MFLOP: BLAS sgemm
        src = torch.rand(16 * 2**20, generator=gen)  # 64 MiB: far beyond any L3, so it measures memory
        dst = torch.empty_like(src)
        image, weight = torch.rand(1, 32, 56, 56, generator=gen), torch.rand(32, 32, 3, 3, generator=gen)  # 58 MFLOP conv
        vec = torch.rand(2**20, generator=gen)  # 4 MiB: ATen's vectorised kernels, the ones ATEN_CPU_CAPABILITY picks
        with torch.inference_mode():
            times = {
                "gemm_ms": _fastest_ms(lambda: torch.mm(a, b)),
                "copy_ms": _fastest_ms(lambda: dst.copy_(src)),
                "conv_ms": _fastest_ms(lambda: torch.nn.functional.conv2d(image, weight, padding=1)),
                "elementwise_ms": _fastest_ms(lambda: torch.sigmoid(vec)),
            }
    finally:
        torch.set_num_threads(threads)
    score = math.exp(statistics.fmean(math.log(max(t, 1e-6)) for t in times.values()))
    return {**{k: round(v, 4) for k, v in times.items()}, "score_ms": round(score, 4)}


@functools.cache
def host_fingerprint() -> dict[str, object]:
    """This process's host record for ``machine_info['host']``; calibrated once per process (cached)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 0
    return {
        "schema": HOST_SCHEMA,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "capability_forced": os.environ.get("ATEN_CPU_CAPABILITY") or None,
        "cpu_flags": _cpu_flags(),
        "cpus": cpus,
        "torch_threads": torch.get_num_threads(),
        "caches": _caches(),
        "memory_bytes": _memory_bytes(),
        "gpu": _gpu(),
        "calibration": calibrate(),
    }
