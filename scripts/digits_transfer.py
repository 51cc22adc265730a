"""A real transfer, offline: pretrain on digits 0-4, transfer to digits 5-9 with every protocol.

1. Writes the embedded digits (scikit-learn's 1,797 real handwritten digits, 32 px, the suite's
   75/25 split) as two image folders in the on-disk layout ``--dataset imagefolder:PATH`` reads:
   ``OUT/digits04/{train,test}/<digit>/*.png`` (digits 0-4) and ``OUT/digits59/...`` (5-9).
2. Pretrains each backbone from scratch on digits04 with the suite (``pytest benchmarks -m train``),
   and saves the trained weights as the team's own checkpoint ``OUT/weights/<arch>_digits04.safetensors``.
3. Runs the transfer session on digits59, classes those weights never saw: ``scratch``, ``finetune``,
   ``linear`` and ``knn`` at three subset sizes with three seeds, plus the inference cases the
   report joins; saved as one run ``OUT/storage/<machine>/NNNN_transfer.json``.
4. Prints top-1 mean ± std per backbone, protocol and subset, each case's wall time, and which
   feature files each linear/knn case read from the cache.

The transfer cases run the suite's defaults: schedules in optimiser steps by the subset size
(harness.training.schedule), LP-FT fine-tuning, and each protocol's hyperparameter chosen on a
validation split of the subset (harness.training.selection). They train at batch 32: at 25-300
images batch 128 is the whole subset, one step an epoch.

    python scripts/digits_transfer.py --out /tmp/transfer
    python scripts/digits_transfer.py --out /tmp/transfer --backbones resnet18 --pretrain-epochs 10
    python scripts/digits_transfer.py --out /tmp/transfer2 --reuse /tmp/transfer   # same folders and weights
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness package, run from a checkout
SOURCE_CLASSES, TARGET_CLASSES = range(0, 5), range(5, 10)


def write_folders(out: Path) -> None:
    """digits04 and digits59 as image folders of 32 px PNGs (the suite's digits split)."""
    from PIL import Image

    from harness.data.datasets import load_split

    for name, classes in (("digits04", SOURCE_CLASSES), ("digits59", TARGET_CLASSES)):
        for split in ("train", "test"):
            data = load_split("digits", split, img_size=32)  # type: ignore[arg-type]
            for i, (image, label) in enumerate(zip(data.images, data.labels.tolist(), strict=True)):
                if label not in classes:
                    continue
                folder = out / name / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")  # grey: the loader replicates it to RGB
        (out / name / "dataset.json").write_text(json.dumps({"hflip": False}))  # a mirrored digit is no digit


def pytest(args: list[str]) -> float:
    command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", *args]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, text=True, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"pytest failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def save_weights(checkpoints: Path, arch: str, out: Path) -> Path:
    """The pretrained model's weights (from its training checkpoint) as a safetensors file, with
    the input statistics it was trained with beside it (``<file>.json``)."""
    import torch
    from safetensors.torch import save_file

    last = next(checkpoints.glob(f"train__{arch}-imagefolder-digits04_full-*/seed0/last.pt"))
    state = torch.load(last, map_location="cpu", weights_only=True)
    path = out / f"{arch}_digits04.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state["model"].items()}, str(path))
    recipe = state["recipe"]
    path.with_name(path.name + ".json").write_text(json.dumps({"mean": list(recipe["mean"]), "std": list(recipe["std"]), "input_size": 32}))
    return path


def latest_run(storage: Path, name: str) -> dict[str, Any]:
    path = sorted(storage.glob(f"*/*_{name}.json"))[-1]
    print(f"run: {path}")
    return json.loads(path.read_text())


def table(run: dict[str, Any]) -> None:
    rows: dict[tuple[str, str], dict[int, str]] = {}
    sizes: set[int] = set()
    print("\n| case | wall s | steps | train s | eval s | feature s | feature cache | chosen per seed |\n|---|---|---|---|---|---|---|---|")
    for bench in run["benchmarks"]:
        e = bench["extra_info"]
        if e["kind"] != "train":
            continue
        seeds = e["top1_per_seed"]
        rows.setdefault((e["backbone_name"], e["protocol"]), {})[e["train_size"]] = (
            f"{statistics.fmean(seeds):.1f} ± {statistics.stdev(seeds) if len(seeds) > 1 else 0.0:.1f}")
        sizes.add(e["train_size"])
        cache = e.get("feature_cache")
        chosen = [{part: c[part]["chosen"] for part in ("head_l2", "lr") if part in c} if "param" not in c else c["chosen"]
                  for c in e.get("tuning") or []]
        print(f"| {e['case_id']} | {e['case_wall_s']:.1f} | {e.get('steps', '–')} | {e.get('train_time_s', 0):.2f} | "
              f"{e.get('eval_time_s', 0):.2f} | {e.get('feature_time_s', 0) or 0:.2f} | {cache or '–'} | {chosen or '–'} |")
    order = sorted(sizes)
    print("\ntop-1 % on digits 5-9 (test: unseen by the pretraining), mean ± std over seeds\n\n| backbone | protocol | "
          + " | ".join(f"{n} images" for n in order) + " |\n|---|---|" + "---|" * len(order))
    for (name, protocol), cells in sorted(rows.items()):
        print(f"| {name} | {protocol} | " + " | ".join(cells.get(n, "–") for n in order) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbones", default="resnet18,mobilenetv3_large_100")
    parser.add_argument("--pretrain-epochs", type=int, default=20, help="epochs of the pretraining on digits 0-4")
    parser.add_argument("--subsets", default="5pc,20pc,60pc", help="digits59 training subsets (per class: 5, 20, 60 images)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--train-batch-size", type=int, default=32)
    parser.add_argument("--reuse", type=Path, help="an earlier --out: take its image folders and pretrained weights instead of pretraining again")
    parser.add_argument("--extra", default="", help="more pytest options for the transfer session, e.g. '--tune off' or '--steps 500'")
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        sys.exit(f"{out} exists; pass a new --out")
    archs = args.backbones.split(",")
    storage = f"--benchmark-storage=file://{out / 'storage'}"
    if args.reuse is not None:
        data, weights_dir = args.reuse.resolve(), args.reuse.resolve() / "weights"
        missing = [str(weights_dir / f"{arch}_digits04.safetensors") for arch in archs if not (weights_dir / f"{arch}_digits04.safetensors").is_file()]
        if missing or not (data / "digits59").is_dir():
            sys.exit(f"--reuse {data}: needs digits59/ and {', '.join(missing) or 'its weights'}; run once without --reuse")
        weights = [f"{arch}@{weights_dir / f'{arch}_digits04.safetensors'}" for arch in archs]
        out.mkdir(parents=True)
    else:
        data = out
        write_folders(out)
        seconds = pytest(["-m", "train", f"--backbones={args.backbones}", f"--dataset=imagefolder:{out / 'digits04'}", "--subsets=full",
                          f"--epochs={args.pretrain_epochs}", "--seeds=1", f"--checkpoint-dir={out / 'pretrain'}", storage,
                          "--benchmark-save=pretrain"])
        print(f"pretraining: {seconds:.0f} s")
        weights = [f"{arch}@{save_weights(out / 'pretrain', arch, out / 'weights')}" for arch in archs]
    seconds = pytest(["-m", "train or inference", f"--backbones={','.join(weights)}", "--protocols=scratch,finetune,linear,knn",
                      f"--dataset=imagefolder:{data / 'digits59'}", f"--subsets={args.subsets}", f"--seeds={args.seeds}",
                      f"--train-batch-sizes={args.train_batch_size}", "--img-sizes=32", "--batch-sizes=1",
                      f"--feature-cache={out / 'features'}", f"--checkpoint-dir={out / 'transfer-ckpt'}", storage,
                      "--benchmark-save=transfer", *args.extra.split()])
    print(f"transfer session: {seconds:.0f} s")
    table(latest_run(out / "storage", "transfer"))


if __name__ == "__main__":
    main()
