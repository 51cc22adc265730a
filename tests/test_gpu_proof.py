"""``scripts/gpu_proof.py``: the dry run on a machine without CUDA, and the pieces that need no GPU.

The dry run is the real script in a subprocess: every step starts in its own process, builds its
pytest commands through the suite's option parsers, says ``skipped: no CUDA device``, and the
script exits 0 with the output folder laid out as documented.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_proof.py"
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_proof_steps import STEP_NAMES, STEPS  # noqa: E402
from gpu_proof_steps.common import suite_args  # noqa: E402
from gpu_proof_steps.peaks import dense_tflops, peak_for  # noqa: E402
from gpu_proof_steps.xdist import compare_records  # noqa: E402

# The budget: the dry run must end within two minutes; the test gives it that, no more.
DRY_RUN_LIMIT_S = 120


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real proof, not the dry run")
def test_dry_run_skips_every_step_and_lays_out_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "proof"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=DRY_RUN_LIMIT_S, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in STEP_NAMES:
        assert f"] {name}: skipped: no CUDA device" in done.stdout
    assert "Could not be proven (6):" in done.stdout

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["exit_code"] == 0 and summary["total_cap_s"] <= 540  # one 10-minute device call, with room
    assert [s["name"] for s in summary["steps"]] == list(STEP_NAMES)
    for step in summary["steps"]:
        assert (step["status"], step["reason"]) == ("skipped", "no CUDA device"), step
        assert "skipped: no CUDA device" in (out / f"{step['name']}.log").read_text(encoding="utf-8")
        assert json.loads((out / "raw" / step["name"] / "result.json").read_text(encoding="utf-8"))["status"] == "skipped"
    assert sorted(p.name for p in out.iterdir()) == sorted(["raw", "summary.json", *(f"{n}.log" for n in STEP_NAMES)])
    # The set-up before CUDA ran: the pytest sessions are built, with their outputs under raw/<step>/.
    planned = {s["name"]: s["planned"] for s in summary["steps"]}
    assert f"--benchmark-json={out / 'raw' / 'matrix' / 'eager.json'}" in planned["matrix"]["pytest eager"]
    assert "--channels-last" in planned["matrix"]["pytest channels-last"] and "--compile" in planned["matrix"]["pytest compile"]
    assert "--plan-budget 4GiB" in planned["plan"]["pytest plan"] and "-n 2" in planned["xdist"]["pytest xdist"]
    assert len(planned["train"]["cases"]) == 6 and "--power" in planned["power"]["pytest power"]


def test_arguments_are_refused_at_parse_time(tmp_path: Path) -> None:
    for args, message in ((["--steps", "latency,bogus"], "unknown step(s) ['bogus']"), (["--cap", "matrix=lots"], "write STEP=SECONDS")):
        done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), *args], capture_output=True, text=True, check=False)
        assert done.returncode == 2 and message in done.stderr


def test_the_caps_fit_one_device_call() -> None:
    assert sum(step.cap_s for step in STEPS) <= 540


def test_suite_args_go_through_the_option_table() -> None:
    assert suite_args({"backbones": "resnet18", "devices": "cuda", "channels-last": True, "compile": False}) == [
        "--backbones", "resnet18", "--devices", "cuda", "--channels-last"]
    with pytest.raises(KeyError, match="--channel-last is not a backbone-bench option"):
        suite_args({"channel-last": True})
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'"):
        suite_args({"backbones": "resnet19"})


@pytest.mark.parametrize(("name", "precision", "tf32", "expected"), [
    ("NVIDIA H200", "bf16", True, (989.4, "bf16 tensor core")),
    ("NVIDIA H200 NVL", "fp16", True, (835.5, "fp16 tensor core")),
    ("NVIDIA H100 80GB HBM3", "fp32", True, (494.7, "tf32 tensor core")),
    ("NVIDIA H100 PCIe", "fp32", False, (51.0, "fp32 (no tensor core)")),
    ("NVIDIA A100-SXM4-80GB", "bf16", True, (312.0, "bf16 tensor core")),
])
def test_dense_peaks(name: str, precision: str, tf32: bool, expected: tuple[float, str]) -> None:
    peak = peak_for(name)
    assert peak is not None and dense_tflops(peak, precision, tf32=tf32) == expected


def test_no_peak_for_an_unknown_gpu() -> None:
    assert peak_for("NVIDIA GeForce RTX 4090") is None


def test_compare_records_names_every_difference() -> None:
    settings = {"threads": 16, "seeds": 1}
    serial: dict[str, dict[str, Any]] = {
        "inference/a": {"status": "ok", "params": 10, "peak_mem_bytes": 100, "latency_p50_ms": 1.0, "settings": {"threads": 1}},
        "train/b": {"status": "ok", "top1": 95.0, "peak_train_mem_bytes": 7, "settings": settings},
        "inference/c": {"status": "ok", "settings": {}},
    }
    parallel: dict[str, dict[str, Any]] = {
        "inference/a": {"status": "ok", "params": 10, "peak_mem_bytes": 100, "latency_p50_ms": 1.2, "settings": {"threads": 1}},
        "train/b": {"status": "ok", "top1": 94.0, "peak_train_mem_bytes": 7, "settings": {**settings, "threads": 8}},
        "inference/d": {"status": "failed", "settings": {}},
    }
    result = compare_records(serial, parallel)
    assert result["compared"] == 2 and result["only_serial"] == ["inference/c"] and result["only_xdist"] == ["inference/d"]
    assert result["metrics"] == ["train/b top1: 95.0 vs 94.0"]  # latency is timed: never compared for equality
    assert result["settings"] == ["train/b: threads 16 → 8"] and result["status"] == []
