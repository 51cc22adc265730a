"""Where a forward's time goes, op by op and module by module, over a few forwards.

Recorded beside the latency of every eager case, so a flagged latency names what got slower
(:mod:`harness.results.attribution`), not only how much:

* ``op_self_ms``: torch.profiler's self time per op. A hand-written GELU shows as ``aten::tanh``,
  ``aten::mul`` and ``aten::add`` where ``aten::gelu`` was.
* ``module_self_ms``: forward hooks' self time per module of the model, modules that repeat (the
  twelve blocks of a ViT) summed under one name with ``*`` for the index: ``blocks.*.mlp.act (GELUTanh)``.
  It says *where in the network* the time went, which the op names cannot: twelve ``aten::add`` rows
  are one row whether the residual or the activation changed.

Self time, not total: a parent's time is counted without its children's, so the rows add up to the
forward and a change is counted once, in the row where it happened.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import torch
from torch import nn

# Forwards profiled: the profiler's own cost is ~1 us an op, so five forwards of a 32 px resnet18
# (~60 ops, ~10 ms each) cost ~50 ms; more would only sharpen ranks the diff does not need.
PROFILED = 5
# Ops kept: each at least 0.5 % of the forward's self time (below that one op cannot explain a
# 10 % slowdown's worth of the change), at most 30 (~1.5 KB of JSON a case).
OP_SHARE = 0.005
OPS_KEPT = 30


def op_self_ms(step: Callable[[], None], device: torch.device, forwards: int = PROFILED) -> dict[str, float]:
    """Milliseconds of self time per forward of each op ``step`` runs (CPU time, plus the device's
    kernel time on CUDA), largest first; ops under :data:`OP_SHARE` of the total are dropped."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if device.type == "cuda" else [])]
    step()  # the first call of a fresh profiler session pays for lazy initialisation, not for any op
    with profile(activities=activities) as prof:
        for _ in range(forwards):
            step()
    totals: dict[str, float] = {}
    for event in prof.key_averages():
        # device_time on CUDA (the kernels); self CPU time otherwise (what the host thread spent in the op).
        us = float(getattr(event, "self_device_time_total", 0.0) or 0.0) if device.type == "cuda" else 0.0
        us = us or float(event.self_cpu_time_total)
        if us > 0:
            totals[event.key] = totals.get(event.key, 0.0) + us / 1000 / forwards
    whole = sum(totals.values()) or 1.0
    kept = sorted(((k, v) for k, v in totals.items() if v >= OP_SHARE * whole), key=lambda kv: -kv[1])[:OPS_KEPT]
    return {name: round(ms, 6) for name, ms in kept}


def module_key(name: str, module: nn.Module) -> str:
    """A module's row: its path with every index as ``*`` (the blocks of a stage are one row), and its class."""
    path = re.sub(r"(^|\.)\d+(?=\.|$)", r"\1*", name) if name else "(model)"
    return f"{path} ({type(module).__name__})"


def module_self_ms(model: nn.Module, step: Callable[[], None], device: torch.device, forwards: int = PROFILED) -> dict[str, float]:
    """Milliseconds of self time per forward of each module row (:func:`module_key`) while ``step`` runs
    ``model``, largest first; rows under :data:`OP_SHARE` of the forward are dropped.

    Each module's forward is timed by a pre- and a post-hook (on CUDA each hook synchronises first, so a
    module holds its kernels' time: slower than the timed forward, and only ever read as a breakdown)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    totals: dict[str, float] = {}
    open_calls: list[list[float]] = []  # per module running now: [start, its children's inclusive time]

    def enter(_module: nn.Module, _args: object) -> None:
        sync()
        open_calls.append([time.perf_counter(), 0.0])

    def leave(key: str, _module: nn.Module, _args: object, _out: object) -> None:
        sync()
        start, children = open_calls.pop()
        inclusive = time.perf_counter() - start
        totals[key] = totals.get(key, 0.0) + inclusive - children
        if open_calls:
            open_calls[-1][1] += inclusive

    step()  # first-call paths (allocator growth, oneDNN primitives) are not any module's steady cost
    handles = []
    for name, module in model.named_modules():
        key = module_key(name, module)
        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(lambda m, a, o, key=key: leave(key, m, a, o)))
    try:
        for _ in range(forwards):
            step()
    finally:
        for handle in handles:
            handle.remove()
    whole = sum(totals.values()) or 1.0
    kept = sorted(((k, v) for k, v in totals.items() if v >= OP_SHARE * whole), key=lambda kv: -kv[1])[:OPS_KEPT]
    return {name: round(seconds * 1000 / forwards, 6) for name, seconds in kept}
