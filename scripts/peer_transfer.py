"""A hand-checkable peer of the suite's transfer numbers: linear probe and LP-FT fine-tune of timm weights.

It deliberately shares no code with the suite (no ``harness`` import): only timm, torch, numpy,
scikit-learn, Pillow and safetensors, so that agreeing numbers are two independent implementations
agreeing. The protocol, in words:

* Data: ``DATA/{train,test}/<class>/<image>``; classes are the sorted folder names (label = position),
  images are listed class by class, file names sorted, decoded with PIL as RGB (grey replicated to 3
  channels) at their own size (no resize), scaled to [0, 1] and normalised with the weights' sidecar
  ``<weights>.json`` mean/std.
* Subset ``Npc`` for seed s: for each class c, its indices ascending, permuted by the argsort (stable)
  of ``PCG64(SeedSequence([s, 1, c])).random_raw(n)``; the first N are taken. Validation: per class
  of the subset, members sorted, ``n_val = min(max(round_half_up(0.2 n), 1 if n >= 2 else 0), n - 1)``,
  permuted with the stream ``(s, 2, c)``; the first ``n_val`` validate, the rest are the fit part.
* linear: pooled pre-classifier features (``num_classes=0``, eval mode, no augmentation), standardised
  with the fit part's mean/std (std < 1e-6 -> 1); multinomial logistic regression minimising mean
  cross-entropy + l2 ||W||^2 (bias not decayed), l2 in {1e-5 .. 1e-1}; the best validation top-1 wins
  (ties: the lower validation cross-entropy, then the larger l2); refit on the whole subset with its
  statistics; report test top-1.
* finetune-zero: the plain fine-tune a careful engineer writes by hand: as finetune below, but the head
  starts at zero (no probe), the lr chosen the same way.
* finetune (LP-FT): the head starts from the probe (standardisation folded into it) with the l2 the
  linear selection chose. Selection: for lr in {1e-4, 3e-4, 1e-3, 3e-3} x sqrt(B/128), probe on the fit
  part, fine-tune on the fit part for a quarter of the steps, score validation top-1 (ties: the lower
  validation cross-entropy, then the lower lr). Final: probe on the whole subset, fine-tune it for
  ``--steps`` (100: below 1,000 images), report test top-1. Batch B = min(``--batch`` 32, images
  trained on), drop-last epochs reshuffled each epoch, linear warm-up over 10 % of the steps then
  cosine to 0, AdamW (weight decay 0.05 on ndim > 1 parameters only, one lr for head and backbone),
  plain cross-entropy (the objective the head was fitted with), BatchNorm layers in eval mode (the
  pretrained running statistics kept, so step 0 is the probe), random crop 32 with 4 px zero (black)
  padding + a horizontal flip unless ``DATA/dataset.json`` says ``"hflip": false``, fp32,
  ``torch.manual_seed(seed)`` before building each model. The test split is only used for the final
  evaluation of each seed.

    python scripts/peer_transfer.py --data /tmp/tr/digits59 --weights resnet18@/tmp/tr/weights/resnet18_digits04.safetensors \
        --subsets 5pc,20pc,60pc --seeds 3 --protocols linear,finetune --json /tmp/peer.json
    python scripts/peer_transfer.py --compare /tmp/peer.json --suite /tmp/tr/storage/<machine>/0002_transfer.json

``--compare PEER.json --suite RUN.json`` prints, per backbone, protocol and subset, the peer's and the
suite's top-1 (mean over seeds) and their difference, read from the two JSON files (no training).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3)  # the suite's FINETUNE_LR_GRID
WARMUP_FRACTION, SELECTION_FRACTION = 0.1, 0.25
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
Array = np.ndarray


def load_folder(folder: Path, classes: list[str] | None = None) -> tuple[torch.Tensor, Array, list[str]]:
    """uint8 [N, 3, H, W] images, int64 labels and class names of one split folder."""
    found = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if classes is not None and found != classes:
        raise SystemExit(f"{folder} has classes {found}, the train split has {classes}")
    images, labels = [], []
    for label, name in enumerate(found):
        for file in sorted(f.name for f in (folder / name).iterdir() if f.name.lower().endswith(EXTENSIONS)):
            with Image.open(folder / name / file) as img:
                images.append(np.array(img.convert("RGB")))  # grey -> 3 identical channels
            labels.append(label)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), np.array(labels, dtype=np.int64), found


def permutation(n: int, seed: int, stream: int, c: int) -> Array:
    keys = np.random.PCG64(np.random.SeedSequence([seed, stream, c])).random_raw(n)
    return np.argsort(np.asarray(keys, dtype=np.uint64).reshape(-1), kind="stable")


def per_class_subset(labels: Array, per_class: int, seed: int) -> Array:
    picks = []
    for c in range(int(labels.max()) + 1):
        members = np.flatnonzero(labels == c)  # ascending
        if len(members) < per_class:
            raise SystemExit(f"class {c} has {len(members)} images, fewer than {per_class}pc")
        picks.append(members[permutation(len(members), seed, 1, c)[:per_class]])
    return np.sort(np.concatenate(picks))


def split_validation(indices: Array, labels: Array, seed: int) -> tuple[Array, Array]:
    fit, val = [], []
    for c in np.unique(labels[indices]).tolist():
        members = np.sort(indices[labels[indices] == c])
        n = len(members)
        n_val = min(max((2 * n + 5) // 10, 1 if n >= 2 else 0), n - 1)  # (2n+5)//10 = round_half_up(0.2 n)
        shuffled = members[permutation(n, seed, 2, c)]
        val.append(shuffled[:n_val])
        fit.append(shuffled[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def build(arch: str, state: dict[str, torch.Tensor], num_classes: int) -> torch.nn.Module:
    """The timm model from ``state`` with a freshly sized classifier (the checkpoint's head dropped)."""
    model = timm.create_model(arch, num_classes=num_classes)
    head = model.get_classifier()
    prefix = next(name for name, module in model.named_modules() if module is head) + "."
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if not k.startswith(prefix)}, strict=False)
    if unexpected or any(not k.startswith(prefix) for k in missing):
        raise SystemExit(f"{arch}: checkpoint does not fit (missing {missing}, unexpected {unexpected})")
    return model


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - mean) / std


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalise(images[i : i + 256], mean, std)) for i in range(0, len(images), 256)])


def fit_probe(features: Array, labels: Array, l2: float) -> tuple[Array, Array]:
    """Folded head (W' = W / std, b' = b - W' mean) of the standardised logistic regression."""
    mean, std = features.mean(0), features.std(0)
    std[std < 1e-6] = 1.0
    clf = LogisticRegression(C=1 / (2 * l2 * len(labels)), max_iter=1000, tol=1e-6).fit((features - mean) / std, labels)
    coef, bias = clf.coef_, clf.intercept_
    if coef.shape[0] == 1:  # binary: sklearn returns one logit z; softmax over (-z/2, z/2) is the same model
        coef, bias = np.vstack([-coef, coef]) / 2, np.array([-bias[0], bias[0]]) / 2
    weight = coef / std
    return weight, bias - weight @ mean


def top1(logits: Array | torch.Tensor, labels: Array) -> float:
    return 100.0 * float((np.asarray(logits).argmax(1) == labels).mean())


def score(logits: Array | torch.Tensor, labels: Array) -> tuple[float, float]:
    """(top-1 %, mean cross-entropy) on a validation part."""
    t = torch.as_tensor(np.asarray(logits), dtype=torch.float32)
    return top1(t.numpy(), labels), float(F.cross_entropy(t, torch.from_numpy(labels)))


def select_l2(features: Array, labels: Array, fit: Array, val: Array) -> tuple[float, dict[str, tuple[float, float]]]:
    scores = {}
    for l2 in L2_GRID:
        weight, bias = fit_probe(features[fit], labels[fit], l2)
        scores[l2] = score(features[val] @ weight.T + bias, labels[val])
    best = max(L2_GRID, key=lambda l2: (scores[l2][0], -scores[l2][1], l2))  # ties: lower loss, then larger l2
    return best, {f"{k:g}": v for k, v in scores.items()}


def augment(x: torch.Tensor, hflip: bool) -> torch.Tensor:
    """Random crop with 4 px zero padding, then (``hflip``) a horizontal flip with p = 0.5, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy, dx = torch.randint(0, 9, (n,)).tolist(), torch.randint(0, 9, (n,)).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    if hflip:
        flip = torch.rand(n) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


def finetune(model: torch.nn.Module, images: torch.Tensor, labels: Array, base_lr: float, steps: int, mean: torch.Tensor,
             std: torch.Tensor, opts: argparse.Namespace) -> float:
    """Train ``model`` in place for ``steps`` AdamW steps; returns the batch-scaled lr it used."""
    n = len(labels)
    batch = min(opts.batch, n)
    lr = base_lr * math.sqrt(batch / 128)
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": 0.05}, {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    warmup = round(WARMUP_FRACTION * steps)

    def factor(i: int) -> float:  # linear warm-up from lr/warmup to lr, then cosine towards 0
        return (i + 1) / warmup if i < warmup else 0.5 * (1 + math.cos(math.pi * (i - warmup) / (steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    targets = torch.from_numpy(labels)
    model.train()
    for module in model.modules():  # BatchNorm keeps the pretrained running statistics
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    step = 0
    while step < steps:
        order = torch.randperm(n)
        for start in range(0, n - batch + 1, batch):  # drop-last
            if step == steps:
                break
            pick = order[start : start + batch]
            x = (augment(images[pick].float() / 255, opts.hflip) - mean) / std
            loss = F.cross_entropy(model(x), targets[pick])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
    return lr


def lpft(arch: str, state: dict[str, torch.Tensor], head: tuple[Array, Array], images: torch.Tensor, labels: Array,
         base_lr: float, steps: int, seed: int, mean: torch.Tensor, std: torch.Tensor, opts: argparse.Namespace) -> tuple[torch.nn.Module, float]:
    torch.manual_seed(seed)
    model = build(arch, state, head[0].shape[0])
    with torch.no_grad():
        model.get_classifier().weight.copy_(torch.from_numpy(head[0]))
        model.get_classifier().bias.copy_(torch.from_numpy(head[1]))
    return model, finetune(model, images, labels, base_lr, steps, mean, std, opts)


@dataclass
class Weights:
    arch: str
    file: str
    state: dict[str, torch.Tensor]
    mean: torch.Tensor
    std: torch.Tensor
    extractor: torch.nn.Module
    train_f: Array
    test_f: Array | None = None  # extracted at the first final linear evaluation


def load_weights(spec: str, train_x: torch.Tensor, num_classes: int) -> Weights:
    arch, file = spec.split("@", 1)
    meta = json.loads(Path(file + ".json").read_text())
    if meta["input_size"] != train_x.shape[-1]:
        raise SystemExit(f"{file}: input_size {meta['input_size']} but images are {train_x.shape[-1]} px (this peer never resizes)")
    mean, std = (torch.tensor(meta[k], dtype=torch.float32).view(1, 3, 1, 1) for k in ("mean", "std"))
    state = load_file(file)
    extractor = build(arch, state, num_classes)
    extractor.reset_classifier(0)  # model(x) = pooled pre-classifier features
    return Weights(arch, file, state, mean, std, extractor, predict(extractor, train_x, mean, std).double().numpy())


def zero_head(w: Weights, labels: Array) -> tuple[Array, Array]:
    """A classifier of zeros (weights and bias): step 0 predicts every class alike."""
    classes = int(labels.max()) + 1
    return np.zeros((classes, w.train_f.shape[1]), dtype=np.float32), np.zeros(classes, dtype=np.float32)


def run_seed(w: Weights, protocol: str, per_class: int, seed: int, data: tuple[torch.Tensor, Array, torch.Tensor, Array],
             opts: argparse.Namespace) -> dict[str, Any]:
    train_x, train_y, test_x, test_y = data
    idx = per_class_subset(train_y, per_class, seed)
    fit, val = split_validation(idx, train_y, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        l2, l2_scores = select_l2(w.train_f, train_y, fit, val)
        rec: dict[str, Any] = {"n_subset": len(idx), "n_fit": len(fit), "n_val": len(val), "l2": l2, "val_top1_by_l2": l2_scores}
        if protocol == "linear":
            weight, bias = fit_probe(w.train_f[idx], train_y[idx], l2)
            if w.test_f is None:
                w.test_f = predict(w.extractor, test_x, w.mean, w.std).double().numpy()
            rec["top1"] = top1(w.test_f @ weight.T + bias, test_y)
        elif protocol in ("finetune", "finetune-zero"):
            # finetune-zero: the plain fine-tune a hand-run writes (no probe first): the head starts at zero.
            zero = protocol == "finetune-zero"
            head = zero_head(w, train_y) if zero else fit_probe(w.train_f[fit], train_y[fit], l2)
            lr_scores = {}
            grid = opts.lr_grid
            for base_lr in grid if len(grid) > 1 else ():  # one lr: nothing to choose
                short = max(1, round(opts.steps * SELECTION_FRACTION))
                model, _ = lpft(w.arch, w.state, head, train_x[fit], train_y[fit], base_lr, short, seed, w.mean, w.std, opts)
                lr_scores[base_lr] = score(predict(model, train_x[val], w.mean, w.std), train_y[val])
            base_lr = max(grid, key=lambda lr: (lr_scores[lr][0], -lr_scores[lr][1], -lr)) if lr_scores else grid[0]  # ties: lower loss, then lower lr
            head = zero_head(w, train_y) if zero else fit_probe(w.train_f[idx], train_y[idx], l2)
            model, used_lr = lpft(w.arch, w.state, head, train_x[idx], train_y[idx], base_lr, opts.steps, seed, w.mean, w.std, opts)
            rec.update(lr=base_lr, lr_scaled=used_lr, batch=min(opts.batch, len(idx)), val_top1_by_lr={f"{k:g}": v for k, v in lr_scores.items()})
            rec["top1"] = top1(predict(model, test_x, w.mean, w.std), test_y)
        else:
            raise SystemExit(f"unknown protocol {protocol!r} (linear, finetune, finetune-zero)")
    rec["probe_fits_not_converged"] = sum(issubclass(c.category, ConvergenceWarning) for c in caught)
    return rec


def compare(peer_file: Path, suite_file: Path) -> None:
    """The peer's and the suite's top-1 per (backbone, protocol, subset), side by side.

    Suite cases are matched by architecture (the id's backbone before ``@``), protocol and subset
    (``digits59_20pc`` -> ``20pc``); only cases both files hold are printed.
    """
    peer = json.loads(peer_file.read_text())
    suite = json.loads(suite_file.read_text())
    ours: dict[tuple[str, str, str], tuple[float, float, int]] = {}
    for bench in suite["benchmarks"]:
        e = bench["extra_info"]
        if e.get("kind") != "train" or e.get("status") != "ok":
            continue
        seeds = e["top1_per_seed"]
        spread = statistics.stdev(seeds) if len(seeds) > 1 else 0.0
        ours[(e["backbone"].split("@")[0], e["protocol"], str(e["subset"]).rsplit("_", 1)[-1])] = (statistics.fmean(seeds), spread, e["train_size"])
    print("| backbone | protocol | subset | images | peer top-1 | suite top-1 | suite - peer (pp) |\n|---|---|---|---|---|---|---|")
    for row in peer["summary"]:
        key = (row["arch"], row["protocol"], row["subset"])
        if key not in ours:
            continue
        mean, spread, images = ours[key]
        print(f"| {key[0]} | {key[1]} | {key[2]} | {images} | {row['top1_mean']:.1f} ± {row['top1_std']:.1f} | {mean:.1f} ± {spread:.1f} | "
              f"{mean - row['top1_mean']:+.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compare", type=Path, metavar="PEER.json", help="with --suite: print the peer's results against a suite run; no training")
    parser.add_argument("--suite", type=Path, metavar="RUN.json", help="a suite run (pytest-benchmark JSON) to compare with --compare")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--weights", help="ARCH@FILE.safetensors[,ARCH@FILE...]; FILE.json holds mean/std/input_size")
    parser.add_argument("--subsets", default="5pc,20pc,60pc")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--protocols", default="linear,finetune")
    parser.add_argument("--steps", type=int, default=100, help="fine-tune optimiser steps (100: the suite's rule below 1,000 images)")
    parser.add_argument("--batch", type=int, default=32, help="training batch, or the subset's size when smaller")
    parser.add_argument("--lr-grid", type=lambda v: tuple(float(x) for x in v.split(",")), default=LR_GRID,
                        help="fine-tune lrs at batch 128, searched on validation (one value: fixed, no search; default 1e-4,3e-4,1e-3,3e-3)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 is faster on a host shared with other jobs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.compare or args.suite:
        if not (args.compare and args.suite):
            parser.error("--compare PEER.json needs --suite RUN.json (and the other way round)")
        for path in (args.compare, args.suite):
            if not path.is_file():
                parser.error(f"{path}: no such file (--compare takes this script's --json output, --suite a run's JSON)")
        compare(args.compare, args.suite)
        return
    if args.data is None or args.weights is None:
        parser.error("--data and --weights are required to run the peer (or --compare with --suite)")
    facts = args.data / "dataset.json"
    args.hflip = json.loads(facts.read_text()).get("hflip", True) if facts.is_file() else True
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train_x, train_y, classes = load_folder(args.data / "train")
    test_x, test_y, _ = load_folder(args.data / "test", classes)
    print(f"{args.data}: {len(train_y)} train / {len(test_y)} test images, classes {classes}", flush=True)
    all_weights = [load_weights(spec, train_x, len(classes)) for spec in args.weights.split(",")]
    records: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    # Cheap cases first (every linear case, then fine-tunes from the smallest subset) so partial runs are useful.
    for protocol in args.protocols.split(","):
        for subset in args.subsets.split(","):
            for w in all_weights:
                case_start, results = time.perf_counter(), []
                for seed in range(args.seeds):
                    seed_start = time.perf_counter()
                    rec = {"arch": w.arch, "weights": w.file, "protocol": protocol, "subset": subset, "seed": seed}
                    rec.update(run_seed(w, protocol, int(subset.removesuffix("pc")), seed, (train_x, train_y, test_x, test_y), args))
                    rec["wall_s"] = round(time.perf_counter() - seed_start, 1)
                    records.append(rec)
                    results.append(rec["top1"])
                    chosen = f"l2={rec['l2']:g}" + (f" lr={rec['lr']:g} (x sqrt(B/128) = {rec['lr_scaled']:.3g}, B={rec['batch']})" if "lr" in rec else "")
                    print(f"  {w.arch} {protocol} {subset} seed {seed}: top-1 {rec['top1']:.2f}  {chosen}  [{rec['wall_s']:.0f} s]", flush=True)
                spread = statistics.stdev(results) if len(results) > 1 else 0.0
                summary.append({"arch": w.arch, "protocol": protocol, "subset": subset, "top1_mean": statistics.mean(results),
                                "top1_std": spread, "seeds": len(results), "wall_s": round(time.perf_counter() - case_start, 1)})
                print(f"{w.arch} {protocol} {subset}: {summary[-1]['top1_mean']:.2f} ± {spread:.2f}  [{summary[-1]['wall_s']:.0f} s]", flush=True)
                if args.json:
                    args.json.write_text(json.dumps({"records": records, "summary": summary, "complete": False}, indent=1))
    print(f"\n{'arch':<24}{'protocol':<10}{'subset':<8}top-1 mean ± std (n={args.seeds}, sample std)   wall s")
    for row in summary:
        print(f"{row['arch']:<24}{row['protocol']:<10}{row['subset']:<8}{row['top1_mean']:6.2f} ± {row['top1_std']:5.2f}{'':<30}{row['wall_s']:.0f}")
    total = time.perf_counter() - started
    print(f"total wall time {total:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"records": records, "summary": summary, "complete": True, "total_wall_s": round(total, 1)}, indent=1))


if __name__ == "__main__":
    main()
