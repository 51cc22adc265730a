"""The steps of ``scripts/gpu_proof.py``: one module each, run in order, each in its own process.

This module only names them; it imports neither torch nor a step, so the orchestrator stays
light and a step that crashes on import is reported as that step's error, not the script's.
Every step module has ``run(ctx: StepContext) -> None``: it builds everything it can without a
GPU (the pytest arguments, parsed by the suite's own option table; the output paths), records
that as its plan, then calls ``ctx.require_cuda()``, which ends a dry run there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepInfo:
    """One step: its name (``--steps``, the log's name), what it proves, and its time cap."""

    name: str
    title: str
    cap_s: float


# The caps add up to 540 s: one device call (10 minutes at most) runs every step with a minute to
# spare, and a rerun of one or two steps (--steps) fits the rest of a 15-minute lease. Each cap
# is the step's CPU-side cost (pytest start-up ~10 s per session; model builds and fvcore's
# GMACs on the CPU, a few seconds per backbone) plus the GPU work its module sizes. Steps stop
# at whole sub-runs, so most end well before their cap.
STEPS: tuple[StepInfo, ...] = (
    StepInfo("latency", "latency honest: harness median vs torch.utils.benchmark.Timer and CUDA events", 60),
    StepInfo("matrix", "inference matrix on CUDA: 7 reference backbones, 224 px, bs 1/32, fp32/fp16/bf16, channels_last, compile", 235),
    StepInfo("train", "training on CUDA: resnet18 on digits, fp32/fp16/bf16, epoch vs compute time, data share, MFU", 75),
    StepInfo("xdist", "xdist on one GPU: -n 2 against a serial run of the same cases", 70),
    StepInfo("power", "--power with NVML: energy per image and the sampling overhead", 40),
    StepInfo("plan", "batch planning on CUDA under --plan-budget 4GiB: estimate vs searched maximum", 60),
)
STEP_NAMES: tuple[str, ...] = tuple(step.name for step in STEPS)
