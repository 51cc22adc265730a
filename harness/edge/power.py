"""Measure the energy a benchmark spends, from whatever power source the machine offers.

Each sampler is started before the measured loop and stopped after it; ``stop()`` returns a
:class:`PowerReading`. Counter sources (NVML energy, RAPL) difference an energy counter;
polled sources (tegrastats, jtop, NVML power) integrate power samples over time.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from harness.edge.jetson import JetsonFacts, JetsonParseError, parse_tegrastats

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


class PolledSampler:
    """Calls ``read_w()`` every ``interval_s`` in a thread and integrates the watts."""

    def __init__(self, read_w: Callable[[], float], interval_s: float, source: str) -> None:
        self._read_w, self._interval_s, self.source = read_w, interval_s, source
        self._samples: list[tuple[float, float]] = []
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def start(self) -> None:
        self._samples, self._halt = [], threading.Event()
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name=f"power-{self.source}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            self._samples.append((time.monotonic(), self._read_w()))
            if self._halt.wait(self._interval_s):
                return

    def stop(self) -> PowerReading:
        stopped = time.monotonic()
        self._halt.set()
        if self._thread is not None:
            self._thread.join()
        return integrate(self._samples, self._started, stopped, self.source)


class TegrastatsSampler:
    """Runs ``tegrastats --interval N`` and integrates the module input rail of each line."""

    def __init__(
        self,
        interval_ms: int = 100,  # 100 ms: 10 samples in a 1 s loop; tegrastats' own default is 1 s
        popen: Callable[[list[str]], Any] | None = None,
    ) -> None:
        self._interval_ms = interval_ms
        self._popen = popen or (lambda cmd: subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1))
        self._samples: list[tuple[float, float]] = []
        self._rail = "VDD_IN"
        self._proc: Any = None
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def start(self) -> None:
        self._samples = []
        self._proc = self._popen(["tegrastats", "--interval", str(self._interval_ms)])
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                milliwatts, self._rail = input_power_mw(parse_tegrastats(line).rails_mw)
            except (JetsonParseError, PowerUnavailable):
                continue
            self._samples.append((time.monotonic(), milliwatts / 1000.0))

    def stop(self) -> PowerReading:
        stopped = time.monotonic()
        self._proc.terminate()
        self._proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return integrate([s for s in self._samples if s[0] <= stopped], self._started, stopped, f"tegrastats:{self._rail}")


class JtopSampler(PolledSampler):
    """Polls jetson-stats' ``jtop`` total board power (``power['tot']['power']``, mW)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        from jtop import jtop  # optional: only on Jetsons

        self._make = jtop
        self._client: Any = None
        super().__init__(lambda: float(self._client.power["tot"]["power"]) / 1000.0, interval_s, "jtop:tot")

    def start(self) -> None:
        self._client = self._make()
        self._client.start()
        super().start()

    def stop(self) -> PowerReading:
        try:
            return super().stop()
        finally:
            self._client.close()


class NvmlSampler:
    """GPU energy from NVML: the Volta+ energy counter, else polled power (mW) integrated."""

    def __init__(self, device_index: int = 0, nvml: Any = None, poll_interval_s: float = 0.05) -> None:
        if nvml is None:
            import pynvml

            nvml = pynvml
        self._nvml = nvml
        try:
            nvml.nvmlInit()
            self._handle = nvml.nvmlDeviceGetHandleByIndex(device_index)
        except nvml.NVMLError as error:
            raise PowerUnavailable(f"NVML cannot open GPU {device_index}: {error}") from error
        self._counter = True
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # mJ since driver load, Volta+
        except nvml.NVMLError:
            self._counter = False
            try:
                nvml.nvmlDeviceGetPowerUsage(self._handle)
            except nvml.NVMLError as error:
                raise PowerUnavailable(f"NVML GPU {device_index} reports neither energy nor power: {error}") from error
        # 50 ms: Ampere+ averages power over 1 s anyway, so polling faster buys nothing.
        self._poll = PolledSampler(
            lambda: nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0, poll_interval_s, "nvml:power"
        )
        self._start_mj, self._started = 0, 0.0

    def start(self) -> None:
        if self._counter:
            self._start_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self._started = time.monotonic()
        else:
            self._poll.start()

    def stop(self) -> PowerReading:
        if not self._counter:
            return self._poll.stop()
        energy_j = (self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle) - self._start_mj) / 1000.0
        duration = time.monotonic() - self._started
        return PowerReading(energy_j / duration if duration > 0 else 0.0, energy_j, duration, "nvml:energy", 2)


def _package_domains(root: Path) -> list[Path]:
    """Top-level ``intel-rapl:N`` package domains (psys is excluded: it already contains them)."""
    domains = []
    for path in sorted(root.glob("intel-rapl:*")):
        if path.name.count(":") == 1 and (path / "name").is_file():
            if (path / "name").read_text().strip().startswith("package"):
                domains.append(path)
    return domains


class RaplSampler:
    """CPU package energy from the Linux powercap RAPL counters (``energy_uj``)."""

    def __init__(self, root: Path = Path("/sys/class/powercap")) -> None:
        self._domains = _package_domains(root) if root.is_dir() else []
        if not self._domains:
            raise PowerUnavailable(f"no RAPL package domains (intel-rapl:N with name package-*) under {root}")
        try:
            self._ranges = [int((d / "max_energy_range_uj").read_text()) for d in self._domains]
            self._read()
        except PermissionError as error:
            # Since Linux 5.10 energy_uj is root-only (CVE-2020-8694, "Platypus").
            raise PowerUnavailable(
                f"no RAPL powercap domains readable at {root} (permission denied: {error.filename}); "
                "run as root or grant read access to energy_uj"
            ) from error
        self.source = "rapl:" + "+".join((d / "name").read_text().strip() for d in self._domains)
        self._start: list[int] = []
        self._started = 0.0

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self._domains]

    def start(self) -> None:
        self._start, self._started = self._read(), time.monotonic()

    def stop(self) -> PowerReading:
        end, duration = self._read(), time.monotonic() - self._started
        # One wrap is corrected; a package-0 range is ~262 kJ, i.e. > 40 min at 100 W.
        total_uj = sum(b - a if b >= a else b + r - a for a, b, r in zip(self._start, end, self._ranges, strict=True))
        energy_j = total_uj / 1e6
        return PowerReading(energy_j / duration if duration > 0 else 0.0, energy_j, duration, self.source, 2)


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


__all__ = [
    "PowerReading", "PowerSampler", "PowerUnavailable", "PolledSampler", "TegrastatsSampler", "JtopSampler",
    "NvmlSampler", "RaplSampler", "pick_sampler", "nvml_index", "energy_per_image_mj", "integrate", "input_power_mw",
]
