"""What a small-subset training case costs: its wall time against its training time, in this
checkout and in another (e.g. the commit before the per-epoch curve was sampled).

The case is the issue's: an image-folder dataset, a 100-image subset, batch 32, a 2,000-image
test split. The folder is written from the embedded digits: the training split is digits' own
(1,347 images), and the test split is digits' 450 test images repeated with one-pixel shifts to
2,000 (a timing fixture: what is timed is how many images are evaluated, not what they show).
Each checkout runs the same pytest session in its own process, alternately, ``--repeats`` times;
the script prints each run's wall, train and (where recorded) eval seconds and the medians.

    git worktree add /tmp/before <commit>
    python scripts/bench_eval_cost.py --other /tmp/before --epochs 30
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the harness package, run from a checkout
TEST_IMAGES = 2_000


def write_folder(root: Path) -> None:
    import numpy as np
    from PIL import Image

    from harness.data.datasets import load_split

    train, test = (load_split("digits", split, img_size=32) for split in ("train", "test"))  # type: ignore[arg-type]
    for i, (image, label) in enumerate(zip(train.images, train.labels.tolist(), strict=True)):
        folder = root / "train" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy()).save(folder / f"{i:05d}.png")
    shifts = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1)]  # each copy of the 450 moved by one pixel
    for n in range(TEST_IMAGES):
        image, label = test.images[n % len(test)][0].numpy(), int(test.labels[n % len(test)])
        dy, dx = shifts[n // len(test)]
        folder = root / "test" / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.roll(image, (dy, dx), axis=(0, 1))).save(folder / f"{n:05d}.png")


def session(checkout: Path, folder: Path, storage: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider", "-m", "train",
               f"--backbones={args.backbone}", f"--dataset=imagefolder:{folder}", "--subsets=100", "--train-batch-sizes=32",
               f"--seeds={args.seeds}", f"--epochs={args.epochs}", "--devices=cpu", f"--benchmark-storage=file://{storage}",
               "--benchmark-save=evalcost", f"--checkpoint-dir={storage / 'ckpt'}"]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{checkout}: pytest failed (exit {done.returncode})\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    [run] = sorted(storage.glob("*/*_evalcost.json"))[-1:]
    [bench] = json.loads(run.read_text())["benchmarks"]
    run.unlink()
    return bench["extra_info"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, required=True, help="another checkout of backbone-bench (e.g. a git worktree)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "bins"
        write_folder(folder)
        rows: dict[str, list[dict[str, Any]]] = {"this": [], "other": []}
        for _ in range(args.repeats):  # alternate, so a drift of the machine hits both alike
            for name, checkout in (("other", args.other.resolve()), ("this", ROOT)):
                record = session(checkout, folder, Path(tmp) / name, args)
                rows[name].append(record)
                print(f"{name:5s} {checkout}: wall {record['case_wall_s']:.1f} s, train {record['train_time_s']:.1f} s, "
                      f"eval {record.get('eval_time_s', float('nan')):.1f} s, top-1 {record['top1']:.1f}%", flush=True)
        for name, records in rows.items():
            wall = statistics.median(r["case_wall_s"] for r in records)
            train = statistics.median(r["train_time_s"] for r in records)
            print(f"{name}: median wall {wall:.1f} s, train {train:.1f} s ({100 * train / wall:.0f}% of wall)")


if __name__ == "__main__":
    main()
