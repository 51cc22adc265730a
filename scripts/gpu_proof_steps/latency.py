"""Step 1, latency honesty: the suite's median against ``torch.utils.benchmark.Timer`` and CUDA events.

For each configuration one model and one input are built by the inference kind's own
:func:`harness.kinds.inference.prepare_inference`, and in one process, alternating, timed by

* the harness: :func:`harness.measure.timing.plan_rounds` then :func:`~harness.measure.timing.time_rounds`
  on the prepared ``step``/``setup`` (the protocol ``benchmark.pedantic`` runs in a pytest
  session), median by :class:`~harness.measure.timing.LatencyStats` as the record reports it;
* ``torch.utils.benchmark.Timer.blocked_autorange`` on ``model(x)`` (synchronised at block ends);
* CUDA events around each ``model(x)``, the host waiting on the end event before the next call.

The ratios harness/Timer and harness/events are the medians of the alternating pairs; the pass
band is 0.97-1.03 (the harness adds no overhead of its own and hides none).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from itertools import product
from typing import Any

from gpu_proof_steps.common import StepContext, median

MODELS = ("resnet18", "vit_base_patch16_224")
BATCHES = (1, 32)
PRECISIONS = ("fp32", "bf16")
IMG_SIZE = 224
# 3 alternating repeats of 0.25 s per method: 8 configurations x 3 methods x 3 repeats x 0.25 s is
# 18 s of timing, the rest of the 70 s cap is model builds and fvcore's GMACs on the CPU.
REPEATS = 3
TIME_S = 0.25
BAND = (0.97, 1.03)
# CUDA-event rounds: at least as many as the harness's least (20), at most its most (2000).
MIN_ROUNDS, MAX_ROUNDS = 20, 2000


def run(ctx: StepContext) -> None:
    models: tuple[str, ...] = MODELS
    batches: tuple[int, ...] = BATCHES
    precisions: tuple[str, ...] = PRECISIONS
    img_size = IMG_SIZE
    if ctx.rehearse:
        models, batches, precisions, img_size = ("resnet18",), (1,), ("fp32",), 32
    configs = list(product(models, batches, precisions))
    ctx.plan("configs", [f"{m} bs{b} {img_size}px {p}" for m, b, p in configs])
    ctx.plan("timing path", "harness.kinds.inference.prepare_inference -> harness.measure.timing.plan_rounds + time_rounds -> LatencyStats.p50_ms")
    ctx.plan("band", list(BAND))
    ctx.plan("workdir", str(ctx.raw / "work"))
    ctx.require_cuda()

    from harness.backbones.registry import lookup
    from harness.kinds.inference import prepare_inference
    from harness.matrix.cases import CaseSpec

    rows: list[dict[str, Any]] = []
    for index, (model, batch, precision) in enumerate(configs):
        if ctx.remaining() < 8:  # a vit_base build and three timings need about that
            ctx.unproven(f"latency of {len(configs) - index} configuration(s) not measured: step cap reached")
            break
        entry = lookup(model)
        spec = CaseSpec("inference", model, entry.family, entry.edge, ctx.device, batch, img_size, precision)
        prepared = prepare_inference(spec, workdir=ctx.raw / "work", threads=1)
        try:
            rows.append(_measure(ctx, spec.id, prepared, batch))
        finally:
            prepared.close()
    ctx.figures["rows"] = rows
    for row in rows:
        for method in ("timer", "events"):
            ratio = row.get(f"ratio_{method}")
            if ratio is not None:
                ctx.check(f"{row['case']} harness/{method}", BAND[0] <= ratio <= BAND[1], round(ratio, 4), f"{BAND[0]}-{BAND[1]}")
    if ctx.rehearse:
        ctx.unproven("CUDA events: rehearsal on the CPU has none")


def _measure(ctx: StepContext, case: str, prepared: Any, batch: int) -> dict[str, Any]:
    """Alternate the three timers ``REPEATS`` times on one prepared case; medians and paired ratios."""
    import torch
    from torch.utils import benchmark as tbench

    from harness.measure.timing import LatencyStats, plan_rounds, time_rounds

    model, x = prepared.model, prepared.example
    cuda = x.device.type == "cuda"

    def harness_ms() -> float:
        plan = plan_rounds(prepared.step, prepared.setup, TIME_S)
        return LatencyStats(time_rounds(prepared.step, prepared.setup, plan), batch).p50_ms

    def timer_ms() -> float:
        timer = tbench.Timer(stmt="with torch.inference_mode(): model(x)", globals={"model": model, "x": x, "torch": torch},
                             num_threads=torch.get_num_threads())
        return float(timer.blocked_autorange(min_run_time=TIME_S).median * 1e3)

    def events_ms() -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times: list[float] = []
        deadline = time.perf_counter() + TIME_S
        with torch.inference_mode():
            for _ in range(3):  # warm-up, as the harness's plan_rounds does
                model(x)
            torch.cuda.synchronize()
            while len(times) < MAX_ROUNDS and (len(times) < MIN_ROUNDS or time.perf_counter() < deadline):
                start.record()
                model(x)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
        return median(times)

    methods: dict[str, Callable[[], float]] = {"harness": harness_ms, "timer": timer_ms}
    if cuda:
        methods["events"] = events_ms
    samples: dict[str, list[float]] = {name: [] for name in methods}
    for repeat in range(REPEATS):
        order = list(methods) if repeat % 2 == 0 else list(reversed(methods))  # alternate so drift hits all alike
        for name in order:
            samples[name].append(methods[name]())
    row: dict[str, Any] = {"case": case, **{f"{name}_ms": round(median(v), 4) for name, v in samples.items()}}
    for name in methods:
        if name != "harness":
            pairs = [h / o for h, o in zip(samples["harness"], samples[name], strict=True)]
            row[f"ratio_{name}"] = median(pairs)
            row[f"ratio_{name}_range"] = [round(min(pairs), 4), round(max(pairs), 4)]
    ctx.log(f"  {case}: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "case"))
    return row
