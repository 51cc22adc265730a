"""Parameter and MAC counting for vision backbones.

MACs are counted with fvcore's ``FlopCountAnalysis``, whose convention is one
multiply-add = one "flop" (so its totals are MACs, the same unit timm publishes
as ``infer_gmacs``). fvcore has no handle for some MAC-bearing ops; the ones the
registry models hit are added here (see ``EXTRA_MAC_HANDLES``). Element-wise ops
(add, mul, gelu, softmax, norms' reductions, pooling) stay uncounted, exactly as
in fvcore and timm's published tables.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
from torch import nn

with warnings.catch_warnings():
    # fvcore calls the deprecated torch.jit.script at import time (FutureWarning).
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

__all__ = [
    "EXTRA_MAC_HANDLES",
    "FlopCountError",
    "count_gmacs",
    "count_macs",
    "count_params",
    "sdpa_mac_handle",
    "uncounted_ops",
]

# fvcore/iopath loggers that print "unsupported operator" and "uncalled module" lines.
_NOISY_LOGGERS: tuple[str, ...] = ("fvcore", "fvcore.nn.jit_analysis", "iopath")

T = TypeVar("T")


class FlopCountError(RuntimeError):
    """Raised when a model cannot be traced for MAC counting."""


def count_params(model: nn.Module) -> int:
    """Return the exact number of parameters of ``model``.

    Parameters shared between modules (tied weights) are counted once, because
    ``nn.Module.parameters()`` already yields each parameter object only once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"count_params expects an nn.Module, got {type(model).__name__}; pass the model itself.")
    return sum(p.numel() for p in model.parameters())


def sdpa_mac_handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``.

    For q [..., L, E], k [..., S, E], v [..., S, Ev]: Q@K^T costs L*S*E MACs and
    attn@V costs L*S*Ev MACs per batch-and-head, so the total is
    prod(batch dims of q) * L * S * (E + Ev). Softmax/scale/mask are element-wise
    and not counted (as for an explicit ``q @ k.transpose(-2, -1)`` in fvcore).
    The full L x S product is counted even with ``is_causal=True``, matching
    what fvcore counts for the equivalent unfused matmuls.
    """
    # fvcore's get_shape is annotated Optional[List[int]], but fvcore ships no py.typed.
    q_shape: list[int] | None = get_shape(inputs[0])
    k_shape: list[int] | None = get_shape(inputs[1])
    v_shape: list[int] | None = get_shape(inputs[2])
    if q_shape is None or k_shape is None or v_shape is None:
        raise FlopCountError("scaled_dot_product_attention traced without static shapes; trace with a concrete tensor.")
    *batch, length, embed = q_shape
    source = k_shape[-2]
    value_embed = v_shape[-1]
    return math.prod(batch) * length * source * (embed + value_embed)


# Op name -> fvcore handle for MAC-bearing ops fvcore (0.1.5) does not count.
# Checked with FlopCountAnalysis.unsupported_ops() on every registry model at 224
# and 32 px: SDPA is the only MAC-bearing one (ViT, DeiT, CoAtNet, PVTv2,
# MobileViT); the rest are element-wise/pooling/reductions.
EXTRA_MAC_HANDLES: dict[str, Callable[[Sequence[Any], Sequence[Any]], int]] = {
    "aten::scaled_dot_product_attention": sdpa_mac_handle,
}


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence TracerWarnings and fvcore's log output for the duration."""
    saved = {name: logging.getLogger(name).level for name in _NOISY_LOGGERS}
    try:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _check_inputs(model: nn.Module, example: torch.Tensor) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}; pass the model itself.")
    if not isinstance(example, torch.Tensor):
        raise TypeError(f"example must be a torch.Tensor, got {type(example).__name__}; pass one input batch tensor.")
    if example.dim() < 1 or example.shape[0] != 1:
        raise ValueError(
            f"example must have batch size 1 (got shape {tuple(example.shape)}); "
            "MACs are reported per image, pass example[:1]."
        )


def _analysis(model: nn.Module, example: torch.Tensor) -> FlopCountAnalysis:
    analysis = FlopCountAnalysis(model, example)
    analysis.set_op_handle(**EXTRA_MAC_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


@contextmanager
def _traced_in_eval(model: nn.Module) -> Iterator[None]:
    """Trace in eval mode (no dropout/drop-path randomness), restore mode after.

    ``nn.MultiheadAttention`` (open_clip's ViT towers) takes a fused fast path under ``no_grad`` in eval
    mode, one ``aten::_native_multi_head_attention`` op that hides its projections from the counter;
    it is turned off while tracing, so its in/out projections count as the linear layers they are."""
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), _quiet():
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)


def _run(model: nn.Module, example: torch.Tensor, what: Callable[[FlopCountAnalysis], T]) -> T:
    _check_inputs(model, example)
    with _traced_in_eval(model):
        try:
            return what(_analysis(model, example))
        except Exception as exc:  # tracing failures surface as many exception types
            raise FlopCountError(
                f"could not trace {type(model).__name__} for MAC counting with input shape "
                f"{tuple(example.shape)}: {type(exc).__name__}: {str(exc).rstrip('.')}. Check that the model accepts "
                "this input size (e.g. pass img_size= to timm.create_model) and is jit-traceable."
            ) from exc


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Return the multiply-accumulate count of one forward pass of ``example``.

    ``example`` must have batch size 1. The model is traced in eval mode under
    ``torch.no_grad()``; its train/eval mode is restored afterwards.
    Raises ``FlopCountError`` (naming the model class) when tracing fails.
    """
    return int(_run(model, example, lambda a: a.total()))


def count_gmacs(model: nn.Module, example: torch.Tensor) -> float:
    """Return GMACs (1e9 multiply-adds) for one forward pass of ``example`` (batch 1).

    Same counting rules as timm's published ``infer_gmacs`` (fvcore), plus fused
    attention, which fvcore skips.
    """
    return count_macs(model, example) / 1e9


def uncounted_ops(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Return ``{op name: occurrences}`` of traced ops that contribute no MACs.

    These are ops neither fvcore nor ``EXTRA_MAC_HANDLES`` has a handle for;
    inspect this when adding a new model family to spot MAC-bearing ops that
    would otherwise be silently dropped.
    """
    def collect(analysis: FlopCountAnalysis) -> dict[str, int]:
        analysis.total()
        return dict(analysis.unsupported_ops())

    return _run(model, example, collect)
