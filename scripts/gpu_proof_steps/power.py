"""Step 5, ``--power`` with NVML: energy per image of an inference case, and what sampling costs.

1. The suite's own case with ``--power`` (resnet18, 224 px, batch 32, bf16, 2 s of rounds):
   ``energy_mj_per_img``, ``power_mean_w``, ``power_source`` from its record.
2. In this process, on the same prepared case: the cost of one NVML read (energy counter and
   power), how often the energy counter moves (its resolution bounds the shortest window
   worth sampling), and the slowdown of the timed loop with the suite's sampler running
   (``pick_sampler``: NVML's energy counter on Volta and newer) and with the polled fallback
   (``PolledSampler`` on NVML power every 50 ms), in interleaved blocks so drift hits both arms.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpu_proof_steps.common import MIN_SESSION_S, StepContext, median, pytest_session

BLOCKS = 6  # interleaved blocks per arm: enough pairs for a median that load drift does not move
BLOCK_S = 0.3
OVERHEAD_TARGET = 0.02  # sampling may cost at most 2% of the median latency (the gate's noise is larger)
READS = 200


def run(ctx: StepContext) -> None:
    size, precision = ("32", "fp32") if ctx.rehearse else ("224", "bf16")
    values: dict[str, str | bool | None] = {
        "backbones": "resnet18", "img-sizes": size, "batch-sizes": "32", "precisions": precision, "devices": ctx.device,
        "bench-time": "2", "power": True,
    }
    session = pytest_session(ctx, "power", ["-m", "inference"], values)
    ctx.require_cuda()

    budget = ctx.budget(25.0)
    if budget >= MIN_SESSION_S:
        session.run(budget)
        ctx.figures["session"] = session.summary()
        if session.problem():
            ctx.unproven(str(session.problem()))
        for record in session.cases.values():
            keys = ("case_id", "status", "energy_mj_per_img", "power_mean_w", "power_source", "power_unavailable", "latency_p50_ms", "rounds")
            ctx.figures["record"] = {key: record.get(key) for key in keys}
            energy = record.get("energy_mj_per_img")
            if ctx.rehearse and record.get("power_unavailable"):
                ctx.unproven(f"energy per image: {record['power_unavailable']}")
                continue
            ctx.check("energy per image recorded by --power", isinstance(energy, float) and energy > 0,
                      f"{energy} mJ/img from {record.get('power_source') or record.get('power_unavailable')}", "> 0 mJ from nvml")
    else:
        ctx.unproven("the --power session did not run: step cap reached")
    if ctx.remaining() > 8:
        _in_process(ctx, int(size), precision)
    else:
        ctx.unproven("NVML read cost and sampling overhead not measured: step cap reached")


def _in_process(ctx: StepContext, size: int, precision: str) -> None:
    from harness.edge.power import PowerSampler
    from harness.edge.samplers import PolledSampler
    from harness.edge.sources import pick_sampler
    from harness.kinds.inference import prepare_inference
    from harness.matrix.cases import CaseSpec
    from harness.measure.timing import plan_rounds, time_rounds

    spec = CaseSpec("inference", "resnet18", "cnn", True, ctx.device, 32, size, precision)
    prepared = prepare_inference(spec, workdir=ctx.raw / "work", threads=1)
    try:
        rounds = plan_rounds(prepared.step, prepared.setup, BLOCK_S)
        arms: dict[str, Callable[[], PowerSampler]] = {}
        found, reason = pick_sampler(ctx.device, None)
        ctx.figures["sampler"] = reason
        nvml = _nvml() if not ctx.rehearse else None
        if found is not None:
            arms[reason] = lambda: pick_sampler(ctx.device, None)[0] or found  # a fresh sampler per block
        else:
            ctx.unproven(f"no power sampler on {ctx.device}: {reason}")
        if nvml is not None:
            handle = nvml.nvmlDeviceGetHandleByIndex(0)
            ctx.figures["nvml"] = _reads(ctx, nvml, handle, prepared.step)
            arms["polled NVML power @50 ms (fallback)"] = lambda: PolledSampler(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0, 0.05, "nvml:power")
        elif ctx.rehearse:
            arms["polled fake read @50 ms (rehearsal)"] = lambda: PolledSampler(lambda: 0.0, 0.05, "fake")
        overheads = {}
        for name, make in arms.items():
            overheads[name] = _overhead(prepared, rounds, make, lambda: time_rounds(prepared.step, prepared.setup, rounds))
            ctx.check(f"sampling overhead, {name}", overheads[name]["paired_median"] <= OVERHEAD_TARGET,
                      f"{100 * overheads[name]['paired_median']:+.2f}%", f"<= {100 * OVERHEAD_TARGET:.0f}%")
        ctx.figures["overhead"] = overheads
    finally:
        prepared.close()


def _nvml() -> Any:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception as exc:  # noqa: BLE001 - ImportError or any NVMLError: the figure says so
        print(f"  NVML unavailable: {type(exc).__name__}: {exc}", flush=True)
        return None


def _reads(ctx: StepContext, nvml: Any, handle: Any, step: Callable[[], None]) -> dict[str, Any]:
    """Microseconds per read of the energy counter and of power, and how often the counter moves under load."""
    out: dict[str, Any] = {}
    for name, read in (("energy_counter", nvml.nvmlDeviceGetTotalEnergyConsumption), ("power", nvml.nvmlDeviceGetPowerUsage)):
        try:
            costs = []
            for _ in range(READS):
                start = time.perf_counter()
                read(handle)
                costs.append(time.perf_counter() - start)
            out[f"{name}_read_us"] = round(1e6 * median(costs), 2)
        except nvml.NVMLError as exc:
            out[f"{name}_read_us"] = f"unavailable: {exc}"
    if isinstance(out.get("energy_counter_read_us"), float):
        changes, last, deadline = [], nvml.nvmlDeviceGetTotalEnergyConsumption(handle), time.perf_counter() + 1.5
        while time.perf_counter() < deadline:
            step()
            value = nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            if value != last:
                changes.append(time.perf_counter())
                last = value
        gaps = [b - a for a, b in zip(changes, changes[1:], strict=False)]
        out["energy_counter_updates_in_1.5s"] = len(changes)
        out["energy_counter_update_ms"] = round(1e3 * median(gaps), 2) if gaps else None
    ctx.log(f"  NVML reads: {out}")
    return out


def _overhead(prepared: Any, rounds: Any, make: Callable[[], Any], timed: Callable[[], list[float]]) -> dict[str, Any]:
    """Median latency without and with a sampler, in interleaved blocks; the median paired slowdown."""
    plain: list[float] = []
    sampled: list[float] = []
    pairs: list[float] = []
    for block in range(BLOCKS):
        result: dict[str, float] = {}
        for arm in (("plain", "sampled") if block % 2 == 0 else ("sampled", "plain")):
            if arm == "plain":
                result[arm] = median(timed())
            else:
                sampler = make()
                sampler.start()
                result[arm] = median(timed())
                sampler.stop()
            (plain if arm == "plain" else sampled).append(result[arm])
        pairs.append(result["sampled"] / result["plain"] - 1)
    return {"plain_ms": round(1e3 * median(plain), 4), "sampled_ms": round(1e3 * median(sampled), 4),
            "paired_median": round(median(pairs), 5), "pairs": [round(p, 5) for p in pairs], "rounds_per_block": rounds.rounds}
