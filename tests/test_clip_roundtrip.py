"""A CLIP backbone's records (a zeroshot and a contrastive train case, an image-tower inference case with ONNX Runtime)
are saved and read back by compare, report, the gate and pytest-benchmark's own compare."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.test_clip import TINY, tiny_state
from tests.test_roundtrip import Project, write_project

pytest.importorskip("open_clip")
pytestmark = pytest.mark.xdist_group("clip_roundtrip")


def _matrix(config: Path, checkpoint: Path) -> tuple[str, ...]:
    return ("-m", "train or inference", "--backbones", f"clip:{config}@{checkpoint}", "--protocols", "zeroshot,contrastive", "--subsets", "100", "--steps", "4",
            "--train-img-sizes", "native", "--img-sizes", "32", "--batch-sizes", "1", "--devices", "cpu", "--bench-time", "0.05",
            "--runtimes", "eager,onnxruntime", "--num-classes", "10", "-p", "no:cacheprovider")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Project, tuple[str, ...]]]:
    path = write_project(tmp_path_factory.mktemp("clip_roundtrip"))
    (path / "mini_clip.json").write_text(json.dumps(TINY))
    torch.save({"epoch": 1, "state_dict": tiny_state()}, path / "mini_clip.pt")
    project, matrix = Project(path), _matrix(path / "mini_clip.json", path / "mini_clip.pt")
    first = project.pytest(*matrix, f"--feature-cache={path / 'features'}", "--benchmark-save=clip")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    yield project, matrix


def test_both_kinds_are_saved_with_their_clip_keys(project: tuple[Project, tuple[str, ...]]) -> None:
    [saved] = project[0].runs()
    cases = {b["extra_info"]["case_id"]: b["extra_info"] for b in json.loads(saved.read_text())["benchmarks"]}
    assert set(cases) == {"train/clip:mini_clip@mini_clip-digits_100-zeroshot-cpu-bs128-32px-fp32",
                          "train/clip:mini_clip@mini_clip-digits_100-contrastive-cpu-bs128-32px-fp32",
                          "inference/clip:mini_clip-cpu-bs1-32px-fp32", "inference/clip:mini_clip-cpu-bs1-32px-fp32-onnxruntime"}
    contrastive = cases["train/clip:mini_clip@mini_clip-digits_100-contrastive-cpu-bs128-32px-fp32"]
    assert contrastive["steps_run"] == 4 and contrastive["settings"]["optimizer"].startswith("adamw ClipLoss; ")
    assert Path(contrastive["clip_checkpoint"]).is_file() and contrastive["clip_token"].startswith("clip:")
    zeroshot = cases["train/clip:mini_clip@mini_clip-digits_100-zeroshot-cpu-bs128-32px-fp32"]
    assert zeroshot["settings"]["optimizer"] == "zeroshot classnames=builtin:digits templates=builtin:digits"
    assert zeroshot["weights_source"] == "file" and zeroshot["train_images_used"] == 0 and len(zeroshot["prompts"]["templates"]) == 6
    for key in ("clip:mini_clip-cpu-bs1-32px-fp32", "clip:mini_clip-cpu-bs1-32px-fp32-onnxruntime"):
        case = cases[f"inference/{key}"]
        assert case["tower"] == "image" and case["text_prompts"] == 10 and case["text_encode_ms"] > 0
        assert case["clip_params_total"] > case["params"]  # the text tower is counted in the whole model only


def test_compare_report_and_pytest_benchmark_read_them_back(project: tuple[Project, tuple[str, ...]], tmp_path: Path) -> None:
    runner = project[0]
    same = runner.harness("compare", "clip", str(runner.runs()[0]), "--fail-on", "latency_p50_ms:off")
    assert same.returncode == 0, same.stderr
    assert "train/clip:mini_clip@mini_clip-digits_100-zeroshot" in same.stdout and "inference/clip:mini_clip-cpu-bs1-32px-fp32" in same.stdout
    report = runner.harness("report", "clip", "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert "clip:mini_clip" in (tmp_path / "report" / "report.md").read_text()
    listed = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", "file://baselines", "compare", "0001", "--columns=median,rounds"],
                            cwd=runner.path, capture_output=True, text=True, check=True)
    assert "test_train[clip:mini_clip@mini_clip-digits_100-zeroshot-cpu-bs128-32px-fp32]" in listed.stdout
    assert "test_inference[clip:mini_clip-cpu-bs1-32px-fp32-onnxruntime]" in listed.stdout


def test_the_gate_reads_them_back(project: tuple[Project, tuple[str, ...]]) -> None:
    runner, matrix = project
    gated = runner.pytest(*matrix, f"--feature-cache={runner.path / 'features'}", "--gate", "clip", "--fail-on", "latency_p50_ms:off")
    assert gated.returncode == 0, gated.stdout[-3000:]
    assert "backbone-bench gate" in gated.stdout and "OK:" in gated.stdout
    assert "train/clip:mini_clip@mini_clip-digits_100-zeroshot" in gated.stdout
