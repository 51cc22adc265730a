"""Where a forward's time goes, op by op: torch.profiler's self time per op over a few forwards.

Recorded beside the latency of every eager case (``op_self_ms``), so a flagged latency names the ops
that got slower (:mod:`harness.results.attribution`), not only how much: a hand-written GELU shows as
``aten::tanh``, ``aten::mul`` and ``aten::add`` where ``aten::gelu`` was. Self time, not total: an op's
children are counted once, under their own names, and the rows add up to the forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

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
