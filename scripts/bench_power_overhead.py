"""How much does power sampling slow the latency it brackets?

Runs resnet18 at 32 px, batch 1, on the CPU and compares the median per-image latency with
and without a power sampler running, in interleaved blocks (A B B A ...) so drift in machine
load hits both arms alike. Uses the sampler ``pick_sampler`` finds for this machine; when
there is none, runs the samplers' threads against fake sources at their real polling rates
(tegrastats line parsing at 100 ms, NVML-style polling at 50 ms) and says so.

    python scripts/bench_power_overhead.py [--repeats 6] [--iters 40] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.edge.jetson import jetson_facts  # noqa: E402
from harness.edge.power import PowerSampler  # noqa: E402
from harness.edge.samplers import PolledSampler, TegrastatsSampler  # noqa: E402
from harness.edge.sources import pick_sampler  # noqa: E402

SAMPLE_LINE = (
    "04-27-2026 14:59:41 RAM 775/7620MB (lfb 3x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,0%@729,0%@729,0%@729,"
    "0%@729,0%@729] GR3D_FREQ 0% cpu@48.468C soc2@47.531C soc0@48.062C gpu@48.562C tj@49.156C soc1@49.156C "
    "VDD_IN 4761mW/4778mW VDD_CPU_GPU_CV 515mW/501mW VDD_SOC 1428mW/1428mW"
)


class _PacedLines:
    """Stands in for the tegrastats process: one recorded line every ``interval_s``."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s, self._stopped = interval_s, False
        self.stdout = self._lines()

    def _lines(self) -> Iterator[str]:
        while not self._stopped:
            yield SAMPLE_LINE + "\n"
            time.sleep(self._interval_s)

    def terminate(self) -> None:
        self._stopped = True

    def wait(self) -> int:
        return 0


def _latencies(model: torch.nn.Module, image: torch.Tensor, iters: int) -> list[float]:
    out = []
    with torch.inference_mode():
        for _ in range(iters):
            begin = time.perf_counter()
            model(image)
            out.append(time.perf_counter() - begin)
    return out


def measure(
    make: Callable[[], PowerSampler], model: torch.nn.Module, image: torch.Tensor, repeats: int, iters: int
) -> tuple[float, float, list[float]]:
    """Median latency (s) without and with the sampler, and the per-repeat paired slowdowns.

    Each repeat runs one block per arm back to back (order alternating), so the pair shares
    the machine's load at that moment; the median of the pairs' ratios resists load drift.
    """
    plain: list[float] = []
    sampled: list[float] = []
    paired: list[float] = []
    for repeat in range(repeats):
        block: dict[str, float] = {}
        for arm in ("plain", "sampled") if repeat % 2 == 0 else ("sampled", "plain"):
            if arm == "plain":
                times = _latencies(model, image, iters)
                plain += times
            else:
                sampler = make()
                sampler.start()
                times = _latencies(model, image, iters)
                sampler.stop()
                sampled += times
            block[arm] = statistics.median(times)
        paired.append(block["sampled"] / block["plain"] - 1)
    return statistics.median(plain), statistics.median(sampled), paired


def sampler_cpu_share(make: Callable[[], PowerSampler], seconds: float = 3.0) -> float:
    """Fraction of one core the sampler's own work uses (process CPU time while idle otherwise).

    Independent of other load on the machine, so it bounds the slowdown even where the
    latency comparison is lost in noise.
    """
    sampler = make()
    cpu_before = time.process_time()
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    return (time.process_time() - cpu_before) / seconds


def main() -> None:
    """Print per-sampler median latencies and the slowdown in percent."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)  # 6 blocks per arm: enough to interleave drift out
    parser.add_argument("--iters", type=int, default=40)  # 40 x ~5 ms = ~0.2 s blocks: several samples each
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = torchvision.models.resnet18(weights=None).eval()
    image = torch.randn(1, 3, 32, 32)
    _latencies(model, image, 20)  # warm-up: first calls pay allocator and oneDNN setup

    sampler, reason = pick_sampler("cpu", jetson_facts())
    candidates: dict[str, Callable[[], PowerSampler]] = {}
    if sampler is not None:
        print(f"power source on this machine: {reason}")
        candidates[reason] = lambda: pick_sampler("cpu", jetson_facts())[0]  # type: ignore[return-value]
    else:
        print(f"no readable power source here ({reason});")
        print("measuring the sampler threads against fake sources at their real polling rates instead")
        candidates["tegrastats parser thread, fake lines @100 ms"] = lambda: TegrastatsSampler(
            100, popen=lambda command: _PacedLines(0.1)
        )
        candidates["polling thread (NVML-style) @50 ms, fake read"] = lambda: PolledSampler(lambda: 4.2, 0.05, "fake")
    print(f"resnet18 32px batch 1, {args.threads} threads, {args.repeats} interleaved blocks x {args.iters} iters")
    for name, make in candidates.items():
        share = sampler_cpu_share(make)
        print(f"{name}: sampler thread uses {100 * share:.3f}% of one core")
        plain, sampled, paired = measure(make, model, image, args.repeats, args.iters)
        quartiles = statistics.quantiles(paired, n=4)
        print(
            f"{name}: median {plain * 1e3:.3f} ms without, {sampled * 1e3:.3f} ms with -> "
            f"overhead {100 * (sampled / plain - 1):+.2f}% (pooled), {100 * statistics.median(paired):+.2f}% "
            f"(median of {len(paired)} paired blocks, IQR {100 * quartiles[0]:+.2f}..{100 * quartiles[2]:+.2f}%)"
        )


if __name__ == "__main__":
    main()
