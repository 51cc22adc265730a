"""``compile``: ``torch.compile`` (inductor) of the model, compiled and warmed up before timing."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harness.measure.runners import ExportOptions
from harness.measure.runtimes import CompileRunner, Runner


def build(model: nn.Module, example: torch.Tensor, *, device: torch.device, workdir: Path, threads: int | None,
          export: ExportOptions) -> Runner:
    return CompileRunner(model, example, device=device, threads=threads)
