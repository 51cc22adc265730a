"""Power samplers on fake sources: a sysfs RAPL tree, a fake tegrastats process, a fake pynvml."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.edge.jetson import JetsonFacts
from harness.edge.power import PowerReading, PowerUnavailable, energy_per_image_mj, input_power_mw, integrate
from harness.edge.samplers import NvmlSampler, PolledSampler, RaplSampler, TegrastatsSampler
from harness.edge.sources import pick_sampler

DATA = Path(__file__).parent / "data" / "jetson"
RANGE_UJ = 262143328850  # max_energy_range_uj of a real package-0 domain


def _domain(root: Path, name: str, dirname: str, energy_uj: int) -> Path:
    path = root / dirname
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{RANGE_UJ}\n")
    return path


def test_rapl_sums_packages_skips_subdomains_and_psys(tmp_path: Path) -> None:
    p0 = _domain(tmp_path, "package-0", "intel-rapl:0", 1_000_000)
    p1 = _domain(tmp_path, "package-1", "intel-rapl:1", 5_000_000)
    core = _domain(tmp_path, "core", "intel-rapl:0:0", 0)
    psys = _domain(tmp_path, "psys", "intel-rapl:2", 0)
    sampler = RaplSampler(tmp_path)
    assert sampler.source == "rapl:package-0+package-1"
    sampler.start()
    (p0 / "energy_uj").write_text("3000000\n")  # +2 J
    (p1 / "energy_uj").write_text("5500000\n")  # +0.5 J
    (core / "energy_uj").write_text("999999999\n")
    (psys / "energy_uj").write_text("999999999\n")
    reading = sampler.stop()
    assert reading.energy_j == pytest.approx(2.5)
    assert reading.mean_w == pytest.approx(2.5 / reading.duration_s)


def test_rapl_wraparound(tmp_path: Path) -> None:
    p0 = _domain(tmp_path, "package-0", "intel-rapl:0", RANGE_UJ - 1_000_000)
    sampler = RaplSampler(tmp_path)
    sampler.start()
    (p0 / "energy_uj").write_text("500000\n")  # wrapped: 1 J to the top, then 0.5 J
    assert sampler.stop().energy_j == pytest.approx(1.5)


def test_rapl_unavailable_reasons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PowerUnavailable, match="no RAPL package domains"):
        RaplSampler(tmp_path / "missing")
    _domain(tmp_path, "package-0", "intel-rapl:0", 1)
    real_read_text = Path.read_text

    def root_only(self: Path, *args: object, **kwargs: object) -> str:
        # What a non-root read of energy_uj does on Linux >= 5.10; simulated so the test
        # also runs as root, which can read anything.
        if self.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", root_only)
    with pytest.raises(PowerUnavailable, match=r"permission denied: .*intel-rapl:0/energy_uj"):
        RaplSampler(tmp_path)


def test_pick_sampler_reports_why_none(tmp_path: Path) -> None:
    sampler, reason = pick_sampler("cpu", None, rapl_root=tmp_path)
    assert sampler is None and "RAPL" in reason and str(tmp_path) in reason
    sampler, reason = pick_sampler("mps", None, rapl_root=tmp_path)
    assert sampler is None and "supported: cpu" in reason
    _domain(tmp_path, "package-0", "intel-rapl:0", 1)
    sampler, reason = pick_sampler("cpu", None, rapl_root=tmp_path)
    assert isinstance(sampler, RaplSampler)


def test_pick_sampler_on_jetson_without_tegrastats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("harness.edge.sources.shutil.which", lambda name: None)
    facts = JetsonFacts("NVIDIA Jetson Orin Nano Developer Kit", "36.3.0", "6.0", "15W", 0, None)
    sampler, reason = pick_sampler("cuda", facts)
    assert sampler is None and "tegrastats not on PATH" in reason and "jtop" in reason


def test_integrate_is_trapezoidal_and_scaled_to_window() -> None:
    reading = integrate([(1.0, 4.0), (2.0, 6.0), (3.0, 6.0)], start=0.5, stop=3.5, source="x")
    assert reading.mean_w == pytest.approx((5.0 + 6.0) / 2)  # area 11 J over 2 s
    assert reading.energy_j == pytest.approx(5.5 * 3.0)
    assert reading.samples == 3
    with pytest.raises(PowerUnavailable, match="no power sample"):
        integrate([], 0.0, 0.01, "x")


def test_input_rail_choice_per_board() -> None:
    assert input_power_mw({"VDD_IN": 4761, "VDD_SOC": 1428}) == (4761.0, "VDD_IN")
    assert input_power_mw({"POM_5V_IN": 900, "POM_5V_CPU": 123}) == (900.0, "POM_5V_IN")
    agx = {"VDD_GPU_SOC": 2340, "VDD_CPU_CV": 390, "VIN_SYS_5V0": 4025, "NC": 0}
    assert input_power_mw(agx) == (6755.0, "VDD_GPU_SOC+VDD_CPU_CV+VIN_SYS_5V0")
    with pytest.raises(PowerUnavailable, match="VDD_IN"):
        input_power_mw({"VDD_SOC": 1})


class _FakeTegrastats:
    """Emits recorded lines at a fixed pace, like ``tegrastats --interval`` does."""

    def __init__(self, lines: list[str], pace_s: float) -> None:
        self.command: list[str] = []
        self._lines, self._pace_s, self._stopped = lines, pace_s, False
        self.stdout = self._emit()

    def _emit(self) -> Iterator[str]:
        for line in self._lines:
            if self._stopped:
                return
            yield line + "\n"
            time.sleep(self._pace_s)

    def terminate(self) -> None:
        self._stopped = True

    def wait(self) -> int:
        return 0


def test_tegrastats_sampler_integrates_input_rail() -> None:
    lines = (DATA / "orin_nano" / "tegrastats.log").read_text().splitlines()
    fake = _FakeTegrastats(["garbage line"] + lines[:2] * 3, pace_s=0.02)

    def popen(command: list[str]) -> _FakeTegrastats:
        fake.command = command
        return fake

    sampler = TegrastatsSampler(interval_ms=20, popen=popen)
    sampler.start()
    time.sleep(0.2)
    reading = sampler.stop()
    assert fake.command == ["tegrastats", "--interval", "20"]
    assert reading.source == "tegrastats:VDD_IN"
    assert reading.samples == 6
    assert reading.mean_w == pytest.approx(4.761)  # both recorded lines read VDD_IN 4761 mW
    assert reading.energy_j == pytest.approx(4.761 * reading.duration_s)


def _fake_nvml(energy_supported: bool) -> SimpleNamespace:
    class NVMLError(Exception):
        pass

    state = {"energy_mj": 10_000, "power_mw": 70_000}

    def energy(handle: object) -> int:
        if not energy_supported:
            raise NVMLError("Not Supported")
        return state["energy_mj"]

    return SimpleNamespace(
        NVMLError=NVMLError,
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByIndex=lambda index: f"gpu{index}",
        nvmlDeviceGetTotalEnergyConsumption=energy,
        nvmlDeviceGetPowerUsage=lambda handle: state["power_mw"],
        state=state,
    )


def test_nvml_energy_counter_difference() -> None:
    nvml = _fake_nvml(energy_supported=True)
    sampler = NvmlSampler(0, nvml=nvml)
    sampler.start()
    nvml.state["energy_mj"] += 2_500  # 2.5 J
    reading = sampler.stop()
    assert reading.source == "nvml:energy" and reading.energy_j == pytest.approx(2.5)


def test_nvml_falls_back_to_polling_power() -> None:
    sampler = NvmlSampler(1, nvml=_fake_nvml(energy_supported=False), poll_interval_s=0.01)
    sampler.start()
    time.sleep(0.1)
    reading = sampler.stop()
    assert reading.source == "nvml:power" and reading.samples >= 3
    assert reading.mean_w == pytest.approx(70.0)


def test_nvml_open_failure_is_unavailable() -> None:
    nvml = _fake_nvml(energy_supported=True)

    def no_gpu(index: int) -> object:
        raise nvml.NVMLError("Invalid Argument")

    nvml.nvmlDeviceGetHandleByIndex = no_gpu
    with pytest.raises(PowerUnavailable, match="cannot open GPU 3"):
        NvmlSampler(3, nvml=nvml)


def test_polled_sampler_and_energy_per_image() -> None:
    sampler = PolledSampler(lambda: 2.0, 0.01, "fake")
    sampler.start()
    time.sleep(0.05)
    reading = sampler.stop()
    assert reading.mean_w == pytest.approx(2.0)
    assert energy_per_image_mj(PowerReading(2.0, 0.5, 0.25, "x", 3), 100) == pytest.approx(5.0)
    with pytest.raises(ValueError, match="positive"):
        energy_per_image_mj(reading, 0)


# Four GPUs on PCI buses 17, 3B, 86, AF: NVML numbers them in bus order (0..3); CUDA numbers
# them fastest first (here AF, 86, 17, 3B), and CUDA_VISIBLE_DEVICES picks among CUDA's numbers.
_NVML_BUSES = ("00000000:17:00.0", "00000000:3B:00.0", "00000000:86:00.0", "00000000:AF:00.0")
_CUDA_ORDER_BUSES = (0xAF, 0x86, 0x17, 0x3B)


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, current: int, visible: str | None, *, bus_ids: bool = True) -> SimpleNamespace:
    """A fake pynvml (energy per GPU) and fake torch.cuda device queries, installed."""
    import sys

    import torch

    nvml = _fake_nvml(energy_supported=True)
    energy_mj = {f"gpu{i}": 1_000_000 * (i + 1) for i in range(len(_NVML_BUSES))}
    nvml.nvmlDeviceGetHandleByIndex = lambda index: f"gpu{index}"
    nvml.nvmlDeviceGetTotalEnergyConsumption = lambda handle: energy_mj[handle]

    def by_bus(bus_id: str) -> str:
        if bus_id not in _NVML_BUSES:
            raise nvml.NVMLError("Not Found")
        return f"gpu{_NVML_BUSES.index(bus_id)}"

    nvml.nvmlDeviceGetHandleByPciBusId = by_bus
    nvml.nvmlDeviceGetIndex = lambda handle: int(handle[3:])
    nvml.energy_mj = energy_mj
    ordinals = [int(v) for v in visible.split(",")] if visible is not None else list(range(len(_CUDA_ORDER_BUSES)))

    def properties(index: int) -> SimpleNamespace:
        bus = _CUDA_ORDER_BUSES[ordinals[index]]
        return SimpleNamespace(pci_domain_id=0, pci_bus_id=bus, pci_device_id=0) if bus_ids else SimpleNamespace()

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    monkeypatch.setattr(torch.cuda, "get_device_properties", properties)
    return nvml


def _energy_read(sampler: object, nvml: SimpleNamespace) -> float:
    """Energy the sampler reads while every fake GPU spends a different amount (GPU i: i + 1 J)."""
    assert isinstance(sampler, NvmlSampler)
    sampler.start()
    for handle in nvml.energy_mj:
        nvml.energy_mj[handle] += 1000 * (int(handle[3:]) + 1)
    return sampler.stop().energy_j


def test_pick_sampler_cuda_without_index_reads_the_current_device(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under xdist the plugin calls torch.cuda.set_device(N) and the case's device stays "cuda".
    nvml = _fake_gpus(monkeypatch, current=1, visible=None)
    sampler, reason = pick_sampler("cuda", None)
    # no CUDA_VISIBLE_DEVICES: torch 1 is CUDA ordinal 1, bus 86, NVML GPU 2 (bus order)
    assert _energy_read(sampler, nvml) == pytest.approx(3.0), reason
    assert "torch cuda:1 is NVML GPU 2 (PCI 00000000:86:00.0)" in reason


def test_pick_sampler_maps_torch_index_to_nvml_by_pci_bus_id(monkeypatch: pytest.MonkeyPatch) -> None:
    # NVML ignores CUDA_VISIBLE_DEVICES: torch cuda:2 is CUDA ordinal 0 here, bus AF, NVML GPU 3
    # (not 2, the torch index, nor 0, the visible ordinal, which holds only in PCI order).
    nvml = _fake_gpus(monkeypatch, current=0, visible="3,1,0")
    sampler, reason = pick_sampler("cuda:2", None)
    assert _energy_read(sampler, nvml) == pytest.approx(4.0), reason
    assert "torch cuda:2 is NVML GPU 3 (PCI 00000000:AF:00.0)" in reason
    sampler, reason = pick_sampler("cuda", None)  # current device 0: CUDA ordinal 3, bus 3B, NVML 1
    assert _energy_read(sampler, nvml) == pytest.approx(2.0), reason
    with pytest.raises(ValueError, match="cuda:N"):
        pick_sampler("cuda:x", None)


def test_pick_sampler_without_bus_ids_falls_back_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    nvml = _fake_gpus(monkeypatch, current=1, visible="3,1,0", bus_ids=False)
    # torch's own CUDA_VISIBLE_DEVICES mapping, where this torch has it: torch 1 -> ordinal 1
    monkeypatch.setattr(torch.cuda, "_get_nvml_device_index", lambda index: [3, 1, 0][index], raising=False)
    sampler, reason = pick_sampler("cuda", None)
    assert _energy_read(sampler, nvml) == pytest.approx(2.0), reason
    assert "no PCI bus id" in reason and "NVML GPU 1 by CUDA_VISIBLE_DEVICES" in reason
    # neither mapping: the torch index stands for the NVML index, and the reason says so
    monkeypatch.delattr(torch.cuda, "_get_nvml_device_index", raising=False)
    sampler, reason = pick_sampler("cuda:2", None)
    assert _energy_read(sampler, nvml) == pytest.approx(3.0), reason
    assert "NVML GPU 2 assumed to be torch cuda:2" in reason

    def no_cuda() -> int:
        raise RuntimeError("Found no NVIDIA driver on your system")

    monkeypatch.setattr(torch.cuda, "current_device", no_cuda)
    sampler, reason = pick_sampler("cuda", None)
    assert _energy_read(sampler, nvml) == pytest.approx(1.0), reason
    assert "Found no NVIDIA driver" in reason and "cuda:0" in reason
