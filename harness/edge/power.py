"""Power readings and their arithmetic: what a sampler returns, and how samples become energy.

A sampler (:mod:`harness.edge.samplers`, chosen by :func:`harness.edge.sources.pick_sampler`) is
started before the measured loop and stopped after it; ``stop()`` returns a :class:`PowerReading`.
Counter sources (NVML energy, RAPL) difference an energy counter; polled sources (tegrastats,
jtop, NVML power) integrate power samples over time with :func:`integrate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# Input rails that measure the whole module, in order of preference: Orin Nano/NX, Xavier NX
# and TX2 print VDD_IN; Nano prints POM_5V_IN. AGX boards have no single input rail, so the
# module is the sum of its rails (NVIDIA's AGX Orin / AGX Xavier power-monitor tables).
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
_MODULE_RAIL_SETS = (("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"), ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"))


class PowerUnavailable(RuntimeError):
    """No power reading could be taken; the message says why and what would fix it."""


@dataclass(frozen=True)
class PowerReading:
    """Mean power and energy over one measured interval."""

    mean_w: float
    energy_j: float
    duration_s: float
    source: str
    samples: int


class PowerSampler(Protocol):
    """Anything that can bracket a measured loop with ``start()`` / ``stop()``."""

    def start(self) -> None: ...

    def stop(self) -> PowerReading: ...


def energy_per_image_mj(reading: PowerReading, images: int) -> float:
    """Millijoules per image: the reading's energy over the images processed while it ran."""
    if images <= 0:
        raise ValueError(f"images must be a positive count of images processed during the reading, got {images}")
    return reading.energy_j * 1000.0 / images


def integrate(samples: Sequence[tuple[float, float]], start: float, stop: float, source: str) -> PowerReading:
    """Trapezoidal energy of ``(time_s, watts)`` samples, scaled to the ``start..stop`` window.

    The time-weighted mean power over the samples' span stands for the whole window, so a
    window that starts before the first sample is not under-counted.
    """
    duration = stop - start
    if not samples:
        raise PowerUnavailable(
            f"{source}: no power sample arrived in {duration:.3f} s; measure a longer loop or sample more often"
        )
    if len(samples) == 1:
        mean_w = samples[0][1]
    else:
        span = samples[-1][0] - samples[0][0]
        area = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:], strict=False))
        mean_w = area / span if span > 0 else sum(w for _, w in samples) / len(samples)
    return PowerReading(mean_w, mean_w * duration, duration, source, len(samples))


def input_power_mw(rails_mw: dict[str, int]) -> tuple[float, str]:
    """``(mW, rail label)`` for the whole module from one tegrastats line's rails."""
    for rail in _INPUT_RAILS:
        if rail in rails_mw:
            return float(rails_mw[rail]), rail
    for rail_set in _MODULE_RAIL_SETS:
        if all(rail in rails_mw for rail in rail_set):
            return float(sum(rails_mw[rail] for rail in rail_set)), "+".join(rail_set)
    raise PowerUnavailable(
        f"no module input rail among {sorted(rails_mw)}; expected one of {list(_INPUT_RAILS)} "
        f"or all of {[list(s) for s in _MODULE_RAIL_SETS]}"
    )


__all__ = ["PowerReading", "PowerSampler", "PowerUnavailable", "energy_per_image_mj", "integrate", "input_power_mw"]
