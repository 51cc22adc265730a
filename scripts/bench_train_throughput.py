"""Training images/s of ``harness.training.loop.train`` against a bare PyTorch loop on the same model.

Both sides: same timm model (``pretrained=False``), batch, optimiser and cosine schedule
(``harness.training.recipes.build_optimizer``/``build_scheduler``), label-smoothed cross-entropy, same
precision and determinism settings, and the same augmentation (``--augment none`` by default:
no augmentation on either side; ``standard`` runs the on-device crop+flip on both). The bare
loop gets its data pre-normalised as float tensors already on the device and walks it in order;
the engine starts from ``uint8`` on the device and shuffles, augments and normalises per batch.
Each side runs one untimed warm-up epoch of ``--steps`` steps, then ``--rounds`` timed epochs;
the best (fastest) timed epoch is reported for each, since on a shared machine interference
only ever slows an epoch down.

Also reports the share of an engine step spent on data (shuffled gather + augmentation +
normalisation, timed alone) versus compute (the bare step).

    python scripts/bench_train_throughput.py --model resnet18 --batch-size 128 --steps 20 --img-size 32
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import timm
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.data.augment import crop_padding, normalize, random_crop_flip  # noqa: E402
from harness.data.batches import Batches, derive_seed, epoch_order  # noqa: E402
from harness.data.types import TensorSplit  # noqa: E402
from harness.training.loop import train  # noqa: E402
from harness.training.recipes import Recipe, autocast_dtype, build_optimizer, build_scheduler, default_recipe, determinism  # noqa: E402
from harness.training.trained import EpochStats

NUM_CLASSES = 10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_split(n: int, img_size: int, seed: int) -> TensorSplit:
    """Random ``uint8`` images: content does not change the cost of a training step."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, img_size, img_size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    return TensorSplit(images, labels, tuple(str(i) for i in range(NUM_CLASSES)))


def engine_ips(model_name: str, split: TensorSplit, recipe: Recipe, device: torch.device) -> float:
    """Images/s of the engine's fastest epoch after the first (warm-up) one."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=NUM_CLASSES)
    stats: list[EpochStats] = []
    tiny_test = split.take(torch.arange(min(len(split), recipe.batch_size)))
    train(model, split, tiny_test, recipe, device=device, progress=stats.append, measure_memory=False)
    return max(s.ips for s in stats[1:])


def bare_ips(model_name: str, split: TensorSplit, recipe: Recipe, device: torch.device) -> tuple[float, float]:
    """Images/s of a plain loop over pre-normalised float tensors on the device (fastest timed epoch), and its ms per step."""
    torch.manual_seed(0)
    model = timm.create_model(model_name, pretrained=False, num_classes=NUM_CLASSES).to(device)
    model.train()
    x_all = normalize(split.images.to(device))
    y_all = split.labels.to(device)
    steps = len(split) // recipe.batch_size
    opt = build_optimizer(model, recipe)
    sched = build_scheduler(opt, recipe, steps)
    amp = autocast_dtype(recipe.precision, device)
    gen = torch.Generator(device=device).manual_seed(0)
    pad = crop_padding(split.images.shape[-1])
    best = float("inf")
    for epoch in range(recipe.epochs):  # epoch 0 is the warm-up
        _sync(device)
        start = time.perf_counter()
        for i in range(steps):
            x = x_all[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            y = y_all[i * recipe.batch_size : (i + 1) * recipe.batch_size]
            if "standard" in recipe.augment:
                x = random_crop_flip(x, pad, recipe.hflip, gen)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
        _sync(device)
        if epoch > 0:
            best = min(best, time.perf_counter() - start)
    return steps * recipe.batch_size / best, 1000 * best / steps


def data_ms_per_step(split: TensorSplit, recipe: Recipe, device: torch.device) -> float:
    """Milliseconds per step of the engine's data path alone: shuffled gather, augmentation, normalisation."""
    batches = Batches(split, device)
    gen = torch.Generator(device=device).manual_seed(derive_seed(recipe.seed, 0, 1))
    pad = crop_padding(split.images.shape[-1])
    order = epoch_order(len(split), recipe.seed, 0)
    _sync(device)
    start = time.perf_counter()
    n = 0
    for images, _labels in batches.iterate(recipe.batch_size, order=order, drop_last=True):
        if "standard" in recipe.augment:
            images = random_crop_flip(images, pad, recipe.hflip, gen)
        normalize(images, channels_last=recipe.channels_last)
        n += 1
    _sync(device)
    return 1000 * (time.perf_counter() - start) / n


def main() -> None:
    """Parse arguments, run both loops, print the comparison table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20, help="timed optimiser steps per side (after as many warm-up steps)")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="timed epochs per side; the fastest counts")
    p.add_argument("--augment", choices=["none", "standard"], default="none")
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads on CPU (0: torch default)")
    args = p.parse_args()
    if args.steps < 1 or args.rounds < 1:
        p.error("--steps and --rounds must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # warmup 0: the warm-up epoch is only for timing; lr shape does not change step cost.
    recipe = default_recipe("cnn", epochs=1 + args.rounds, warmup_epochs=0, batch_size=args.batch_size, augment=args.augment,
                            precision=args.precision, deterministic=False)
    split = synthetic_split(args.steps * args.batch_size, args.img_size, seed=0)
    with determinism(recipe.deterministic):
        bare, bare_step_ms = bare_ips(args.model, split, recipe, device)
        engine = engine_ips(args.model, split, recipe, device)
        data_ms = data_ms_per_step(split, recipe, device)
    ratio = engine / bare
    share = data_ms / (data_ms + bare_step_ms)
    print(f"model={args.model} batch={args.batch_size} steps={args.steps} img={args.img_size} augment={args.augment} "
          f"precision={args.precision} device={device} threads={torch.get_num_threads()} rounds={args.rounds}")
    print(f"{'loop':<10}{'images/s':>12}{'ms/step':>12}")
    print(f"{'bare':<10}{bare:>12.1f}{bare_step_ms:>12.2f}")
    print(f"{'engine':<10}{engine:>12.1f}{1000 * args.batch_size / engine:>12.2f}")
    print(f"ratio engine/bare = {ratio:.3f} (target >= 0.95: {'PASS' if ratio >= 0.95 else 'FAIL'})")
    print(f"data share of an engine step = {100 * share:.1f}% (data {data_ms:.2f} ms, compute {bare_step_ms:.2f} ms)")


if __name__ == "__main__":
    main()
