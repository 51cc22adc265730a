"""Write generated segmentation scenes (real Fashion-MNIST or digits objects on textured backgrounds, exact
masks) in the VOC, ADE20K and plain-folder layouts: OUT/voc, OUT/ade, OUT/folder.

    python scripts/make_seg_scenes.py --out /tmp/seg-scenes --fashion /usr/share/datasets/fashion-mnist --train 320 --val 160
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.segscenes, from a checkout

from tests.segscenes import FASHION_NAMES, SCENE_CLASSES, compose, digit_objects, fashion_objects, write_ade, write_folder, write_voc  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fashion", type=Path, help="folder of Fashion-MNIST's idx .gz files (unset: scikit-learn digits 0,1,7,8)")
    parser.add_argument("--train", type=int, default=320)
    parser.add_argument("--val", type=int, default=160)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.fashion is not None:
        # Training scenes from Fashion-MNIST's train split, val scenes from its test split: no object is in both.
        train_obj, val_obj, names = fashion_objects(args.fashion, "train"), fashion_objects(args.fashion, "test"), FASHION_NAMES
    else:
        objects, labels = digit_objects()
        half = len(labels) // 2
        train_obj, val_obj, names = (objects[:half], labels[:half]), (objects[half:], labels[half:]), tuple(str(i) for i in range(10))
    splits = {"train": compose(*train_obj, SCENE_CLASSES, names, args.train, side=args.side, seed=args.seed),
              "val": compose(*val_obj, SCENE_CLASSES, names, args.val, side=args.side, seed=args.seed + 1)}
    write_voc(args.out / "voc", splits)
    write_ade(args.out / "ade", splits)
    write_folder(args.out / "folder", splits)
    print(f"wrote {args.out}/voc, {args.out}/ade, {args.out}/folder: {args.train} train + {args.val} val scenes of {args.side} px, "
          f"classes {', '.join(splits['train'].classes)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
