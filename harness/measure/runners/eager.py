"""``eager``: the model's own forward in torch eager mode, the reference every other runtime is checked against."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from harness.measure.runners import ExportOptions
from harness.measure.runtimes import Runner, TorchRunner


def build(model: nn.Module, example: torch.Tensor, *, device: torch.device, workdir: Path, threads: int | None,
          export: ExportOptions) -> Runner:
    return TorchRunner(model, example, device=device, threads=threads)
