"""Images/s to load a training split from an image folder and from its WebDataset shards, both cold.

Writes the embedded digits (the suite's training split, 32 px grey PNGs, ``--copies`` times over)
as an image folder, converts it with ``python -m harness data to-wds``, then loads the training
split of each through ``harness.data.datasets.load_split`` at ``--img-size``:

* folder: ``imagefolder:`` (ImageFolder's directory scan, then PIL decode and resize);
* shards cold: ``wds:`` with an empty data root, so the label index is built first (one scan of
  the tars reading no image, then one streaming decode pass);
* shards indexed: ``wds:`` again with the index cached (what every later session reads).

"Cold" means nothing of the split is cached by the suite (its per-process split cache is cleared and
each shard round gets a new data root); the files themselves are in the OS page cache after being
written, on both sides alike. Imports happen before any timing. Each is run ``--rounds`` times,
alternating, and the best round is reported: on a shared machine interference only slows a round.

    nice -n 19 python scripts/bench_wds_read.py --copies 4 --rounds 3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

import harness.data.imagefolder  # noqa: E402, F401  (torchvision: imported before timing)
import harness.data.shards  # noqa: E402, F401
from harness.cli.main import main as harness_main  # noqa: E402
from harness.data.datasets import clear_cache, load_split  # noqa: E402


def write_folder(out: Path, copies: int) -> int:
    """The digits training and test splits ``copies`` times over as ``out/{train,test}/<digit>/*.png``; the training count."""
    count = 0
    for split in ("train", "test"):
        data = load_split("digits", split, img_size=32)  # type: ignore[arg-type]
        clear_cache()
        for copy in range(copies):
            for i, (image, label) in enumerate(zip(data.images, data.labels.tolist(), strict=True)):
                folder = out / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[0].numpy()).save(folder / f"{copy}_{i:04d}.png")
                count += split == "train"
    return count


def timed(name: str, root: Path, img_size: int) -> tuple[float, int]:
    """Seconds to load ``name``'s training split with the per-process split cache cleared, and its length."""
    clear_cache()
    start = time.perf_counter()
    n = len(load_split(name, "train", root=root, img_size=img_size))
    return time.perf_counter() - start, n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=4, help="times the 1,347 training digits are repeated (default: 4)")
    parser.add_argument("--img-size", type=int, default=32, help="the held size the split is resized to (default: 32)")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed loads of each (default: 3; the best is reported)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        n = write_folder(base / "folder", args.copies)
        if harness_main(["data", "to-wds", str(base / "folder"), str(base / "shards"), "--shard-size", str(args.shard_size)]) != 0:
            sys.exit("to-wds failed")
        shards = sorted((base / "shards").glob("train-*.tar"))
        wds = f"wds:{base / 'shards'}/train-{{000000..{len(shards) - 1:06d}}}.tar"
        best: dict[str, float] = {}
        for r in range(args.rounds):
            root = base / f"root{r}"
            results = {
                "image folder (cold)": timed(f"imagefolder:{base / 'folder'}", root, args.img_size),
                "shards (cold: index built)": timed(wds, root, args.img_size),
                "shards (index cached)": timed(wds, root, args.img_size),
            }
            for name, (seconds, loaded) in results.items():
                assert loaded == n, (name, loaded, n)
                best[name] = min(best.get(name, float("inf")), seconds)
        size = sum(p.stat().st_size for p in shards) / 2**20
        print(f"{n} training images, {args.img_size} px, {len(shards)} shards of {args.shard_size} ({size:.1f} MiB); best of {args.rounds}:")
        for name, seconds in best.items():
            print(f"  {name:<28} {seconds:6.2f} s  {n / seconds:8.0f} images/s")


if __name__ == "__main__":
    main()
