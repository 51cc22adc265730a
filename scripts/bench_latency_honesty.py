"""Latency honesty: the harness's reported median against ``torch.utils.benchmark.Timer``.

For each model, in one process and alternating the two, this script

1. runs the real inference case through pytest (``pytest.main`` in-process, pytest-benchmark
   timing it exactly as ``pytest benchmarks`` does) and reads ``latency_p50_ms`` from its JSON;
2. times the same model and input — built by the same :func:`harness.kinds.inference.prepare_inference`
   — with ``torch.utils.benchmark.Timer.blocked_autorange`` and takes its median per call.

The ratio harness/Timer should sit within 0.97–1.03: the harness adds no overhead of its own
and hides none. Several alternating repeats cancel slow drift of a shared machine.

    python scripts/bench_latency_honesty.py --models resnet18,mobilenetv3_large_100 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from torch.utils import benchmark as tbench

ROOT = Path(__file__).resolve().parents[1]
# The suite's default CPU thread count for inference cases (and torch.utils.benchmark's).
THREADS = 1
sys.path.insert(0, str(ROOT))

from harness.backbones.registry import lookup  # noqa: E402
from harness.kinds.inference import prepare_inference  # noqa: E402
from harness.matrix.cases import CaseSpec  # noqa: E402


def harness_median_ms(model: str, img_size: int, bench_time: float, out: Path) -> float:
    """Run the real benchmark case in this process; return its reported median latency."""
    code = pytest.main(
        [
            str(ROOT / "benchmarks" / "test_inference.py"), "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
            "--backbones", model, "--batch-sizes", "1", "--img-sizes", str(img_size), "--devices", "cpu",
            "--bench-time", str(bench_time), "--threads", str(THREADS), f"--benchmark-json={out}", "--benchmark-disable-gc",
        ]
    )
    if code != 0:
        raise SystemExit(f"the benchmark case for {model} did not pass (pytest exit {code})")
    [bench] = json.loads(out.read_text())["benchmarks"]
    return float(bench["extra_info"]["latency_p50_ms"])


def timer_median_ms(model: str, img_size: int, min_run_time: float, workdir: Path) -> float:
    """``torch.utils.benchmark.Timer`` on the same model and input the case builds."""
    entry = lookup(model)
    spec = CaseSpec("inference", model, entry.family, entry.edge, "cpu", 1, img_size, "fp32")
    prepared = prepare_inference(spec, workdir=workdir, threads=THREADS)
    try:
        timer = tbench.Timer(
            stmt="with torch.inference_mode(): model(x)",
            globals={"model": prepared.model, "x": prepared.example, "torch": torch},
            num_threads=THREADS,
        )
        return float(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)
    finally:
        prepared.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenetv3_large_100")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="alternating harness/Timer pairs per model (default 5)")
    parser.add_argument("--bench-time", type=float, default=2.0, help="timed seconds per harness run (default 2.0)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            ratios, harness_ms, timer_ms = [], [], []
            for i in range(args.repeats):
                h = harness_median_ms(model, args.img_size, args.bench_time, Path(tmp) / f"{model}-{i}.json")
                t = timer_median_ms(model, args.img_size, args.bench_time, Path(tmp))
                harness_ms.append(h)
                timer_ms.append(t)
                ratios.append(h / t)
            rows.append((model, statistics.median(harness_ms), statistics.median(timer_ms), statistics.median(ratios), min(ratios), max(ratios)))
    print(f"\ntorch {torch.__version__}, {THREADS} thread(s), batch 1, {args.img_size} px, CPU, {args.repeats} alternating pairs")
    print(f"{'model':28} {'harness p50 ms':>15} {'Timer median ms':>16} {'ratio (median)':>15} {'ratio range':>16}")
    ok = True
    for model, h, t, r, lo, hi in rows:
        print(f"{model:28} {h:15.4f} {t:16.4f} {r:15.4f} {lo:7.3f}..{hi:<7.3f}")
        ok &= 0.97 <= r <= 1.03
    print("within 0.97-1.03" if ok else "OUTSIDE 0.97-1.03")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
