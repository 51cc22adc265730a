"""Edge-constraint profiles: run a benchmark with the threads, cores and memory of a target board.

``--edge-profile orin-nano-8gb`` or ``--edge-profile threads=4,mem=2GiB,cpus=0-3`` becomes an
:class:`EdgeProfile`; :func:`apply` imposes it for the duration of a block and
:func:`check_budget` fails a case whose peak memory would not fit on the board.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from harness.contract import slug, unknown

# Units are matched case-insensitively; the keys are how messages spell them.
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_UNITS_LOWER = {unit.lower(): size for unit, size in _UNITS.items()}
_KEYS = ("threads", "mem", "cuda_mem_fraction", "cpus")


class EdgeProfileError(ValueError):
    """A profile string or its application is invalid; the message names the valid choices."""


class MemoryBudgetExceeded(AssertionError):
    """A measured peak is over the profile's memory budget (a failed check, hence AssertionError)."""

    def __init__(self, peak_bytes: int, budget_bytes: int, profile_name: str) -> None:
        over = peak_bytes - budget_bytes
        self.peak_bytes, self.budget_bytes, self.over_bytes = peak_bytes, budget_bytes, over
        super().__init__(
            f"peak memory {peak_bytes / 2**20:.1f} MiB exceeds the {profile_name} budget "
            f"{budget_bytes / 2**20:.1f} MiB by {over / 2**20:.1f} MiB ({100 * over / budget_bytes:.1f}%)"
        )


@dataclass(frozen=True)
class EdgeProfile:
    """Threads, CPU affinity and memory a benchmark may use."""

    name: str
    threads: int
    cpus: frozenset[int] | None
    mem_budget_bytes: int
    cuda_mem_fraction: float | None

    def as_record(self) -> dict[str, object]:
        """Keys for ``extra_info`` / ``machine_info``."""
        return {
            "edge_profile": self.name,
            "edge_threads": self.threads,
            "edge_cpus": format_cpus(self.cpus) if self.cpus else None,
            "edge_mem_budget_bytes": self.mem_budget_bytes,
            "edge_cuda_mem_fraction": self.cuda_mem_fraction,
        }

    def key_suffix(self) -> str:
        """A slug for baseline keys, e.g. ``orin-nano-8gb`` or ``t4-mem2048mib-cpus0-3``."""
        return slug(self.name)


# Memory: Jetsons share LPDDR between CPU and GPU, so one budget covers both, and the
# budget is what is left after JetPack's idle desktop (tegrastats shows ~0.8-2.4 GB used
# at idle on an Orin Nano, RAM total 7620 MB). cuda_mem_fraction caps PyTorch's CUDA caching
# allocator to that same share of the device memory CUDA reports (the shared RAM).
NAMED_PROFILES: dict[str, EdgeProfile] = {
    # Orin Nano 8 GB: 6x Cortex-A78AE, 8 GB LPDDR5 (7620 MB usable per tegrastats); keep 1.5 GiB for OS.
    "orin-nano-8gb": EdgeProfile("orin-nano-8gb", 6, None, 6 * 2**30, 0.75),
    # Orin NX 16 GB: 8x Cortex-A78AE, 16 GB LPDDR5 (15598 MB usable per tegrastats); keep ~2 GiB for OS.
    "orin-nx-16gb": EdgeProfile("orin-nx-16gb", 8, None, 13 * 2**30, 0.8),
    # Jetson Nano 4 GB: 4x Cortex-A57, 4 GB LPDDR4 (3964 MB usable per tegrastats); keep ~1.3 GiB for OS.
    "jetson-nano-4gb": EdgeProfile("jetson-nano-4gb", 4, None, int(2.5 * 2**30), 0.6),
    # Raspberry Pi 5 8 GB: 4x Cortex-A76, no CUDA; keep 2 GiB for OS, camera and ROS nodes.
    "rpi5-8gb": EdgeProfile("rpi5-8gb", 4, None, 6 * 2**30, None),
    # Raspberry Pi 4 4 GB: 4x Cortex-A72, no CUDA; keep 1 GiB for OS and camera stack.
    "rpi4-4gb": EdgeProfile("rpi4-4gb", 4, None, 3 * 2**30, None),
}


def parse_bytes(text: str) -> int:
    """``2GiB`` -> 2147483648. Units: B, KB, MB, GB (10^3 steps) and KiB, MiB, GiB (2^10 steps)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if match is None or not match.group(2):
        raise EdgeProfileError(f"memory size {text!r} needs a number and a unit, e.g. 2GiB or 512MiB; units: B KB MB GB KiB MiB GiB")
    unit = match.group(2).lower()
    if unit not in _UNITS_LOWER:
        raise EdgeProfileError(unknown("memory unit", match.group(2), _UNITS))
    return int(float(match.group(1)) * _UNITS_LOWER[unit])


def parse_cpus(text: str) -> frozenset[int]:
    """``0-3,6`` -> {0, 1, 2, 3, 6} (Linux cpulist syntax)."""
    cpus: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise EdgeProfileError(f"cpus={text!r} is not a CPU list like 0-3 or 0,2,4-5")
        low = int(match.group(1))
        cpus.update(range(low, int(match.group(2) or low) + 1))
    return frozenset(cpus)


def format_cpus(cpus: frozenset[int]) -> str:
    """{0, 1, 2, 3, 6} -> ``0-3,6``."""
    ordered, runs = sorted(cpus), []
    start = prev = ordered[0]
    for cpu in ordered[1:] + [-2]:
        if cpu != prev + 1:
            runs.append(f"{start}-{prev}" if prev > start else str(start))
            start = cpu
        prev = cpu
    return ",".join(runs)


def _custom(text: str) -> EdgeProfile:
    # "cpus=0,2" would split at its comma, so a piece without "=" continues the previous value.
    values: dict[str, str] = {}
    last = None
    for piece in text.split(","):
        key, sep, value = piece.partition("=")
        if not sep:
            if last != "cpus":
                raise EdgeProfileError(f"{piece!r} in {text!r} is not key=value; keys: {', '.join(_KEYS)}")
            values["cpus"] += "," + piece
            continue
        key = key.strip().lower()
        if key not in _KEYS:
            raise EdgeProfileError(unknown("edge-profile key", key, _KEYS))
        values[key], last = value.strip(), key
    missing = [k for k in ("threads", "mem") if k not in values]
    if missing:
        raise EdgeProfileError(f"edge profile {text!r} lacks {', '.join(missing)}; e.g. threads=4,mem=2GiB")
    if not values["threads"].isdigit() or int(values["threads"]) < 1:
        raise EdgeProfileError(f"threads={values['threads']!r} must be a whole number >= 1")
    threads, mem = int(values["threads"]), parse_bytes(values["mem"])
    fraction = None
    if "cuda_mem_fraction" in values:
        try:
            fraction = float(values["cuda_mem_fraction"])
        except ValueError:
            fraction = -1.0
        if not 0 < fraction <= 1:
            raise EdgeProfileError(f"cuda_mem_fraction={values['cuda_mem_fraction']!r} must be in (0, 1], e.g. 0.5")
    cpus = parse_cpus(values["cpus"]) if "cpus" in values else None
    name = f"t{threads}-mem{mem // 2**20}mib"
    name += f"-cuda{fraction:g}" if fraction is not None else ""
    name += f"-cpus{format_cpus(cpus)}" if cpus else ""
    return EdgeProfile(name, threads, cpus, mem, fraction)


def parse_edge_profile(text: str) -> EdgeProfile:
    """A named profile (``orin-nano-8gb``) or a custom one (``threads=4,mem=2GiB[,cuda_mem_fraction=0.5,cpus=0-3]``)."""
    if "=" in text:
        return _custom(text)
    name = text.strip().lower()
    if name in NAMED_PROFILES:
        return NAMED_PROFILES[name]
    raise EdgeProfileError(
        f"{unknown('edge profile', name, NAMED_PROFILES)}; or a custom profile: threads=4,mem=2GiB[,cuda_mem_fraction=0.5,cpus=0-3]"
    )


@dataclass(frozen=True)
class AppliedProfile:
    """What :func:`apply` actually set (CPUs after clamping to this machine)."""

    profile: EdgeProfile
    threads: int
    cpus: frozenset[int] | None
    cuda_mem_fraction: float | None


@contextmanager
def apply(profile: EdgeProfile, device: torch.device | str | None = None) -> Iterator[AppliedProfile]:
    """Impose ``profile`` (threads, affinity, CUDA memory fraction) inside the block; restore after.

    Requested CPUs are clamped to those this process may use; when none remain, raises
    :class:`EdgeProfileError` naming the usable set. ``device`` defaults to CUDA when available.
    """
    use_cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    allowed = frozenset(os.sched_getaffinity(0))
    cpus = None
    if profile.cpus is not None:
        cpus = profile.cpus & allowed
        if not cpus:
            raise EdgeProfileError(
                f"profile {profile.name} asks for cpus={format_cpus(profile.cpus)} but this process may only use "
                f"{format_cpus(allowed)}; pick cpus within that set"
            )
        if cpus != profile.cpus:
            warnings.warn(f"profile {profile.name}: cpus clamped to {format_cpus(cpus)} (available {format_cpus(allowed)})", stacklevel=3)
    usable = len(cpus or allowed)
    if profile.threads > usable:
        warnings.warn(f"profile {profile.name}: {profile.threads} threads on {usable} usable CPUs oversubscribes them", stacklevel=3)
    saved_threads = torch.get_num_threads()
    fraction = profile.cuda_mem_fraction if use_cuda else None
    try:
        # Affinity first: sched_setaffinity(0) binds the calling thread, and intra-op threads
        # that torch starts afterwards inherit its mask.
        if cpus is not None:
            os.sched_setaffinity(0, cpus)
        torch.set_num_threads(profile.threads)
        if fraction is not None:
            torch.cuda.set_per_process_memory_fraction(fraction)
        yield AppliedProfile(profile, profile.threads, cpus, fraction)
    finally:
        torch.set_num_threads(saved_threads)
        os.sched_setaffinity(0, allowed)
        if fraction is not None:
            torch.cuda.set_per_process_memory_fraction(1.0)


def check_budget(peak_bytes: int, profile: EdgeProfile) -> None:
    """Raise :class:`MemoryBudgetExceeded` when ``peak_bytes`` is over the profile's budget."""
    if peak_bytes > profile.mem_budget_bytes:
        raise MemoryBudgetExceeded(peak_bytes, profile.mem_budget_bytes, profile.name)
