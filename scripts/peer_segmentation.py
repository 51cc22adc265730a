"""A plain-torch linear segmentation probe, written without the harness, to check the dense kind's mIoU.

Same protocol, independent code: reads the VOC or ADE20K layout with PIL, builds the timm backbone (a
checkpoint file through timm's own loader, its classifier dropped) or a team's ``pkg.module:factory``
(imported from the working directory, called with ``num_classes=10``, the checkpoint's tensors but the
``head.*`` ones loaded with every other key required, then ``reset_classifier(0)``), takes the last four maps of
``forward_intermediates``, resizes them once to the largest map and concatenates them (the same linear
operation the suite's head does per batch), then trains BatchNorm + 1x1 conv with AdamW (wd 1e-4, lr
decaying linearly to 0) for ``--steps`` steps at batch 16, choosing lr in {1e-3, 3e-3, 1e-2} on a random
20 % of the training images by validation mIoU, retraining on all, and scoring the val split's mIoU from
a numpy confusion matrix (ignore 255; classes with no pixel in labels or predictions left out).

    python scripts/peer_segmentation.py --dataset voc:/tmp/seg-scenes/voc --backbone resnet18@/tmp/w/resnet18_fmnist.safetensors
    python scripts/peer_segmentation.py --dataset voc:/tmp/seg-scenes/voc \\
        --backbone examples.vit_patch8:build@/tmp/w/vit_tiny_patch16_224_p8_fmnist.safetensors --backbone examples.vit_patch8:build
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

IGNORE, BATCH, GRID = 255, 16, (1e-3, 3e-3, 1e-2)


def read(dataset: str, split: str, side: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    form, root = dataset.split(":", 1)
    base = Path(root)
    names = [line for line in (base / "classes.txt").read_text().splitlines() if line.strip()]
    if form == "voc":
        stems = [s for s in (base / "ImageSets/Segmentation" / f"{split}.txt").read_text().split() if s]
        pairs = [(base / "JPEGImages" / f"{s}.jpg", base / "SegmentationClass" / f"{s}.png") for s in stems]
    else:
        where = {"train": "training", "val": "validation"}[split]
        pairs = [(p, base / "annotations" / where / f"{p.stem}.png") for p in sorted((base / "images" / where).glob("*.jpg"))]
    images, masks = [], []
    for image_path, mask_path in pairs:
        image = Image.open(image_path).convert("RGB").resize((side, side), Image.BILINEAR)
        mask = np.array(Image.open(mask_path).resize((side, side), Image.NEAREST), dtype=np.int64)
        if form == "ade":
            mask = np.where(mask == 0, IGNORE, mask - 1)
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
        masks.append(torch.from_numpy(mask))
    return torch.stack(images), torch.stack(masks), len(names)


def factory_model(arch: str, path: str) -> nn.Module:
    """A team's ``pkg.module:factory`` (imported from the working directory), its checkpoint loaded with strict keys
    but the classifier's, then the classifier dropped (timm's reset_classifier(0))."""
    module, _, name = arch.partition(":")
    sys.path.insert(0, os.getcwd())
    model = getattr(importlib.import_module(module), name)(num_classes=10)
    if path:
        from safetensors.torch import load_file

        state = {k: v for k, v in load_file(path).items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected and all(k.startswith("head.") for k in missing), (missing, unexpected)
    model.reset_classifier(0)
    return model.eval()


def backbone(token: str, side: int) -> nn.Module:
    arch, _, path = token.partition("@")
    if ":" in arch:
        return factory_model(arch, path)
    kwargs: dict[str, object] = {"num_classes": 0}
    if path:
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": path, "num_classes": -1})
    try:
        return timm.create_model(arch, img_size=side, **kwargs).eval()
    except TypeError:
        return timm.create_model(arch, **kwargs).eval()


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The last four maps, resized to the largest and concatenated: [N, sum C, h, w]."""
    out = []
    for lo in range(0, len(images), 64):
        x = (images[lo : lo + 64].float() / 255.0 - 0.5) / 0.5  # own checkpoints and random weights: [-1, 1]
        maps = model.forward_intermediates(x, indices=4, intermediates_only=True)
        h = max(m.shape[-1] for m in maps)
        out.append(torch.cat([F.interpolate(m, size=(h, h), mode="bilinear", align_corners=False) for m in maps], 1))
    return torch.cat(out)


def fit(x: torch.Tensor, y: torch.Tensor, classes: int, lr: float, steps: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    head = nn.Sequential(nn.BatchNorm2d(x.shape[1]), nn.Conv2d(x.shape[1], classes, 1))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(len(x)), 0
    for step in range(steps):
        if pos + BATCH > len(x):
            order, pos = rng.permutation(len(x)), 0
        idx = torch.from_numpy(order[pos : pos + BATCH])
        pos += BATCH
        for group in opt.param_groups:
            group["lr"] = lr * (1 - step / steps)
        logits = F.interpolate(head(x[idx]), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y[idx], ignore_index=IGNORE)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def miou(head: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int) -> tuple[float, float]:
    pred = F.interpolate(head(x), size=y.shape[-2:], mode="bilinear", align_corners=False).argmax(1).numpy().ravel()
    true = y.numpy().ravel()
    keep = true != IGNORE
    conf = np.bincount(true[keep] * classes + pred[keep], minlength=classes * classes).reshape(classes, classes)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    return 100 * float(np.mean(tp[union > 0] / union[union > 0])), 100 * tp.sum() / conf.sum()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="voc:PATH or ade:PATH")
    parser.add_argument("--backbone", action="append", required=True, help="timm name or pkg.module:factory, "
                        "optionally @checkpoint.safetensors; repeatable")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train_x, train_y, classes = read(args.dataset, "train", args.img_size)
    val_x, val_y, _ = read(args.dataset, "val", args.img_size)
    for token in args.backbone:
        start = time.perf_counter()
        torch.manual_seed(args.seed)  # random weights: the seed's initialisation
        model = backbone(token, args.img_size)
        ftrain, fval = features(model, train_x), features(model, val_x)
        perm = np.random.default_rng(1000 + args.seed).permutation(len(ftrain))
        n_val = round(0.2 * len(ftrain))
        hold, keep = torch.from_numpy(np.sort(perm[:n_val])), torch.from_numpy(np.sort(perm[n_val:]))
        scores = {lr: miou(fit(ftrain[keep], train_y[keep], classes, lr, args.steps, args.seed), ftrain[hold], train_y[hold], classes)[0] for lr in GRID}
        lr = max(GRID, key=lambda v: (scores[v], -v))
        m, acc = miou(fit(ftrain, train_y, classes, lr, args.steps, args.seed), fval, val_y, classes)
        print(f"peer {token.split('/')[-1]:40s} {args.dataset.split(':')[0]}: mIoU {m:5.1f} %  pixel acc {acc:5.1f} %  lr {lr:g}  "
              f"(val mIoU by lr: {', '.join(f'{k:g}: {v:.1f}' for k, v in scores.items())})  {time.perf_counter() - start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
