"""How long ``python -m harness site`` takes: on the committed ``baselines/`` and on a synthetic
storage of 200 runs of 50 cases each (45 inference, 5 train), written in a temporary folder.

    PYTHONPATH=. python scripts/bench_site.py                    # both timings, best of --repeats
    PYTHONPATH=. python scripts/bench_site.py --demo /tmp/demo   # also: baselines/ + 8 runs, slower from the 5th

``--demo DIR`` copies ``baselines/`` into ``DIR/runs``, adds 8 runs derived from the newest
committed run (latencies × a 2% run-to-run noise, × 1.3 from the fifth added run on) and builds
``DIR/site`` from it: the site the README's screenshots show.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.results.site import build_site  # noqa: E402
from tests.data import synth  # noqa: E402

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # 5 backbones × 9 batch sizes = 45 inference cases
_LATENCY = ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms")


def synthetic(storage: Path, runs: int) -> None:
    """``runs`` runs of 45 inference and 5 train cases on one machine, 30% slower from the middle on."""
    rng = np.random.default_rng(0)
    folder = storage / synth.CPU_KEY
    folder.mkdir(parents=True)
    for i in range(runs):
        slow = 1.3 if i >= runs // 2 else 1.0
        benches = [synth.inference_case(b, synth.latency_samples(rng, ms * bs ** 0.7 * slow, rounds=30), batch_size=bs)
                   for b, (_, _, _, ms, _) in synth.BACKBONES.items() for bs in BATCHES]
        benches += [synth.train_case(b, "1k", 1000, [round(float(acc[0] + rng.normal(0, 0.6)), 2) for _ in range(3)])
                    for b, acc in synth.TOP1.items()]
        doc = synth.make_run(benches, synth.CPU_KEY, schema=4)
        doc["commit_info"] = {**doc["commit_info"], "id": f"{i:040x}"}
        doc["datetime"] = f"2026-{1 + i // 28 % 12:02d}-{1 + i % 28:02d}T10:00:00+00:00"
        (folder / f"{i + 1:04d}_nightly.json").write_text(json.dumps(doc) + "\n", encoding="utf-8")


def _slower(doc: dict[str, Any], factor: float) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for bench in doc["benchmarks"]:
        extra = bench["extra_info"]
        if extra.get("kind") != "inference":
            continue
        for key in _LATENCY:
            if isinstance(extra.get(key), (int, float)):
                extra[key] *= factor
        if isinstance(extra.get("throughput_ips"), (int, float)):
            extra["throughput_ips"] /= factor
        if isinstance(extra.get("latency_samples_ms"), list):
            extra["latency_samples_ms"] = [v * factor for v in extra["latency_samples_ms"]]
    return doc


def demo(out: Path, added: int = 8) -> Path:
    """``out/runs``: baselines/ plus ``added`` runs after its newest, 30% slower from the fifth; the site in ``out/site``."""
    runs = out / "runs"
    shutil.copytree(ROOT / "baselines", runs)
    folder = sorted(p for p in runs.iterdir() if p.is_dir())[0]
    newest = sorted(folder.glob("*.json"))[-1]
    doc, number = json.loads(newest.read_text()), int(newest.name[:4])
    rng = np.random.default_rng(1)
    for i in range(added):
        run = _slower(doc, float(rng.lognormal(0, 0.02)) * (1.3 if i >= added // 2 else 1.0))
        run["commit_info"] = {**run["commit_info"], "id": f"{0xdec0de + i:040x}"}
        run["datetime"] = f"2026-12-{5 + i:02d}T10:00:00+00:00"
        (folder / f"{number + 1 + i:04d}_demo.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
    return build_site(runs, out / "site").out


def _best(storage: Path, out: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        build_site(storage, out)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="synthetic runs (default: 200)")
    parser.add_argument("--repeats", type=int, default=2, help="builds per storage; the best is printed (default: 2)")
    parser.add_argument("--demo", type=Path, help="also write the demo storage and site here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = _best(ROOT / "baselines", Path(tmp) / "site-baselines", args.repeats)
        print(f"baselines/: {sum(1 for _ in (ROOT / 'baselines').glob('*/*.json'))} runs, build {base:.2f} s")
        synthetic(Path(tmp) / "runs", args.runs)
        big = _best(Path(tmp) / "runs", Path(tmp) / "site", args.repeats)
        size = sum(p.stat().st_size for p in (Path(tmp) / "site").rglob("*") if p.is_file())
        pages = sum(1 for _ in (Path(tmp) / "site").rglob("*.html"))
        print(f"synthetic: {args.runs} runs × 50 cases, build {big:.2f} s, {pages} pages, {size / 2**20:.1f} MiB")
    if args.demo is not None:
        print(f"demo site: {demo(args.demo) / 'index.html'}")


if __name__ == "__main__":
    main()
