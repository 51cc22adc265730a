"""``onnxruntime``: the model exported to ONNX (``workdir/model.onnx``) and run by ONNX Runtime
(CPU, or CUDA with onnxruntime-gpu), float32 only."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harness.measure.export import OrtRunner, export_onnx
from harness.measure.runners import ExportOptions
from harness.measure.runtimes import RuntimeUnsupported


def check_fp32(name: str, example: torch.Tensor) -> None:
    """ONNX export here is of float32 models: any other precision is a skip naming the fix."""
    if example.dtype != torch.float32:
        raise RuntimeUnsupported(f"{name} exports and runs float32 models; this case is {example.dtype} (use precision fp32 for it)")


def build(model: nn.Module, example: torch.Tensor, *, device: torch.device, workdir: Path, threads: int | None,
          export: ExportOptions) -> OrtRunner:
    check_fp32("onnxruntime", example)
    exported = export_onnx(model, example, workdir / "model.onnx", opset=export.opset, exporter=export.exporter)
    runner = OrtRunner(exported.path, example, device=device, threads=threads, runtime="onnxruntime")
    runner.info.update(exported.as_info())
    return runner
