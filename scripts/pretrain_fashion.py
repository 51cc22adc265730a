"""Pretrain backbones as Fashion-MNIST classifiers, offline, and save them as the team's own checkpoints.

The dense kind's must-show needs "pretrained" weights that can exist here (nothing can be downloaded):
each backbone is trained from scratch to classify Fashion-MNIST garments (all 10 classes, the real 60k
training images) pasted on the textured backgrounds of the segmentation scenes (tests/segscenes.py), at
``--img-size`` px, with AdamW. The weights are saved as ``OUT/<arch>_fmnist.safetensors`` (with its preprocessing sidecar ``.safetensors.json``: mean/std 0.5), passed to the
suite as ``<arch>@OUT/<arch>_fmnist.safetensors``; the script prints each one's test top-1.

    python scripts/pretrain_fashion.py --out /tmp/seg-weights --fashion /usr/share/datasets/fashion-mnist \\
        --backbones resnet18,vit_tiny_patch16_224,mobilevit_xxs --steps 150
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.segscenes import background, fashion_objects  # noqa: E402


def pasted(objects: np.ndarray, side: int, rng: np.random.Generator) -> torch.Tensor:
    """Each garment tinted and pasted at a random place on a textured background: uint8 [N, 3, side, side]."""
    out = np.zeros((len(objects), side, side, 3), dtype=np.uint8)
    h = objects.shape[1]
    for i, grey in enumerate(objects.astype(np.float64)):
        image = background(rng, side)
        y, x = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - h + 1))
        alpha = (grey / 255.0)[..., None]
        image[y : y + h, x : x + h] = image[y : y + h, x : x + h] * (1 - alpha) + rng.uniform(120, 255, 3) * alpha
        out[i] = image.round().clip(0, 255)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def build(arch: str, size: int) -> torch.nn.Module:
    import timm

    try:
        return timm.create_model(arch, num_classes=10, img_size=size)
    except TypeError:
        return timm.create_model(arch, num_classes=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fashion", type=Path, required=True)
    parser.add_argument("--backbones", default="resnet18,vit_tiny_patch16_224,mobilevit_xxs")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    from safetensors.torch import save_file

    rng = np.random.default_rng(0)
    train_x, train_y = fashion_objects(args.fashion, "train")
    test_x, test_y = fashion_objects(args.fashion, "test")
    n_train = args.steps * args.batch
    pick = rng.permutation(len(train_y))[:n_train]
    images, labels = pasted(train_x[pick], args.img_size, rng), torch.from_numpy(train_y[pick])
    test_images, test_labels = pasted(test_x[:1000], args.img_size, rng), torch.from_numpy(test_y[:1000])
    # The suite's from-scratch normalisation ([0, 1] -> [-1, 1]): what an own checkpoint's features are read with.
    norm = lambda x: (x.float() / 255.0 - 0.5) / 0.5  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    for arch in args.backbones.split(","):
        torch.manual_seed(0)
        model = build(arch, args.img_size).train()
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
        start = time.perf_counter()
        for step in range(args.steps):
            lo = step * args.batch
            loss = F.cross_entropy(model(norm(images[lo : lo + args.batch])), labels[lo : lo + args.batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            top1 = float((model(norm(test_images)).argmax(1) == test_labels).float().mean()) * 100
        path = args.out / f"{arch}_fmnist.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        # The sidecar the suite reads a checkpoint's preprocessing from (harness.backbones.refs.with_sidecar):
        # these weights saw [-1, 1] inputs, not ImageNet's statistics.
        path.with_name(path.name + ".json").write_text(json.dumps({"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": args.img_size}))
        print(f"{arch}: {args.steps} steps x {args.batch} in {time.perf_counter() - start:.0f} s, Fashion-MNIST test top-1 {top1:.1f} % "
              f"(1,000 test garments), saved {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
