"""A second real transfer, offline: Fashion-MNIST classes 0-4 pretrain a model, classes 5-9 are the target.

1. Reads the four Fashion-MNIST idx files (``--idx``, gzipped or not: the files torchvision's
   ``FashionMNIST/raw`` holds) and writes two image folders in the layout ``--dataset
   imagefolder:PATH`` and ``scripts/peer_transfer.py`` read: ``OUT/fmnist04/{train,test}/<class>/*.png``
   (T-shirt, trouser, pullover, dress, coat) and ``OUT/fmnist59/...`` (sandal, shirt, sneaker, bag,
   ankle boot). Images are the real 28 px ones zero-padded by 2 px to 32 px (the background is 0,
   so nothing is interpolated). ``--target-per-class`` caps each target class's training images (the
   subsets studied are 10-100 per class) and ``--test-per-class`` each class's test images.
2. Pretrains ``--arch`` (timm, from scratch) on fmnist04's 30,000 training images with a short plain
   torch run (SGD momentum 0.9, lr 0.1 x batch/128 cosine to 0 after a 5 % warm-up, weight decay 5e-4,
   crop + flip, batch 128, ``--pretrain-steps``), prints its fmnist04 test top-1, and saves the
   weights as the team's own checkpoint ``OUT/weights/<arch>_fmnist04.safetensors`` with the sidecar
   ``<file>.json`` (mean/std/input_size) the suite's ``NAME@FILE`` weights and the peer read.

It imports nothing of the suite (like the peer), so the weights do not depend on the code they judge.

    python scripts/fashion_transfer.py --idx /usr/share/datasets/fashion-mnist --out /tmp/ft-fm
    python scripts/peer_transfer.py --data /tmp/ft-fm/fmnist59 --weights resnet18@/tmp/ft-fm/weights/resnet18_fmnist04.safetensors \\
        --subsets 10pc,20pc,100pc --seeds 3 --protocols linear,finetune
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

SOURCE, TARGET = range(0, 5), range(5, 10)
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
PAD = 2  # 28 px + 2 x 2 px of background = 32 px, the suite's smallest training size


def read_idx(folder: Path, name: str) -> np.ndarray:
    """One idx file (``name`` or ``name.gz``) as a numpy array of its stated shape."""
    path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
    if not path.is_file():
        sys.exit(f"{folder}: neither {name} nor {name}.gz; pass --idx the folder holding the Fashion-MNIST idx files")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (read_idx(folder, f) for f in FILES[split])
    return np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD))), labels.astype(np.int64)


def write_folders(idx: Path, out: Path, target_per_class: int, test_per_class: int) -> None:
    """fmnist04's test split and fmnist59: the first ``target_per_class`` training and ``test_per_class`` test images of each class."""
    for split in ("train", "test"):
        images, labels = load(idx, split)
        for name, classes in (("fmnist04", SOURCE), ("fmnist59", TARGET)):
            if name == "fmnist04" and split == "train":
                continue  # the pretraining reads the arrays; only its test folder is written (for a suite check)
            for c in classes:
                members = np.flatnonzero(labels == c)
                members = members[: target_per_class if split == "train" else test_per_class]
                folder = out / name / split / str(c)
                folder.mkdir(parents=True, exist_ok=True)
                for i in members.tolist():
                    Image.fromarray(images[i]).save(folder / f"{i:05d}.png")  # grey: readers replicate it to RGB
    for name in ("fmnist04", "fmnist59"):
        (out / name / "dataset.json").write_text(json.dumps({"hflip": True}))  # a mirrored shoe, bag or shirt is one


def read_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A split folder's grey images [N, 32, 32] and labels (class folder names are the labels)."""
    images, labels = [], []
    for c in sorted((d for d in folder.iterdir() if d.is_dir()), key=lambda d: d.name):
        for file in sorted(c.iterdir()):
            with Image.open(file) as img:
                images.append(np.array(img.convert("L")))
            labels.append(int(c.name))
    return np.stack(images), np.array(labels, dtype=np.int64)


def source_data(source: str, idx: Path, out: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    if source == "fashion":
        images, labels = load(idx, split)
        keep = labels < len(SOURCE)
        return images[keep], labels[keep]
    return read_folder(out / "digits04" / split)


def pretrain(source: str, idx: Path, out: Path, arch: str, steps: int, seed: int) -> Path:
    torch.manual_seed(seed)
    images, labels = source_data(source, idx, out, "train")
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(labels)
    mean = float(x.float().div(255).mean())
    std = float(x.float().div(255).std())
    model = timm.create_model(arch, num_classes=len(SOURCE))
    batch, warmup = 128, max(1, steps // 20)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}], lr=0.1, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: (i + 1) / warmup if i < warmup else 0.5 * (1 + math.cos(math.pi * (i - warmup) / (steps - warmup))))
    started, step = time.perf_counter(), 0
    model.train()
    while step < steps:
        order = torch.randperm(len(y))
        for start in range(0, len(y) - batch + 1, batch):
            if step == steps:
                break
            pick = order[start : start + batch]
            xb = F.pad(x[pick].float().div(255), (4, 4, 4, 4))
            dy, dx = torch.randint(0, 9, (2,)).tolist()
            xb = xb[:, :, dy : dy + 32, dx : dx + 32]
            if source == "fashion":  # a mirrored digit is no digit
                flip = torch.rand(len(pick)) < 0.5
                xb[flip] = xb[flip].flip(-1)
            loss = F.cross_entropy(model(((xb - mean) / std).expand(-1, 3, -1, -1)), y[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                print(f"  pretrain step {step}/{steps}: loss {loss.item():.3f}  [{time.perf_counter() - started:.0f} s]", flush=True)
    test_images, test_labels = source_data(source, idx, out, "test")
    tx = torch.from_numpy(test_images).unsqueeze(1).float().div(255)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(((tx[i : i + 500] - mean) / std).expand(-1, 3, -1, -1)).argmax(1) for i in range(0, len(tx), 500)])
    top1 = 100 * float((pred == torch.from_numpy(test_labels)).float().mean())
    name = "fmnist04" if source == "fashion" else "digits04"
    print(f"pretraining {arch}: {steps} steps in {time.perf_counter() - started:.0f} s, {name} test top-1 {top1:.2f} %")
    path = out / "weights" / f"{arch}_{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    path.with_name(path.name + ".json").write_text(json.dumps({"mean": [mean] * 3, "std": [std] * 3, "input_size": 32}))
    path.with_name(path.name + ".pretrain.json").write_text(json.dumps({"arch": arch, "steps": steps, "source_test_top1": round(top1, 2)}))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idx", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", choices=("fashion", "digits"), default="fashion",
                        help="digits: the suite's digits04/digits59 folders (scripts/digits_transfer.py's), pretrained here instead of by the suite")
    parser.add_argument("--arch", default="test_resnet", help="a timm name (test_resnet: 0.37 M parameters, 5x faster a step than resnet18 on a shared CPU)")
    parser.add_argument("--pretrain-steps", type=int, default=400, help="SGD steps at batch 128 on fmnist04 (fashion 400: 1.7 epochs of 30,000 images)")
    parser.add_argument("--target-per-class", type=int, default=200, help="fmnist59 training images kept per class (the pool subsets are drawn from)")
    parser.add_argument("--test-per-class", type=int, default=400,
                        help="test images kept per class (400: 2,000 for fmnist59, a top-1 standard error of 0.7 pp at 88 %%)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out.resolve()
    if out.exists():
        sys.exit(f"{out} exists; pass a new --out")
    torch.set_num_threads(1)  # a shared 2-core host: one thread is faster than two contended ones
    if args.source == "fashion":
        write_folders(args.idx, out, args.target_per_class, args.test_per_class)
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from digits_transfer import write_folders as write_digits  # the suite's digits split, as the other transfer writes it

        write_digits(out)
    print(f"wrote the source and target folders under {out}", flush=True)
    print(f"weights: {args.arch}@{pretrain(args.source, args.idx, out, args.arch, args.pretrain_steps, args.seed)}")


if __name__ == "__main__":
    main()
