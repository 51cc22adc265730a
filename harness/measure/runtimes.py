"""The ``runtime`` axis: name parsing, the ``Runner`` contract, eager and ``torch.compile`` runners, parity.

A *runtime* is how one forward of a backbone is executed. Every runtime is turned into a
:class:`Runner` whose zero-argument :meth:`Runner.step` is what the inference timer calls, so
eager PyTorch, ``torch.compile`` and ONNX Runtime latencies come from the same timing loop and are
stored under the same keys. ONNX runners live in :mod:`harness.measure.export`, which also holds
:func:`harness.measure.runners.build_runner`, the one entry point that picks between them.

Runtime names (:data:`harness.contract.RUNTIMES`; ``parse_runtime`` also accepts the aliases in ``_ALIASES``):

* ``eager`` -- ``model(example)`` under ``torch.inference_mode()``.
* ``compile`` -- ``torch.compile(model)`` with the default mode (Inductor).
* ``onnxruntime`` -- fp32 ONNX export run by an ``onnxruntime.InferenceSession``.
* ``onnxruntime-int8`` -- the same export after ``quantize_dynamic`` (int8 weights, activations
  quantised on the fly), CPU execution provider only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.contract import RUNTIMES, unknown
from harness.runtime.devices import synchronize

# Spellings people type for the same runtime; keys are already lower-case with '-' separators.
_ALIASES: dict[str, str] = {
    "torch": "eager", "torch-compile": "compile", "torch.compile": "compile", "inductor": "compile",
    "ort": "onnxruntime", "onnx": "onnxruntime",
    "ort-int8": "onnxruntime-int8", "onnx-int8": "onnxruntime-int8", "onnxruntime-q8": "onnxruntime-int8",
}

# Parity tolerance is relative to the logit scale of the reference output. Measured over the
# registry backbones at 32 px (random init, batch 1 and 4) the fp32 ONNX Runtime difference is
# at most ~2e-6 of max|logit|: float32 round-off from different kernel/reduction orders. A
# relative 1e-3 leaves ~500x headroom for other CPUs/GPUs, while a wrong op (bad padding, wrong
# layer-norm axis, swapped branch) gives O(1) relative error. An absolute tolerance would not
# work: random-init logits span 5e-9 (lcnet_100, zero-initialised last BN) to ~2 (coatnet), so a
# fixed 1e-3 would pass anything for half the backbones. The absolute floor only keeps the
# tolerance non-zero when every reference logit is exactly zero.
PARITY_RTOL = 1e-3
PARITY_ATOL_FLOOR = 1e-12
# Half precision (only eager/compile run it): Inductor keeps fused intermediates in float32 where
# eager rounds every op's output, so a few machine epsilons per layer are expected. ~20x eps for
# fp16 (eps 9.8e-4) and ~12x for bf16 (eps 7.8e-3). Not yet measured on a GPU: revisit there.
_HALF_RTOL: dict[torch.dtype, float] = {torch.float16: 2e-2, torch.bfloat16: 1e-1}


# Every Runner.info carries all of these keys (None where a runtime has no such figure), so
# extra_info rows of different runtimes share one schema.
INFO_KEYS: tuple[str, ...] = (
    "runtime", "threads", "compile_time_s", "onnx_opset", "onnx_exporter", "onnx_dynamic_batch",
    "onnx_file_mb", "ort_providers", "export_time_s", "quantize_time_s",
    "parity_max_abs", "parity_ref_scale", "parity_rel", "parity_tol", "parity_batch",
)


class RuntimeUnsupported(RuntimeError):
    """The runtime cannot run this model here (no compiler, exporter rejects an op, no provider).

    The message is the skip reason the benchmark records.
    """


class ParityError(AssertionError):
    """The runtime's outputs differ from eager PyTorch by more than the parity tolerance."""


def parse_runtime(name: str) -> str:
    """Normalise a runtime name (case, ``_``/``-``, aliases) to one of :data:`RUNTIMES`.

    Raises ``ValueError`` naming the valid runtimes and the closest matches.
    """
    if not isinstance(name, str):
        raise ValueError(f"runtime must be a string, one of {', '.join(RUNTIMES)}; got {name!r}")
    key = name.strip().lower().replace("_", "-")
    if key in RUNTIMES:
        return key
    if key in _ALIASES:
        return _ALIASES[key]
    raise ValueError(unknown("runtime", key, RUNTIMES))


def parity_tolerance(reference_output: torch.Tensor, dtype: torch.dtype = torch.float32) -> float:
    """The largest max-abs difference accepted against ``reference_output`` of a ``dtype`` model.

    ``PARITY_RTOL`` (float32) or the half-precision rate, times max |reference logit|.
    """
    scale = float(reference_output.detach().abs().max()) if reference_output.numel() else 0.0
    return _HALF_RTOL.get(dtype, PARITY_RTOL) * scale + PARITY_ATOL_FLOOR


def _single_tensor(out: Any, what: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise ValueError(
            f"{what} returned {type(out).__name__}; runtimes need a model whose forward returns one "
            "tensor of logits (wrap it to select the output)"
        )
    return out


class Runner:
    """One forward of a fixed input batch on one runtime; see :func:`harness.measure.runners.build_runner`.

    ``step()`` runs one forward of the example and returns once the result is ready (CUDA is
    synchronised); ``outputs(x)`` returns float32 logits on the CPU for parity and accuracy;
    ``info`` holds flat, JSON-serialisable values for the benchmark's ``extra_info`` under exactly
    the keys of :data:`INFO_KEYS`, ``None`` where a figure does not apply to the runtime.
    """

    runtime: str = ""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.info: dict[str, Any] = dict.fromkeys(INFO_KEYS)
        self.info["runtime"] = self.runtime  # no "device" key: the case identity already holds it
        # The last output of step() is kept here so the forward's result is consumed.
        self.last: Any = None

    def step(self) -> None:
        """One forward of the example batch, synchronised; the result is kept in ``self.last``."""
        raise NotImplementedError

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` (any batch size) as a float32 CPU tensor."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the runner holds (sessions, compiled graphs, thread settings)."""
        self.last = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TorchRunner(Runner):
    """Eager PyTorch: ``model(example)`` under ``torch.inference_mode()``.

    ``threads`` (CPU only) is applied with ``torch.set_num_threads`` for the runner's lifetime and
    the previous setting is restored by :meth:`close`.
    """

    runtime = "eager"

    def __init__(self, model: nn.Module, example: torch.Tensor, *, device: torch.device, threads: int | None) -> None:
        super().__init__(device)
        self._previous_threads: int | None = None
        if threads is not None and device.type == "cpu":
            if threads < 1:
                raise ValueError(f"threads must be >= 1 or None (library default), got {threads}")
            self._previous_threads = torch.get_num_threads()
            torch.set_num_threads(threads)
        self.info["threads"] = torch.get_num_threads() if device.type == "cpu" else threads
        self.model = model.eval().to(device)
        self.example = example.to(device)
        self.fn: Any = self.model

    def step(self) -> None:
        with torch.inference_mode():
            self.last = self.fn(self.example)
        synchronize(self.device)

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = _single_tensor(self.fn(x.to(self.device)), f"{self.runtime} forward")
        return out.detach().float().cpu()

    def close(self) -> None:
        super().close()
        if self._previous_threads is not None:
            torch.set_num_threads(self._previous_threads)
            self._previous_threads = None


class CompileRunner(TorchRunner):
    """``torch.compile(model)`` (default mode); the first call compiles and is timed.

    Any failure while compiling (no C++ compiler, an op Inductor rejects, a Triton problem on
    CUDA) becomes :class:`RuntimeUnsupported` with the first line of the reason.
    """

    runtime = "compile"

    def __init__(self, model: nn.Module, example: torch.Tensor, *, device: torch.device, threads: int | None) -> None:
        super().__init__(model, example, device=device, threads=threads)
        self.fn = torch.compile(self.model)
        start = time.perf_counter()
        try:
            self.step()
        except Exception as exc:  # noqa: BLE001 - every compile failure is reported as a skip reason
            self.close()
            first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise RuntimeUnsupported(
                f"torch.compile failed for {type(model).__name__} on {device}: {type(exc).__name__}: {first[:300]}"
            ) from exc
        self.info["compile_time_s"] = round(time.perf_counter() - start, 3)

    def close(self) -> None:
        super().close()
        self.fn = self.model


def max_abs_diff(reference: torch.Tensor, other: torch.Tensor) -> float:
    """Max absolute difference of two logits tensors of the same shape (inf if non-finite)."""
    if reference.shape != other.shape:
        raise ParityError(f"output shape {tuple(other.shape)} differs from eager {tuple(reference.shape)}")
    diff = (reference.detach().float().cpu() - other.detach().float().cpu()).abs()
    value = float(diff.max()) if diff.numel() else 0.0
    return value if math.isfinite(value) else math.inf


def _reference_logits(reference: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Eager logits of ``x`` (eval mode, on the reference's device) as a float32 CPU tensor."""
    device = next(iter(reference.parameters()), torch.empty(0)).device
    with torch.inference_mode():
        return _single_tensor(reference.eval()(x.to(device)), "reference forward").float().cpu()


def record_parity(reference: nn.Module, runner: Runner, x: torch.Tensor, *, enforce: bool) -> float:
    """Compare ``runner`` with eager ``reference`` on ``x`` and store the figures in ``runner.info``.

    Keys: ``parity_max_abs``, ``parity_ref_scale`` (max |eager logit|), ``parity_rel`` (their
    ratio), ``parity_tol`` (``None`` when not enforced, e.g. int8). Raises :class:`ParityError`
    when the outputs are not finite, or when ``enforce`` and the difference exceeds the tolerance.
    """
    ref = _reference_logits(reference, x)
    diff = max_abs_diff(ref, runner.outputs(x))
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    tol = parity_tolerance(ref, x.dtype)
    runner.info.update(
        parity_max_abs=diff,
        parity_ref_scale=scale,
        parity_rel=diff / scale if scale > 0 else (0.0 if diff == 0 else None),  # None: no scale to divide by
        parity_tol=tol if enforce else None,
        parity_batch=int(x.shape[0]),
    )
    label = f"{runner.runtime} vs eager on batch {tuple(x.shape)}"
    if not math.isfinite(diff):
        raise ParityError(f"{label}: outputs are not finite (NaN/inf)")
    if enforce and diff > tol:
        raise ParityError(
            f"{label}: max abs diff {diff:.3e} exceeds tolerance {tol:.3e} "
            f"(relative to max|logit| {scale:.3e}, {x.dtype}); the runtime computes something else"
        )
    return diff


def int8_accuracy(
    model: nn.Module,
    onnx_int8_runner: Runner,
    split_images_uint8: torch.Tensor,
    labels: torch.Tensor,
    normalise: Callable[[torch.Tensor], torch.Tensor],
    *,
    batch_size: int = 256,
) -> tuple[float, float]:
    """Top-1 of eager fp32 ``model`` and of ``onnx_int8_runner`` on one labelled split.

    ``split_images_uint8`` is ``uint8 [N, C, H, W]`` (a ``TensorSplit.images``), ``labels`` is
    ``int64 [N]`` and ``normalise`` maps a uint8 batch to the float input the model was trained on.
    Returns ``(fp32_top1, int8_top1)`` as fractions in [0, 1]; their difference is the accuracy
    cost of int8. ``batch_size`` bounds memory only; results do not depend on it.
    """
    if split_images_uint8.dtype != torch.uint8 or split_images_uint8.ndim != 4:
        raise ValueError(
            f"images must be uint8 [N, C, H, W] (a TensorSplit.images), got {split_images_uint8.dtype} "
            f"{tuple(split_images_uint8.shape)}"
        )
    if labels.shape != (split_images_uint8.shape[0],) or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty [N] tensor matching the images, got {tuple(labels.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(iter(model.parameters()), torch.empty(0)).device
    model.eval()
    labels = labels.cpu()
    fp32_hits = int8_hits = 0
    for start in range(0, labels.numel(), batch_size):
        x = normalise(split_images_uint8[start : start + batch_size]).float()
        y = labels[start : start + batch_size]
        with torch.inference_mode():
            fp32 = _single_tensor(model(x.to(device)), "model forward").float().cpu()
        fp32_hits += int((fp32.argmax(1) == y).sum())
        int8_hits += int((onnx_int8_runner.outputs(x).argmax(1) == y).sum())
    return fp32_hits / labels.numel(), int8_hits / labels.numel()
