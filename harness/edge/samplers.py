"""The power sampler backends: tegrastats and jtop on a Jetson, NVML on an NVIDIA GPU, RAPL on a CPU.

Each implements :class:`harness.edge.power.PowerSampler` (``start()``, then ``stop()`` returning a
:class:`harness.edge.power.PowerReading`) and raises :class:`harness.edge.power.PowerUnavailable`,
saying why, when its source cannot be read. :func:`harness.edge.sources.pick_sampler` chooses one.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from harness.edge.jetson import JetsonParseError, parse_tegrastats
from harness.edge.power import PowerReading, PowerUnavailable, input_power_mw, integrate


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


__all__ = ["JtopSampler", "NvmlSampler", "PolledSampler", "RaplSampler", "TegrastatsSampler"]
