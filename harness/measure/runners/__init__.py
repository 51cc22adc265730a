"""The inference runtimes, one module each: :func:`build_runner` turns a runtime's name into a
:class:`~harness.measure.runtimes.Runner` whose ``step()`` is one forward of a fixed batch.

A runtime is registered by its row in :data:`harness.contract.RUNTIME_SPECS` (the device types it
runs on, whether its outputs must match eager's, whether torch can see its memory) and built by
``harness.measure.runners.<name>`` (``-`` read as ``_``), which provides
``build(model, example, *, device, workdir, threads, export) -> Runner``. Nothing else branches on
a runtime's name: a new runtime is one module plus one row.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import torch
from torch import nn

from harness.contract import RUNTIME_SPECS, module_name
from harness.measure.export import ONNX_OPSET
from harness.measure.runtimes import ParityError, Runner, RuntimeUnsupported, parse_runtime, record_parity


@dataclass(frozen=True)
class ExportOptions:
    """How a runtime that runs an exported graph exports it (:func:`harness.measure.export.export_onnx`)."""

    opset: int = ONNX_OPSET
    exporter: str = "dynamo"


class RuntimeModule(Protocol):
    def build(self, model: nn.Module, example: torch.Tensor, *, device: torch.device, workdir: Path, threads: int | None,
              export: ExportOptions) -> Runner: ...


def runtime_module(name: str) -> RuntimeModule:
    """The builder module of runtime ``name`` (already parsed: one of the contract's rows)."""
    return cast(RuntimeModule, importlib.import_module(f"{__name__}.{module_name(name)}"))


def build_runner(model: nn.Module, example: torch.Tensor, runtime: str, *, device: torch.device, workdir: Path,
                 threads: int | None, opset: int = ONNX_OPSET, exporter: str = "dynamo") -> Runner:
    """Turn a runtime name into a :class:`Runner` whose ``step()`` is one forward of ``example``.

    Parity against eager ``model`` on ``example`` is computed once here and stored in ``info``; a
    runtime whose row says ``parity`` raises :class:`ParityError` beyond tolerance, any other (int8)
    only records its difference. Raises :class:`RuntimeUnsupported` when the runtime cannot run here
    (the caller skips). Exported files are written under ``workdir``.
    """
    name = parse_runtime(runtime)
    spec = RUNTIME_SPECS[name]
    device = torch.device(device)
    if device.type not in spec.devices:
        raise RuntimeUnsupported(f"{name} runs on {' and '.join(spec.devices)} only, not {device}")
    model = model.eval().to(device)
    runner = runtime_module(name).build(model, example, device=device, workdir=Path(workdir), threads=threads,
                                        export=ExportOptions(opset, exporter))
    runner.info["runtime"] = name  # the row's name, whichever runner class runs it
    try:
        record_parity(model, runner, example, enforce=spec.parity)
    except ParityError:
        runner.close()
        raise
    return runner
