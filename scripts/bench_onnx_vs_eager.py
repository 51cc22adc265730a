"""Eager PyTorch vs ONNX Runtime (fp32 and dynamic int8) CPU latency and parity for edge backbones.

Every runtime is wrapped by ``harness.measure.runners.build_runner`` and timed with the same loop:
``--warmup`` untimed ``step()`` calls, then ``--rounds`` calls each bracketed by
``time.perf_counter``; the median is reported (robust to the odd preempted round on a shared box).

    python scripts/bench_onnx_vs_eager.py --models resnet18,mobilenetv3_large_100 --img-size 32 --batch 1 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

try:
    import harness  # noqa: F401 - installed (pip install -e .) or run from the repository root
except ImportError:  # run as `python scripts/...` from a checkout: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.measure.runners import build_runner
from harness.measure.runtimes import ParityError, RuntimeUnsupported, parse_runtime

EDGE_MODELS = (
    "mobilenetv3_large_100", "resnet18", "efficientnet_b0", "regnetx_002",
    "ghostnet_100", "lcnet_100", "repvgg_a2", "mobilevit_xs",
)


def create_backbone(name: str, img_size: int, num_classes: int = 10) -> torch.nn.Module:
    """A randomly initialised timm backbone; ``img_size`` is passed to models that accept it."""
    import timm

    if not timm.is_model(name):
        raise SystemExit(f"unknown timm model {name!r}: check the name with timm.list_models('{name[:6]}*')")
    try:  # ViT/DeiT/Swin/CoAtNet/RepVGG-style models size their position tables or windows from it
        return timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=img_size).eval()
    except TypeError:  # convnets without an img_size argument work at any size
        return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()


def median_ms(step: Callable[[], None], warmup: int, rounds: int) -> float:
    """Median wall time of ``step()`` in milliseconds over ``rounds`` after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_model(name: str, args: argparse.Namespace, runtimes: list[str], workdir: Path) -> list[dict[str, object]]:
    """One row per runtime: latency, speed-up over eager, parity and export cost (or the reason it failed)."""
    try:
        model = create_backbone(name, args.img_size)
    except Exception as exc:  # noqa: BLE001 - a backbone that does not build is a row, not a crash
        return [{"model": name, "runtime": "-", "status": f"build failed: {str(exc).splitlines()[0][:80]}"}]
    torch.manual_seed(0)
    example = torch.randn(args.batch, 3, args.img_size, args.img_size)
    rows: list[dict[str, object]] = []
    eager_ms: float | None = None
    for runtime in runtimes:
        row: dict[str, object] = {"model": name, "runtime": runtime}
        try:
            runner = build_runner(model, example, runtime, device=torch.device("cpu"),
                                  workdir=workdir / name, threads=args.threads)
        except (RuntimeUnsupported, ParityError) as exc:
            rows.append({**row, "status": f"{type(exc).__name__}: {str(exc)[:200]}"})
            continue
        try:
            ms = median_ms(runner.step, args.warmup, args.rounds)
        finally:
            runner.close()
        eager_ms = ms if runtime == "eager" else eager_ms
        info = runner.info
        rows.append({**row, "status": "ok", "ms": ms, "speedup": (eager_ms / ms) if eager_ms else None,
                     "parity": info.get("parity_max_abs"), "rel": info.get("parity_rel"),
                     "prep_s": info.get("export_time_s", info.get("compile_time_s"))})
    return rows


def _fmt(value: object, spec: str) -> str:
    width = int(spec.split(".")[0])
    return "-".rjust(width) if value is None else format(value, spec)


def print_table(rows: list[dict[str, object]]) -> None:
    """Fixed-width table: one line per (model, runtime)."""
    header = f"{'model':<24} {'runtime':<17} {'median ms':>9} {'x eager':>7} {'max|diff|':>9} {'rel':>8} {'prep s':>6}  status"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<24} {r['runtime']:<17} {_fmt(r.get('ms'), '9.2f')} {_fmt(r.get('speedup'), '7.2f')} "
              f"{_fmt(r.get('parity'), '9.1e')} {_fmt(r.get('rel'), '8.1e')} {_fmt(r.get('prep_s'), '6.1f')}  {r['status']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(EDGE_MODELS), help="comma-separated timm names")
    parser.add_argument("--runtimes", default="eager,onnxruntime,onnxruntime-int8",
                        help="comma-separated runtimes; eager first so speed-ups have a baseline")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads")
    # 10 warm-up calls cover ORT's first-run allocations and oneDNN primitive caching; 50 rounds
    # keep one backbone's timing near a second at 32 px while the median stays stable.
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)
    if args.img_size < 8 or args.batch < 1 or args.threads < 1 or args.rounds < 1 or args.warmup < 0:
        parser.error("need --img-size >= 8, --batch >= 1, --threads >= 1, --rounds >= 1, --warmup >= 0")
    try:
        runtimes = [parse_runtime(r) for r in args.runtimes.split(",") if r.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    print(f"torch {torch.__version__}, img {args.img_size}px, batch {args.batch}, threads {args.threads}, "
          f"warmup {args.warmup}, rounds {args.rounds}", flush=True)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as tmp:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            rows.extend(bench_model(name, args, runtimes, Path(tmp)))
            print(f"  done {name}", file=sys.stderr, flush=True)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
