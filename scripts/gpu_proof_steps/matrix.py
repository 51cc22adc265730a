"""Step 2, the inference matrix on CUDA through the suite's real entry point (``pytest benchmarks``).

Sessions, in order of what they prove (each its own timeout, shares of the step's cap):

1. ``eager``: the seven reference backbones at 224 px, batch 1 and 32, fp32/fp16/bf16;
2. ``eager-again``: the same selection in a new process; ``peak_mem_bytes``
   (``torch.cuda.max_memory_allocated`` over one forward) must be identical case for case;
3. ``channels-last``: the same selection with ``--channels-last``;
4. ``compile``: ``--compile`` (eager and compile runtimes) for vit_base_patch16_224, and
   ``compile-channels-last`` for resnet50 (a CNN, where the layout matters), at batch 32 bf16:
   Inductor spends ~20-60 s compiling each shape, so the whole matrix would be 84 compilations,
   about an hour. What is left out is named under "could not be proven".

A session writes its JSON only when it ends, so each is sized to end inside its share; the
shares are upper bounds and the step's cap decides (the compile sessions get what the eager
ones leave).

``--bench-time 0.1`` gives each case 20 rounds or more (the suite's least), which a p50 needs,
and keeps 84 eager cases near a minute per session.
"""

from __future__ import annotations

from typing import Any

from gpu_proof_steps.common import MIN_SESSION_S, PytestRun, StepContext, pytest_session

# The seven reference backbones: the first block of harness.backbones.registry' registry (checked in run()).
REFERENCE = (
    "convnextv2_tiny", "tf_efficientnetv2_s", "mobilenetv3_large_100", "resnet50",
    "vit_base_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224",
)
COMPILE_BACKBONES = ("vit_base_patch16_224",)
COMPILE_CL_BACKBONES = ("resnet50",)  # a CNN: channels_last changes its convolution kernels
BENCH_TIME_S = "0.1"
# The most seconds each session may take (scaled with the cap); the 235 s cap bounds them together.
SHARES = {"eager": 60.0, "eager-again": 50.0, "channels-last": 55.0, "compile": 60.0, "compile-channels-last": 60.0}


def sessions(ctx: StepContext) -> list[tuple[PytestRun, float]]:
    """The five sessions with their time shares, built (and their options parsed) but not run."""
    backbones, batches, precisions, img = ",".join(REFERENCE), "1,32", "fp32,fp16,bf16", "224"
    compile_b, compile_cl_b, compile_bs, compile_p = ",".join(COMPILE_BACKBONES), ",".join(COMPILE_CL_BACKBONES), "32", "bf16"
    if ctx.rehearse:
        backbones, batches, precisions, img = "resnet18,mobilenetv3_large_100", "1", "fp32,bf16", "32"
        compile_b = compile_cl_b = "resnet18"
        compile_bs, compile_p = "1", "fp32"
    base: dict[str, str | bool | None] = {
        "backbones": backbones, "img-sizes": img, "batch-sizes": batches, "precisions": precisions,
        "devices": ctx.device, "runtimes": "eager", "bench-time": BENCH_TIME_S,
    }
    compiled = {**base, "backbones": compile_b, "batch-sizes": compile_bs, "precisions": compile_p, "compile": True}
    values: dict[str, dict[str, str | bool | None]] = {
        "eager": base,
        "eager-again": base,
        "channels-last": {**base, "channels-last": True},
        "compile": compiled,
        "compile-channels-last": {**compiled, "backbones": compile_cl_b, "channels-last": True},
    }
    return [(pytest_session(ctx, label, ["-m", "inference"], v), SHARES[label]) for label, v in values.items()]


def run(ctx: StepContext) -> None:
    from harness.backbones.registry import REGISTRY

    missing = [name for name in REFERENCE if name not in REGISTRY]
    if missing:
        raise AssertionError(f"reference backbones missing from harness.backbones.registry.REGISTRY: {missing}")
    planned = sessions(ctx)
    ctx.require_cuda()

    done: dict[str, PytestRun] = {}
    for run_, share in planned:
        if ctx.rehearse and run_.label.startswith("compile"):
            ctx.unproven(f"session {run_.label!r} not run: torch.compile on the CPU is left out of a rehearsal")
            continue
        budget = ctx.budget(share)
        if budget < MIN_SESSION_S:
            ctx.unproven(f"session {run_.label!r} not run: {ctx.remaining():.0f} s left of the step's cap")
            continue
        done[run_.label] = run_.run(budget)
        problem = run_.problem()
        if problem:
            ctx.unproven(problem)
    ctx.figures["sessions"] = {label: r.summary() for label, r in done.items()}
    rows = [_row(label, case) for label, r in done.items() if label != "eager-again" for case in r.cases.values()]
    ctx.figures["cases"] = rows
    for row in rows:
        ctx.log(f"  {row['session']:22} {row['case']:58} {row['status']:6} p50 {row['p50_ms']} ms  {row['ips']} img/s  peak {row['peak_mib']} MiB")
    failed = [row["case"] for row in rows if row["status"] != "ok"]
    if rows:
        ctx.check("inference cases recorded ok", not failed, f"{len(rows) - len(failed)}/{len(rows)} ok" + (f"; failed: {failed[:5]}" if failed else ""), "all ok")
    if "eager" in done and "eager-again" in done:
        _memory_repeats(ctx, done["eager"], done["eager-again"])
    skipped = sum(r.counts.get("skipped", 0) for r in done.values())
    if skipped:
        ctx.unproven(f"{skipped} case(s) skipped by the suite (reasons in figures.sessions.*.skips)")
    if not ctx.rehearse:
        ctx.unproven(f"--compile ran at batch 32 bf16 only, for {', '.join(COMPILE_BACKBONES)} (contiguous) and {', '.join(COMPILE_CL_BACKBONES)} "
                     "(channels_last): the other 80 compiled shapes would take about an hour of Inductor compilation")


def _row(label: str, case: dict[str, Any] | Any) -> dict[str, Any]:
    peak = case.get("peak_mem_bytes")
    p50 = case.get("latency_p50_ms")
    ips = case.get("throughput_ips")
    return {
        "session": label, "case": case["case_id"], "status": case.get("status"),
        "p50_ms": round(p50, 4) if isinstance(p50, float) else p50,
        "ips": round(ips, 1) if isinstance(ips, float) else ips,
        "peak_mem_bytes": peak, "peak_mib": round(peak / 2**20, 1) if isinstance(peak, int) else None,
        "error": case.get("error"),
    }


def _memory_repeats(ctx: StepContext, first: PytestRun, second: PytestRun) -> None:
    """``peak_mem_bytes`` of every case both sessions recorded, compared byte for byte."""
    common = sorted(set(first.cases) & set(second.cases))
    differ = [
        {"case": cid, "first": first.cases[cid].get("peak_mem_bytes"), "second": second.cases[cid].get("peak_mem_bytes")}
        for cid in common
        if first.cases[cid].get("peak_mem_bytes") != second.cases[cid].get("peak_mem_bytes")
    ]
    ctx.figures["memory_repeat"] = {"compared": len(common), "differ": differ}
    ctx.check("peak_mem_bytes identical across two runs", bool(common) and not differ,
              f"{len(common) - len(differ)}/{len(common)} identical", "all identical")
    only = sorted(set(first.cases) ^ set(second.cases))
    if only:
        ctx.unproven(f"{len(only)} case(s) recorded by one eager session only: memory not compared for them")
