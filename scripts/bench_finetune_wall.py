"""Where a small-subset fine-tune case's wall goes, before and after LP-FT extracted only its own images.

One process runs the same ``finetune`` case twice through the library (``harness.kinds.train``),
each time on an empty feature cache: ``before`` with the features of the whole training split
extracted first (what LP-FT did until then: :func:`harness.protocols.frozen.extract_train_features`
without ``only``), ``after`` as the suite runs it now (the union of the seeds' subsets). It prints each
run's ``wall_breakdown_s`` (features, search, train, eval, other), the case's top-1, and the ratio
after / before of every phase and of the whole: ratios within one process, so the host's load
moves both runs alike.

The default case is the issue's shape: ``--dataset fashion_mnist`` (60,000 training images read
from ``ROOT/FashionMNIST/raw``), a 100-image subset, batch 32, the Fashion-MNIST transfer weights
of ``scripts/fashion_transfer.py``; ``--steps`` shortens the schedule to keep the script affordable
on a shared CPU (the steps are the same in both runs: what changes is not the steps).

    mkdir -p /tmp/ft-raw/FashionMNIST/raw && for f in /usr/share/datasets/fashion-mnist/*.gz; do
        gunzip -c $f > /tmp/ft-raw/FashionMNIST/raw/$(basename $f .gz); done
    python scripts/bench_finetune_wall.py --data-root /tmp/ft-raw \\
        --weights test_resnet@/tmp/ft-fm/weights/test_resnet_fmnist04.safetensors --steps 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness package, run from a checkout
PHASES = ("features", "search", "train", "eval", "other")


def run_case(args: argparse.Namespace, work: Path, whole_split: bool) -> tuple[dict[str, Any], float]:
    import pytest

    from harness.config.options import default_settings
    from harness.kinds import train as train_kind
    from harness.kinds.train import cases as train_cases
    from harness.protocols import finetune, frozen

    settings = default_settings(backbones=[args.weights], protocols=["finetune"], subsets=[args.subset], devices=["cpu"],
                                datasets=[args.dataset], data_root=args.data_root, seeds=args.seeds, steps=args.steps,
                                train_batch_sizes=[32], img_sizes=[32], feature_cache=work / "features", checkpoint_dir=work / "ckpt")
    [case] = [c.spec for c in train_cases(settings)]
    patch = pytest.MonkeyPatch()
    if whole_split:  # the code before: the whole training split's features, cached, whatever the subset
        patch.setattr(finetune, "extract_train_features", lambda spec, options, split, only=None: frozen.extract_train_features(spec, options, split))
    started = time.perf_counter()
    try:
        record = train_kind.run_train_case(case, settings)
    finally:
        patch.undo()
    return record, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="ARCH@FILE.safetensors (with its FILE.json sidecar)")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-root", type=Path, default=Path("/tmp/ft-raw"))
    parser.add_argument("--subset", default="100")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=100, help="the schedule of both runs (default 100: affordable on a shared CPU)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # a shared 2-core host: one thread is steadier than two contended ones
    rows: dict[str, tuple[dict[str, Any], float]] = {}
    with tempfile.TemporaryDirectory(prefix="ft-wall-") as tmp:
        for name, whole in (("before", True), ("after", False)):
            rows[name] = run_case(args, Path(tmp) / name, whole)
            record, seconds = rows[name]
            print(f"{name}: top-1 {record['top1']:.2f}  features {record['feature_cache']} ({record.get('feature_images', 'whole split')} images)  case {seconds:.1f} s", flush=True)
    print(f"\n{args.dataset} {args.subset} images, {args.seeds} seed(s), {args.steps} steps, {args.weights.split('@')[0]}; seconds (share of the case)\n")
    print("| phase | before | after | after / before |\n|---|---|---|---|")
    for phase in PHASES:
        b, a = rows["before"][0]["wall_breakdown_s"][phase], rows["after"][0]["wall_breakdown_s"][phase]
        tb, ta = rows["before"][1], rows["after"][1]
        print(f"| {phase} | {b:.1f} ({b / tb:.0%}) | {a:.1f} ({a / ta:.0%}) | {a / b if b else float('nan'):.3f} |")
    tb, ta = rows["before"][1], rows["after"][1]
    lb, la = (rows[n][1] - sum(rows[n][0]["wall_breakdown_s"].values()) for n in ("before", "after"))
    print(f"| data loading (outside the seed loop) | {lb:.1f} ({lb / tb:.0%}) | {la:.1f} ({la / ta:.0%}) | {la / lb:.3f} |")
    print(f"| whole case | {tb:.1f} | {ta:.1f} | {ta / tb:.3f} |")


if __name__ == "__main__":
    main()
