"""Train a tiny CLIP on the embedded digits, offline, and save it in open_clip's layout.

The model is an open_clip config: a timm ``resnet10t`` image tower (``TimmModel``: average pool,
linear projection) and a 4-layer, 128-wide text transformer with a 32-token context, both
projecting to a 64-dim embedding. It trains contrastively (open_clip's ``ClipLoss``) on the
digits train split (1,347 images) against captions drawn from the built-in digit templates
("a photo of the digit seven."), with random 4-pixel shifts, for a few hundred AdamW steps on CPU.

Written to ``--out``: ``tiny_clip.json`` (open_clip's model-config layout: ``embed_dim``,
``vision_cfg``, ``text_cfg``; ``open_clip.add_model_config`` reads it) and ``tiny_clip.pt``
(``{"epoch": steps, "state_dict": ...}``, what ``open_clip.load_checkpoint`` reads). The suite
names it ``clip:OUT/tiny_clip.json@OUT/tiny_clip.pt``.

    python scripts/train_tiny_clip.py --out /tmp/tiny_clip        # ~2 min on a 2-core CPU
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

# The digits are 8x8, held at 32 px by the suite (harness.data.registry.held_size): train at that side.
IMG_SIZE = 32
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"timm_model_name": "resnet10t", "timm_model_pretrained": False, "timm_pool": "avg", "timm_proj": "linear",
                   "image_size": IMG_SIZE},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
# 4 px of a 32 px image: the shift the suite's own crop augmentation uses at this side.
SHIFT = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for tiny_clip.json and tiny_clip.pt")
    parser.add_argument("--steps", type=int, default=300, help="AdamW steps (default: 300)")
    parser.add_argument("--batch", type=int, default=64, help="images per step (default: 64)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine to 0 after 10%% warm-up (default: 2e-3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialisation and batches (default: 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1; a shared machine runs one faster than two)")
    args = parser.parse_args()

    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.loss import ClipLoss
    from open_clip.model import CLIP

    from harness.data.augment import prepare, random_crop_flip
    from harness.data.digits import load_digits_split
    from harness.data.prompts import DIGIT_NAMES, DIGIT_TEMPLATES

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = CLIP(**json.loads(json.dumps(CONFIG)))
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=CONFIG["text_cfg"]["context_length"])  # type: ignore[index]
    # Every caption tokenised once: [class, template] -> tokens.
    tokens = torch.stack([tokenizer([t.format(name) for t in DIGIT_TEMPLATES]) for name in DIGIT_NAMES])
    train = load_digits_split("train", img_size=IMG_SIZE)
    loss_fn = ClipLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
    warmup = max(1, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, args.steps - warmup))))
    generator = torch.Generator().manual_seed(args.seed)
    model.train()
    start = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(len(train.labels), (args.batch,), generator=generator)
        images = random_crop_flip(train.images[idx], SHIFT, False, generator)
        x = prepare(images, size=IMG_SIZE, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD)
        labels = train.labels[idx]
        template = torch.randint(len(DIGIT_TEMPLATES), (args.batch,), generator=generator)
        image_f, text_f, scale = model(x, tokens[labels, template])
        loss = loss_fn(image_f, text_f, scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():  # CLIP's clamp: a temperature below 1/100 makes the loss unstable
            model.logit_scale.clamp_(0, math.log(100))
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}  logit scale {model.logit_scale.exp().item():.1f}  {time.perf_counter() - start:.0f}s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tiny_clip.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    torch.save({"epoch": args.steps, "state_dict": model.state_dict()}, args.out / "tiny_clip.pt")
    model.eval()
    test = load_digits_split("test", img_size=IMG_SIZE)
    with torch.no_grad():
        image_f = model.encode_image(prepare(test.images, size=IMG_SIZE, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD), normalize=True)
        text_f = model.encode_text(tokens.flatten(0, 1), normalize=True).view(len(DIGIT_NAMES), len(DIGIT_TEMPLATES), -1).mean(1)
        text_f = text_f / text_f.norm(dim=-1, keepdim=True)
        top1 = (image_f @ text_f.T).argmax(1).eq(test.labels).float().mean().item() * 100
    print(f"saved {args.out / 'tiny_clip.pt'} and {args.out / 'tiny_clip.json'} after {time.perf_counter() - start:.0f}s; "
          f"zero-shot top-1 on the digits test split: {top1:.1f}%")


if __name__ == "__main__":
    main()
