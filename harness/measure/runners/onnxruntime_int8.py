"""``onnxruntime-int8``: the ONNX export quantised to dynamic int8 (``workdir/model.int8.onnx``) and
run by ONNX Runtime's CPU provider; its difference from eager is recorded, not enforced."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from harness.measure.export import OrtRunner, export_onnx, quantize_int8
from harness.measure.runners import ExportOptions
from harness.measure.runners.onnxruntime import check_fp32


def build(model: nn.Module, example: torch.Tensor, *, device: torch.device, workdir: Path, threads: int | None,
          export: ExportOptions) -> OrtRunner:
    check_fp32("onnxruntime-int8", example)
    exported = export_onnx(model, example, workdir / "model.onnx", opset=export.opset, exporter=export.exporter)
    start = time.perf_counter()
    path = quantize_int8(exported.path, workdir / "model.int8.onnx")
    quantize_s = round(time.perf_counter() - start, 3)
    runner = OrtRunner(path, example, device=device, threads=threads, runtime="onnxruntime-int8")
    runner.info.update(exported.as_info(), quantize_time_s=quantize_s)
    return runner
