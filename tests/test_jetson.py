"""Jetson detection on recorded real-format samples (see tests/data/jetson/README.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.edge.jetson import (
    JetsonFacts,
    JetsonParseError,
    board_slug,
    jetson_facts,
    parse_device_tree_model,
    parse_jetson_clocks,
    parse_nvpmodel,
    parse_tegra_release,
    parse_tegrastats,
)

DATA = Path(__file__).parent / "data" / "jetson"


def _fake_root(tmp_path: Path, board: str) -> Path:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "etc").mkdir()
    (tmp_path / "proc/device-tree/model").write_bytes((DATA / board / "model").read_bytes())
    (tmp_path / "etc/nv_tegra_release").write_bytes((DATA / board / "nv_tegra_release").read_bytes())
    return tmp_path


def _runner(board: str):
    outputs = {
        ("nvpmodel", "-q"): (DATA / board / "nvpmodel_q.txt").read_text(),
        ("jetson_clocks", "--show"): (DATA / board / "jetson_clocks_show.txt").read_text(),
    }
    return lambda command: outputs[tuple(command)]


@pytest.mark.parametrize(
    ("board", "expected", "suffix"),
    [
        ("orin_nano", JetsonFacts("NVIDIA Jetson Orin Nano Developer Kit", "36.4.3", "6.2", "15W", 0, False), "jetson-orin-nano-15w"),
        ("agx_orin", JetsonFacts("NVIDIA Jetson AGX Orin Developer Kit", "39.2.0", "7.2", "MAXN", 0, True), "jetson-agx-orin-maxn"),
        ("xavier_nx", JetsonFacts("NVIDIA Jetson Xavier NX Developer Kit", "35.4.1", "5.1.2", "MODE_10W_DESKTOP", 5, None), "jetson-xavier-nx-mode-10w-desktop"),
        ("nano", JetsonFacts("NVIDIA Jetson Nano Developer Kit", "32.7.1", "4.6.1", "5W", 1, False), "jetson-nano-5w"),
    ],
)
def test_jetson_facts_on_recorded_boards(tmp_path: Path, board: str, expected: JetsonFacts, suffix: str) -> None:
    facts = jetson_facts(_fake_root(tmp_path, board), run=_runner(board))
    assert facts == expected
    assert facts.key_suffix() == suffix
    info = facts.as_machine_info()
    assert info["jetson_power_mode"] == expected.power_mode and info["jetson_l4t"] == expected.l4t


def test_power_modes_give_different_baseline_keys() -> None:
    base = JetsonFacts("NVIDIA Jetson Orin Nano Developer Kit", "36.3.0", "6.0", "15W", 0, True)
    maxn = JetsonFacts(base.model, base.l4t, base.jetpack, "MAXN_SUPER", 2, True)
    assert base.key_suffix() != maxn.key_suffix() == "jetson-orin-nano-maxn-super"


def test_not_a_jetson_returns_none_without_running_tools(tmp_path: Path) -> None:
    def boom(command: list[str]) -> str:
        raise AssertionError(f"must not run {command}")

    assert jetson_facts(tmp_path, run=boom) is None
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    assert jetson_facts(tmp_path, run=boom) is None


def test_missing_tools_leave_fields_unknown(tmp_path: Path) -> None:
    def missing(command: list[str]) -> str:
        raise FileNotFoundError(command[0])

    facts = jetson_facts(_fake_root(tmp_path, "orin_nano"), run=missing)
    assert facts is not None and (facts.power_mode, facts.power_mode_id, facts.clocks_locked) == (None, None, None)
    assert facts.key_suffix() == "jetson-orin-nano-unknown-mode"


def test_tool_timeout_is_tolerated(tmp_path: Path) -> None:
    def slow(command: list[str]) -> str:
        raise subprocess.TimeoutExpired(command, 5)

    facts = jetson_facts(_fake_root(tmp_path, "nano"), run=slow)
    assert facts is not None and facts.l4t == "32.7.1" and facts.power_mode is None


def test_parse_tegra_release_variants() -> None:
    assert parse_tegra_release("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64") == ("36.3.0", "6.0")
    assert parse_tegra_release("# R35 (release), REVISION: 4.1") == ("35.4.1", "5.1.2")
    assert parse_tegra_release("# R32 (release), REVISION: 5") == ("32.5.0", "4.5")
    assert parse_tegra_release("# R36 (release), REVISION: 9.9") == ("36.9.9", "6.x")  # unknown minor: major only
    with pytest.raises(JetsonParseError, match="REVISION"):
        parse_tegra_release("Ubuntu 22.04")


def test_parse_device_tree_model_strips_nul_and_rejects_empty() -> None:
    assert parse_device_tree_model(b"NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\x00") == (
        "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"
    )
    assert board_slug("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super") == "jetson-orin-nano-super"
    with pytest.raises(JetsonParseError):
        parse_device_tree_model(b"\x00")


def test_parse_nvpmodel_verbose_and_bad() -> None:
    verbose = "NVPM VERB: Config file: /etc/nvpmodel.conf\nNVPM VERB: Current mode: NV Power Mode: 25W\n1\nNVPM VERB: PARAM CPU_ONLINE"
    assert parse_nvpmodel(verbose) == ("25W", 1)
    with pytest.raises(JetsonParseError, match="NV Power Mode"):
        parse_nvpmodel("command not found")


def test_jetson_clocks_rule_uses_online_cpus_and_gpu() -> None:
    locked = (DATA / "agx_orin" / "jetson_clocks_show.txt").read_text()
    assert parse_jetson_clocks(locked) is True
    # One core scaling below the pinned value breaks the lock.
    assert parse_jetson_clocks(locked.replace("CurrentFreq=2201600", "CurrentFreq=1113600", 1)) is False
    # GPU floor below ceiling breaks it even with every CPU pinned (the Nano 5 W sample).
    assert parse_jetson_clocks((DATA / "nano" / "jetson_clocks_show.txt").read_text()) is False
    nano_locked = (DATA / "nano" / "jetson_clocks_show.txt").read_text().replace("MinFreq=76800000", "MinFreq=614400000")
    assert parse_jetson_clocks(nano_locked) is True  # offline cpu2/cpu3 are ignored
    assert parse_jetson_clocks("Error: Run this script(/usr/bin/jetson_clocks) as a root user\n") is None


def test_parse_tegrastats_fields() -> None:
    orin = parse_tegrastats((DATA / "orin_nano" / "tegrastats.log").read_text().splitlines()[3])
    assert orin.rails_mw == {"VDD_IN": 12479, "VDD_CPU_GPU_CV": 4667, "VDD_SOC": 2817}
    assert (orin.ram_used_mb, orin.ram_total_mb, orin.gpu_load_pct) == (6185, 7620, 63)
    nx = parse_tegrastats((DATA / "xavier_nx" / "tegrastats.log").read_text())
    assert nx.cpu_load_pct == (12, 8, 4, None, None, None)
    nano = parse_tegrastats((DATA / "nano" / "tegrastats.log").read_text())
    assert nano.rails_mw == {"POM_5V_IN": 900, "POM_5V_GPU": 0, "POM_5V_CPU": 123}
    triple = parse_tegrastats("RAM 974/7546MB (lfb 6x4MB) VDD_IN 4548mW/4548mW/4548mW VDD_SOC 1489mW/1489mW/1489mW")
    assert triple.rails_mw == {"VDD_IN": 4548, "VDD_SOC": 1489}
    with pytest.raises(JetsonParseError, match="not a tegrastats line"):
        parse_tegrastats("hello world")
