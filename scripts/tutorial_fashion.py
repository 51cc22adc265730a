"""The tutorial's data (docs/tutorial/choose-a-backbone.md), offline: Fashion-MNIST as a team's image
folder (the first 200 training and 100 test images of each class), and the digits-pretrained resnet18
(a training checkpoint of the suite) as a weights file with its input statistics beside it.

    python scripts/tutorial_fashion.py RAW_DIR OUT CHECKPOINT_DIR

RAW_DIR holds Fashion-MNIST's four extracted idx files; CHECKPOINT_DIR is the --checkpoint-dir of a
digits training of resnet18. Writes OUT/fashion/{train,test}/<class>/*.png and
OUT/resnet18_digits.safetensors (+ .json).
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

raw, out = Path(sys.argv[1]), Path(sys.argv[2])
names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]
for split, prefix, per_class in (("train", "train", 200), ("test", "t10k", 100)):
    images = np.frombuffer((raw / f"{prefix}-images-idx3-ubyte").read_bytes()[16:], np.uint8).reshape(-1, 28, 28)
    labels = np.frombuffer((raw / f"{prefix}-labels-idx1-ubyte").read_bytes()[8:], np.uint8)
    for c, name in enumerate(names):
        folder = out / "fashion" / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in np.flatnonzero(labels == c)[:per_class]:  # the first N of each class: deterministic
            Image.fromarray(images[i]).save(folder / f"{i:05d}.png")
(out / "fashion" / "dataset.json").write_text(json.dumps({"hflip": True}))
# The digits-pretrained resnet18 (its training checkpoint) as a weights file with its input statistics beside it.
state = torch.load(next(Path(sys.argv[3]).glob("train__resnet18-digits_full-*/seed0/last.pt")), map_location="cpu", weights_only=True)
save_file({k: v.contiguous() for k, v in state["model"].items()}, str(out / "resnet18_digits.safetensors"))
recipe = state["recipe"]
(out / "resnet18_digits.safetensors.json").write_text(json.dumps({"mean": list(recipe["mean"]), "std": list(recipe["std"]), "input_size": 32}))
print(sum(1 for _ in (out / "fashion").rglob("*.png")), "images;", out / "resnet18_digits.safetensors")
