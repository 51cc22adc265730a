"""Tests for the runtime axis: harness.measure.runtimes (names, eager/compile, parity) and harness.measure.export (ONNX)."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
import timm
import torch
from torch import nn

from harness.contract import RUNTIMES
from harness.measure.export import OrtRunner, export_onnx, quantize_int8
from harness.measure.runners import build_runner
from harness.measure.runtimes import (
    INFO_KEYS,
    ParityError,
    RuntimeUnsupported,
    int8_accuracy,
    max_abs_diff,
    parity_tolerance,
    parse_runtime,
    record_parity,
)

CPU = torch.device("cpu")
# 32 px keeps every export and forward cheap on the shared 2-core CI machine.
IMG = 32


class TinyNet(nn.Module):
    """Conv -> ReLU -> global pool -> linear: exports in ~2 s and compiles in seconds."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


class EighNet(nn.Module):
    """Uses torch.linalg.eigh, which has no ONNX operator: the exporter must reject it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return torch.linalg.eigh(flat @ flat.transpose(1, 2)).eigenvalues


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("eager", "eager"),
        ("EAGER", "eager"),
        (" compile ", "compile"),
        ("torch.compile", "compile"),
        ("onnxruntime", "onnxruntime"),
        ("ort", "onnxruntime"),
        ("onnxruntime_int8", "onnxruntime-int8"),
        ("ORT-INT8", "onnxruntime-int8"),
    ],
)
def test_parse_runtime_accepts_names_and_aliases(given: str, expected: str) -> None:
    assert parse_runtime(given) == expected
    assert expected in RUNTIMES


@pytest.mark.parametrize(
    ("given", "suggestion"),
    [("onnxrutime", "onnxruntime"), ("eagr", "eager"), ("compiled", "compile"), ("tensorrt", None), ("", None)],
)
def test_parse_runtime_rejects_unknown_names_with_the_valid_list(given: str, suggestion: str | None) -> None:
    with pytest.raises(ValueError) as info:
        parse_runtime(given)
    message = str(info.value)
    assert message.startswith(f"unknown runtime {given!r}")
    assert message.endswith(f"valid: {', '.join(RUNTIMES)}")
    assert (f"(did you mean {suggestion}" in message) if suggestion is not None else "did you mean" not in message


def test_unknown_exporter_names_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown exporter 'dynamoo' \(did you mean dynamo\?\); valid: dynamo, torchscript"):
        export_onnx(TinyNet(), torch.randn(1, 3, 8, 8), tmp_path / "model.onnx", exporter="dynamoo")


def test_parse_runtime_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_runtime(3)  # type: ignore[arg-type]


def _timm(name: str) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


@pytest.fixture(scope="module", params=["resnet18", "mobilenetv3_large_100"])
def backbone_runner(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """(model, onnxruntime runner, workdir holding model.onnx) built once per backbone, batch-1 example."""
    model = _timm(request.param)
    example = torch.randn(1, 3, IMG, IMG)
    workdir = tmp_path_factory.mktemp(request.param)
    runner = build_runner(model, example, "onnxruntime", device=CPU, workdir=workdir, threads=1)
    yield model, runner, workdir
    runner.close()


def test_onnx_export_matches_eager_at_batch_1_and_4(backbone_runner: tuple[nn.Module, OrtRunner, Path]) -> None:
    model, runner, _ = backbone_runner
    info = runner.info
    assert tuple(info) == INFO_KEYS  # one extra_info schema for every runtime
    assert info["runtime"] == "onnxruntime" and info["ort_providers"] == "CPUExecutionProvider"
    assert info["onnx_opset"] == 18 and info["onnx_exporter"] == "dynamo" and info["export_time_s"] > 0
    assert 0 <= info["parity_max_abs"] <= info["parity_tol"]
    # Batch 4 through a file exported from a batch-1 example: the batch dimension is dynamic.
    x4 = torch.randn(4, 3, IMG, IMG)
    with torch.inference_mode():
        reference = model(x4)
    assert max_abs_diff(reference, runner.outputs(x4)) <= parity_tolerance(reference)


def test_onnx_runner_step_runs_the_example(backbone_runner: tuple[nn.Module, OrtRunner, Path]) -> None:
    _, runner, _ = backbone_runner
    runner.last = None
    runner.step()
    assert runner.last is not None and tuple(runner.last.shape) == (1, 10)


def test_export_has_a_symbolic_batch_dimension(backbone_runner: tuple[nn.Module, OrtRunner, Path]) -> None:
    _, runner, workdir = backbone_runner
    dims = onnx.load(str(workdir / "model.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, IMG, IMG]
    assert runner.info["onnx_dynamic_batch"] is True


def test_int8_runs_and_records_its_difference(backbone_runner: tuple[nn.Module, OrtRunner, Path]) -> None:
    model, _, workdir = backbone_runner
    int8_path = quantize_int8(workdir / "model.onnx", workdir / "model.int8.onnx")
    example = torch.randn(1, 3, IMG, IMG)
    runner = OrtRunner(int8_path, example, device=CPU, threads=1, runtime="onnxruntime-int8")
    try:
        record_parity(model, runner, example, enforce=False)
        info = runner.info
        assert info["runtime"] == "onnxruntime-int8" and info["parity_tol"] is None
        # int8 weights are ~4x smaller than fp32; 0.35 allows for fp32 biases/scales kept aside.
        assert info["onnx_file_mb"] < 0.35 * (workdir / "model.onnx").stat().st_size / 2**20
        # Quantisation must change the logits a little and not wreck them: measured 3-30% of the
        # logit scale on these random-init backbones, so 100% would mean a broken graph.
        assert 0 < info["parity_max_abs"] and info["parity_rel"] < 1.0
        runner.step()
        assert tuple(runner.last.shape) == (1, 10)
    finally:
        runner.close()


def test_int8_is_cpu_only(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnsupported, match="onnxruntime-int8 runs on cpu only, not cuda"):
        build_runner(TinyNet(), torch.randn(1, 3, 8, 8), "onnxruntime-int8", device=torch.device("cuda"),
                     workdir=tmp_path, threads=None)


def test_unexportable_model_raises_runtime_unsupported_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(RuntimeUnsupported) as info:
        build_runner(EighNet(), torch.randn(1, 3, 4, 4), "onnxruntime", device=CPU, workdir=tmp_path, threads=1)
    message = str(info.value)
    assert message.startswith("EighNet cannot be exported to ONNX (dynamo exporter, opset 18)")
    assert "linalg_eigh" in message and "\x1b[" not in message and "\n" not in message


def test_onnx_runtimes_skip_half_precision_cases(tmp_path: Path) -> None:
    model = TinyNet().to(torch.bfloat16)
    with pytest.raises(RuntimeUnsupported, match="float32"):
        build_runner(model, torch.randn(1, 3, 8, 8, dtype=torch.bfloat16), "onnxruntime", device=CPU,
                     workdir=tmp_path, threads=1)


def test_export_rejects_non_float32_examples(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="float32"):
        export_onnx(TinyNet(), torch.zeros(1, 3, 8, 8, dtype=torch.uint8), tmp_path / "x.onnx")


def test_parity_error_names_the_figures(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # A fixed-batch export (batch 2) also covers dynamic_batch=False.
    exported = export_onnx(TinyNet(), torch.randn(2, 3, 8, 8), tmp_path / "a.onnx", dynamic_batch=False)
    assert onnx.load(str(exported.path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    other = TinyNet()  # different random weights: the file does not compute this model
    runner = OrtRunner(exported.path, torch.randn(2, 3, 8, 8), device=CPU, threads=1)
    with pytest.raises(ParityError, match=r"max abs diff .* exceeds tolerance"):
        record_parity(other, runner, torch.randn(2, 3, 8, 8), enforce=True)
    runner.close()


def test_eager_runner_steps_and_restores_threads(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    runner = build_runner(TinyNet(), torch.randn(2, 3, 8, 8), "eager", device=CPU, workdir=tmp_path, threads=wanted)
    assert torch.get_num_threads() == wanted and runner.info["parity_max_abs"] == 0.0
    assert tuple(runner.info) == INFO_KEYS and runner.info["export_time_s"] is None
    runner.step()
    assert tuple(runner.last.shape) == (2, 3)
    runner.close()
    assert torch.get_num_threads() == before


def _has_cxx() -> bool:
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


# Slow on a loaded 2-core machine (Inductor C++ codegen, ~10-30 s even for TinyNet); the lead may
# want to mark it `slow`.
@pytest.mark.skipif(not _has_cxx(), reason="torch.compile on CPU needs a C++ compiler (g++/clang++), none on PATH")
def test_compile_runner_records_compile_time_and_matches_eager(tmp_path: Path) -> None:
    runner = build_runner(TinyNet(), torch.randn(1, 3, 8, 8), "compile", device=CPU, workdir=tmp_path, threads=1)
    try:
        assert runner.info["compile_time_s"] > 0 and runner.info["parity_max_abs"] <= runner.info["parity_tol"]
        runner.step()
        assert tuple(runner.last.shape) == (1, 3)
    finally:
        runner.close()


def _channel_dataset(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images whose label is the brightest colour channel (a linearly separable task)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, 8, 8), generator=generator)
    images[torch.arange(n), labels] += 150  # the label channel is >= 150, the others < 60
    return images.to(torch.uint8), labels


def _channel_classifier() -> TinyNet:
    """TinyNet with hand-set weights that predicts the brightest channel: a known-accuracy model."""
    model = TinyNet()
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.zero_()
        for c in range(3):
            model.conv.weight[c, c, 1, 1] = 1.0  # output channel c copies input channel c
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.head.weight[:, :3] = torch.eye(3)
    return model.eval()


def test_int8_accuracy_on_a_known_accuracy_model(tmp_path: Path) -> None:
    images, labels = _channel_dataset(60)
    wrong = labels.clone()
    wrong[:15] = (wrong[:15] + 1) % 3  # 15 of 60 labels corrupted: the true top-1 is exactly 0.75
    model = _channel_classifier()
    normalise = lambda batch: batch.float() / 255.0  # noqa: E731 - the training-time transform
    runner = build_runner(model, normalise(images[:1]), "onnxruntime-int8", device=CPU, workdir=tmp_path, threads=1)
    try:
        assert runner.info["quantize_time_s"] > 0 and runner.info["parity_tol"] is None
        fp32, int8 = int8_accuracy(model, runner, images, wrong, normalise, batch_size=16)
    finally:
        runner.close()
    assert fp32 == pytest.approx(0.75)
    # The class margin (>= 90/255 in channel mean) dwarfs int8 rounding, so int8 keeps every answer.
    assert int8 == pytest.approx(0.75)


def test_int8_accuracy_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        int8_accuracy(TinyNet(), None, torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), lambda b: b)  # type: ignore[arg-type]
