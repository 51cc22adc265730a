"""Robustness of a real transfer, offline: pretrain on Fashion-MNIST classes 0-4, transfer to 5-9, score
``linear`` and ``finetune`` under every camera corruption (``--robustness``) with the suite.

1. Writes Fashion-MNIST (the real idx files, 28 px grey) as two image folders for ``--dataset imagefolder:PATH``:
   ``OUT/fm04/{train,test}/<class>/*.png`` (classes 0-4: T-shirt .. coat) and ``OUT/fm59`` (5-9: sandal .. ankle
   boot), the first ``--per-class`` training and ``--test-per-class`` test images of each class.
2. Pretrains each backbone from scratch on fm04 (``pytest benchmarks -m train``) and saves the weights as a
   team's own checkpoint ``OUT/weights/<arch>_fm04.safetensors`` (as scripts/digits_transfer.py does).
3. Runs ``linear`` and ``finetune`` on fm59 with ``--robustness`` (saved as ``OUT/storage/<machine>/NNNN_robust.json``),
   then ``python -m harness report`` on it, and prints clean top-1, mCE, relative mCE and the worst corruption.

    python scripts/fmnist_robustness.py --out /tmp/robust-fm
    python scripts/fmnist_robustness.py --out /tmp/robust-fm2 --reuse /tmp/robust-fm   # same folders and weights
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzip) as a numpy array: images [N, 28, 28] uint8 or labels [N] uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def write_folders(out: Path, per_class: int, test_per_class: int) -> None:
    """fm04 and fm59 as image folders of 28 px grey PNGs: the first images of each class, in file order."""
    from PIL import Image

    for split, prefix, limit in (("train", "train", per_class), ("test", "t10k", test_per_class)):
        images, labels = read_idx(SOURCE / f"{prefix}-images-idx3-ubyte.gz"), read_idx(SOURCE / f"{prefix}-labels-idx1-ubyte.gz")
        for label in range(10):
            name = "fm04" if label < 5 else "fm59"
            folder = out / name / split / f"{label}-{CLASSES[label]}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(labels == label)[:limit]:
                Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
    for name in ("fm04", "fm59"):
        (out / name / "dataset.json").write_text(json.dumps({"hflip": True}))  # a mirrored shoe is a shoe


def pytest(args: list[str]) -> float:
    command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-n", "0", "-p", "no:cacheprovider", "-p", "no:randomly", *args]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, text=True, capture_output=True)
    if done.returncode != 0:
        sys.exit(f"pytest failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def save_weights(checkpoints: Path, arch: str, out: Path) -> Path:
    """The pretrained model's weights (its training checkpoint) as safetensors, with its input statistics beside it."""
    import torch
    from safetensors.torch import save_file

    last = next(checkpoints.glob(f"train__{arch}-imagefolder-fm04_full-*/seed0/last.pt"))
    state = torch.load(last, map_location="cpu", weights_only=True)
    path = out / f"{arch}_fm04.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state["model"].items()}, str(path))
    recipe = state["recipe"]
    path.with_name(path.name + ".json").write_text(json.dumps({"mean": list(recipe["mean"]), "std": list(recipe["std"]), "input_size": 32}))
    return path


def summary(storage: Path, report: Path) -> None:
    """The table of the saved runs (``*_robust*``: one session, or one per backbone added later), as harness.results.robustness computes it (the report's numbers)."""
    from harness.results.robustness import robustness_frame
    from harness.results.runs import load_run

    paths = sorted(storage.glob("*/*_robust*.json"))
    frame = robustness_frame([load_run(str(path), storage) for path in paths])
    print(f"\nruns: {', '.join(map(str, paths))}\n\n| backbone | protocol | clean top-1 | mean corruption top-1 | mCE | relative mCE | worst corruption | "
          "robust s | x clean eval |\n|---|---|---|---|---|---|---|---|---|")
    for _, r in frame.iterrows():
        print(f"| {r['backbone_name']} | {r['protocol']} | {r['top1']:.1f} | {r['robust_top1']:.1f} | {r['mce']:.1f} | {r['relative_mce']:.1f} | "
              f"{r['robust_worst']} ({r['robust_worst_top1']:.1f}) | {r['robust_time_s']:.1f} | {r['robust_cost_x']:.1f} |")
    table = {f"{r['backbone_name']}|{r['protocol']}": r["table"] for _, r in frame.iterrows()}
    (report / "robust_tables.json").write_text(json.dumps(table, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backbones", default="resnet18,vit_tiny_patch16_224,mobilevit_xs", help="one per family: cnn, transformer, hybrid")
    parser.add_argument("--per-class", type=int, default=200, help="training images per class (pretraining and transfer)")
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--pretrain-epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100, help="finetune steps")
    parser.add_argument("--robustness", default="all")
    parser.add_argument("--reuse", type=Path, help="an earlier --out: its folders and pretrained weights")
    parser.add_argument("--extra", default="", help="more pytest options for the robustness session")
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        sys.exit(f"{out} exists; pass a new --out")
    archs = args.backbones.split(",")
    storage = out / "storage"
    if args.reuse is not None:
        data = args.reuse.resolve()
        weights = [f"{arch}@{data / 'weights' / f'{arch}_fm04.safetensors'}" for arch in archs]
        out.mkdir(parents=True)
    else:
        data = out
        write_folders(out, args.per_class, args.test_per_class)
        seconds = pytest(["-m", "train", f"--backbones={args.backbones}", f"--dataset=imagefolder:{out / 'fm04'}", "--subsets=full",
                          f"--epochs={args.pretrain_epochs}", "--seeds=1", "--train-batch-sizes=32", "--img-sizes=32",
                          f"--checkpoint-dir={out / 'pretrain'}", f"--benchmark-storage=file://{storage}", "--benchmark-save=pretrain"])
        print(f"pretraining: {seconds:.0f} s")
        weights = [f"{arch}@{save_weights(out / 'pretrain', arch, out / 'weights')}" for arch in archs]
    seconds = pytest(["-m", "train", f"--backbones={','.join(weights)}", "--protocols=linear,finetune", f"--dataset=imagefolder:{data / 'fm59'}",
                      "--subsets=full", f"--seeds={args.seeds}", "--train-batch-sizes=32", "--img-sizes=32", "--tune=off", f"--steps={args.steps}",
                      f"--robustness={args.robustness}", f"--feature-cache={out / 'features'}", f"--checkpoint-dir={out / 'transfer-ckpt'}",
                      f"--benchmark-storage=file://{storage}", "--benchmark-save=robust", *args.extra.split()])
    print(f"robustness session: {seconds:.0f} s")
    report = out / "report"
    subprocess.run([sys.executable, "-m", "harness", "report", *sorted(str(p) for p in storage.glob("*/*_robust.json"))[-1:],
                    "--storage", str(storage), "--out", str(report)], cwd=ROOT, check=True)
    summary(storage, report)


if __name__ == "__main__":
    main()
