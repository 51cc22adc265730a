"""ONNX export, int8 quantisation and the ONNX Runtime runner (built by :mod:`harness.measure.runners`).

Exporter choice (torch 2.15): ``torch.onnx.export(..., dynamo=True)`` -- the torch.export-based
exporter, the default since torch 2.9 -- is used. Both exporters export every registry backbone at
32 px with the same parity (~1e-6 relative), but the legacy TorchScript exporter (``dynamo=False``)
is deprecated (it emits a ``DeprecationWarning``) and *traces*: a data-dependent ``if`` in
``forward`` is silently frozen to the branch the example took, while ``torch.export`` refuses it
loudly. Its only advantage is speed (0.1-3.5 s against 4-14 s per backbone on this CPU), so it stays
available as ``exporter="torchscript"`` but is never a silent fallback: a fallback would change
what is being measured without saying so.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from harness.contract import unknown
from harness.measure.runtimes import Runner, RuntimeUnsupported

__all__ = [
    "ONNX_OPSET", "EXPORTERS", "OnnxExport", "export_onnx", "quantize_int8", "ort_providers",
    "OrtRunner",
]

# Opset 18 is the opset the dynamo exporter's torchlib is written against (no version conversion
# step), ONNX Runtime has run it since 1.14 and TensorRT 8.6+ (JetPack 6) parses it.
ONNX_OPSET = 18
EXPORTERS: tuple[str, ...] = ("dynamo", "torchscript")
# Upper bound of the dynamic batch dimension; torch.export needs one and no inference batch here
# comes close to it.
_MAX_BATCH = 4096
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class OnnxExport:
    """Where an export went and what it cost."""

    path: Path
    opset: int
    exporter: str
    export_time_s: float
    dynamic_batch: bool

    def as_info(self) -> dict[str, object]:
        """What a runner's ``info`` (and so the case's record) says of the export."""
        return {"onnx_opset": self.opset, "onnx_exporter": self.exporter, "export_time_s": round(self.export_time_s, 3),
                "onnx_dynamic_batch": self.dynamic_batch}


def _reason(exc: BaseException) -> str:
    """The most telling line of an exporter error (its '## Exception summary' root cause)."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    if "## Exception summary" in lines:
        after = lines[lines.index("## Exception summary") + 1 :]
        if after:
            return after[0][:400]
    return f"{type(exc).__name__}: {lines[0][:400]}" if lines else type(exc).__name__


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    *,
    opset: int = ONNX_OPSET,
    dynamic_batch: bool = True,
    exporter: str = "dynamo",
) -> OnnxExport:
    """Export ``model`` (eval mode, a CPU copy; the caller's model is untouched) to ``path``.

    The input is named ``input`` and the output ``logits``. The batch dimension is dynamic by
    default so one file serves the batch-1 latency case and batched parity/accuracy passes
    (``dynamic_batch=False`` pins it to the example's batch, e.g. for TensorRT engines).
    Raises :class:`RuntimeUnsupported` naming the model and the exporter's reason on failure.
    """
    if exporter not in EXPORTERS:
        raise ValueError(unknown("exporter", exporter, EXPORTERS))
    if example.dtype != torch.float32 or example.ndim != 4:
        raise ValueError(f"export needs a float32 [N, C, H, W] example, got {example.dtype} {tuple(example.shape)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).eval().cpu()
    x = example.detach().cpu()
    if dynamic_batch and x.shape[0] < 2:
        # torch.export treats sizes 0 and 1 specially: from a batch-1 example some backbones come
        # out with the batch dimension bounded to <= 2 or pinned to 1 (a ConstraintViolationError at
        # 32 px). Tracing a batch of two copies keeps the dimension symbolic; it is data-independent.
        x = x.expand(2, *x.shape[1:]).contiguous()
    kwargs: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"], "opset_version": opset}
    if exporter == "dynamo":
        # external_data=False keeps one self-contained file; every backbone here is far below 2 GB.
        kwargs.update(dynamo=True, verbose=False, external_data=False)
        if dynamic_batch:
            kwargs["dynamic_shapes"] = ({0: torch.export.Dim("batch", min=1, max=_MAX_BATCH)},)
    else:
        kwargs["dynamo"] = False
        if dynamic_batch:
            kwargs["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    start = time.perf_counter()
    # The exporter prints progress, and torch logs every failed capture strategy at ERROR level
    # (with tracebacks) even when a later strategy succeeds; the outcome is reported here instead.
    torch_logger = logging.getLogger("torch")
    level = torch_logger.level
    torch_logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(cpu_model, (x,), str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001 - every exporter failure becomes a readable skip reason
        raise RuntimeUnsupported(
            f"{type(model).__name__} cannot be exported to ONNX ({exporter} exporter, opset {opset}): {_reason(exc)}"
        ) from exc
    finally:
        torch_logger.setLevel(level)
    elapsed = time.perf_counter() - start
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    actual = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), opset)
    return OnnxExport(path, int(actual), exporter, elapsed, dynamic_batch)


def quantize_int8(source: Path, target: Path, *, per_channel: bool = False) -> Path:
    """Dynamic int8 quantisation of an fp32 ONNX model (``QInt8`` weights) to ``target``.

    ``quantize_dynamic`` rewrites Conv/MatMul/Gemm-like ops to ConvInteger/MatMulInteger with
    activations quantised per run. Weights are per-tensor by default (``quantize_dynamic``'s own
    default, and what the recorded figures use); ``per_channel=True`` is passed through. Raises
    :class:`RuntimeUnsupported` when the quantiser rejects the graph.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    proto = onnx.load(str(source))
    # The dynamo exporter annotates intermediate shapes (value_info). The quantiser rewrites a
    # transB Gemm classifier into MatMulInteger with transposed weights and then trips over the
    # stale annotation ("Inferred shape and existing shape differ: (512) vs (10)"). value_info is
    # optional, so it is dropped and the quantiser re-infers shapes. (quant_pre_process also
    # fixes it but costs ~10 s of graph optimisation per backbone.)
    del proto.graph.value_info[:]
    quiet = logging.Filter()
    quiet.filter = lambda record: "pre-processing before quantization" not in record.getMessage()  # type: ignore[method-assign]
    logging.getLogger().addFilter(quiet)
    try:
        quantize_dynamic(proto, target, weight_type=QuantType.QInt8, per_channel=per_channel)
    except Exception as exc:  # noqa: BLE001 - the quantiser's failures are reasons to skip int8
        raise RuntimeUnsupported(f"onnxruntime int8 quantisation of {Path(source).name} failed: {_reason(exc)}") from exc
    finally:
        logging.getLogger().removeFilter(quiet)
    return target


def ort_providers(device: torch.device) -> list[str]:
    """ONNX Runtime execution providers for ``device``, best first, filtered by what is installed."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeUnsupported(
                f"onnxruntime on {device} needs the CUDAExecutionProvider (install onnxruntime-gpu); "
                f"available providers: {', '.join(available)}"
            )
        wanted = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
        return [p for p in wanted if p in available]
    raise RuntimeUnsupported(f"onnxruntime runner supports cpu and cuda devices, not {device.type}")


class OrtRunner(Runner):
    """An ``onnxruntime.InferenceSession`` over an exported file.

    CPU: intra-op threads = ``threads`` (``None`` = ONNX Runtime's default, one per physical core).
    CUDA: input and output are bound to device tensors with IO binding, so ``step()`` makes no host
    copies; it returns after ``torch.cuda.synchronize``.
    """

    def __init__(self, onnx_path: Path, example: torch.Tensor, *, device: torch.device,
                 threads: int | None, runtime: str = "onnxruntime") -> None:
        import onnxruntime as ort

        self.runtime = runtime
        super().__init__(device)
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None (onnxruntime default), got {threads}")
        providers = ort_providers(device)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: provider fallbacks are recorded in info instead
        if threads is not None and device.type == "cpu":
            options.intra_op_num_threads = threads
        index = device.index or 0
        provider_options = [{"device_id": index} if p != "CPUExecutionProvider" else {} for p in providers]
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers,
                                            provider_options=provider_options)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.info.update(ort_providers=",".join(self.session.get_providers()), threads=threads,
                         onnx_file_mb=round(Path(onnx_path).stat().st_size / 2**20, 3))
        self._example_np = example.detach().float().cpu().contiguous().numpy()
        self._binding: Any = None
        if device.type == "cuda":
            self._bind_cuda(example)

    def _bind_cuda(self, example: torch.Tensor) -> None:
        index = self.device.index or 0
        self._x = example.detach().float().contiguous().to(self.device)
        shape = self.session.run([self.output_name], {self.input_name: self._example_np})[0].shape
        self._y = torch.empty(shape, dtype=torch.float32, device=self.device)
        binding = self.session.io_binding()
        binding.bind_input(self.input_name, "cuda", index, np.float32, tuple(self._x.shape), self._x.data_ptr())
        binding.bind_output(self.output_name, "cuda", index, np.float32, tuple(self._y.shape), self._y.data_ptr())
        self._binding = binding

    def step(self) -> None:
        if self._binding is not None:
            self.session.run_with_iobinding(self._binding)
            torch.cuda.synchronize(self.device)
            self.last = self._y
        else:
            self.last = self.session.run([self.output_name], {self.input_name: self._example_np})[0]

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self.input_name: x.detach().float().cpu().contiguous().numpy()}
        return torch.from_numpy(self.session.run([self.output_name], feed)[0]).float()

    def close(self) -> None:
        super().close()
        self._binding = None
        self.session = None
