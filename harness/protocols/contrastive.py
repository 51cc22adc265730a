"""``contrastive``: both towers of a CLIP model trained on image–caption pairs with open_clip's
``ClipLoss`` (the symmetric InfoNCE of CLIP), then read zero-shot and by a linear probe.

Each seed draws the case's stratified subset, pairs every image with a caption and trains the whole
model (from the backbone's weights, or from random weights: a CLIP trained here) for the step
schedule the suite gives every trained case (:mod:`harness.training.schedule`, the row's warm-up).
Captions are the split's own (a WebDataset shard's ``txt``) where every image has one, else a
template of the prompts (:mod:`harness.data.prompts`) with the image's class name, drawn per image
per step, so a classification set trains CLIP the way its zero-shot head reads it.

After training, the record's ``top1``/``top5``/``macro_f1`` are the zero-shot head's on the test
split (:func:`harness.protocols.zeroshot.text_classifier`), ``linear_top1`` a linear probe's on the
trained image tower's features of the subset. Seed 0's model is saved in open_clip's checkpoint
layout (``{"epoch", "state_dict"}``) with its config and its normalisation (the checkpoint's
``.json`` sidecar), and the record names the ``clip:`` token that
loads it (``clip_token``): the zeroshot, linear and knn protocols then evaluate the trained model.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import torch

from harness.backbones.clip import build_clip, clip_preprocess, configs, tokenizer_of
from harness.backbones.registry import BackboneUnsupported
from harness.data.augment import crop_padding, prepare, random_crop_flip
from harness.data.datasets import hflip_of
from harness.data.prompts import PromptSet, prompt_set, prompt_sources
from harness.data.subsets import class_counts, parse_subset, subset_indices
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.protocols import Progress
from harness.protocols.keys import case_keys, seed_keys
from harness.protocols.recipe import case_schedule
from harness.protocols.zeroshot import needs_text_tower, text_classifier, zeroshot_logits
from harness.runtime.distributed import World
from harness.runtime.progress import task
from harness.settings import Settings
from harness.training.classification import macro_f1, per_class_accuracy, topk_accuracy
from harness.training.probes import LINEAR_L2, fit_linear
from harness.training.recipes import lr_factor
from harness.training.trained import TrainResult

# AdamW at 1e-3 for a batch of 128 (square-root scaled to the batch, as the suite's AdamW recipes
# are), decay 0.1 (open_clip's training default), CLIP's temperature clamped at 100: a tiny CLIP on
# the digits from random weights reaches ~100 % zero-shot within 300 steps at these settings
# (scripts/train_tiny_clip.py measured 2e-3 at batch 64, the same rate per image).
LR_AT_128 = 1e-3
WEIGHT_DECAY = 0.1
MAX_LOGIT_SCALE = math.log(100)
EVAL_BATCH = 256


def grid(settings: Settings) -> Mapping[str, object] | None:
    return None  # nothing is searched: the zero-shot head has no hyperparameter, the probe its fixed L2


def _lr(batch: int, settings: Settings) -> float:
    return settings.lr if settings.lr is not None else LR_AT_128 * math.sqrt(batch / 128)


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """The training that ran: its schedule's rule, AdamW's lr and decay, the crop (and flips where the
    dataset allows them), and, in ``optimizer``, the prompts the captions and the head are made of."""
    from harness.protocols.recipe import warmup_fraction
    from harness.training.schedule import schedule_setting

    return {"schedule": schedule_setting(str(spec.dataset), steps=settings.steps, epochs=settings.epochs,
                                         warmup_fraction=warmup_fraction(spec.protocol)),
            "optimizer": f"adamw ClipLoss; {prompt_sources(str(spec.dataset), settings.classnames, settings.templates)}",
            "lr": _lr(spec.batch_size, settings), "weight_decay": WEIGHT_DECAY, "label_smoothing": None, "augment": ["standard"],
            "hflip": hflip_of(str(spec.dataset), settings.data_root), "early_stop": None, "val_fraction": None, "grad_accum": None,
            "clip_grad": None, "tune": None}


def run(spec: CaseSpec, settings: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
        progress: Progress | None) -> dict[str, Any]:
    """Every seed: train on the subset's image–caption pairs, then zero-shot and linear on the test split."""
    reason = needs_text_tower(spec.protocol, spec.backbone)
    if reason is not None:
        raise BackboneUnsupported(reason)
    if world.size > 1:
        raise BackboneUnsupported("contrastive trains in one process here: ClipLoss over several ranks gathers features "
                                  "(open_clip's gather_with_grad), which this protocol does not do; run it without torchrun")
    from harness.backbones.weights import WeightsRef, locate

    ref = spec.weights or WeightsRef(spec.backbone)
    resolved = locate(ref, download=settings.download) if spec.weights is not None else None
    prompts = prompt_set(str(spec.dataset), test_split.classes, settings.classnames, settings.templates)
    device = torch.device(spec.device)
    subset = parse_subset(str(spec.subset))
    results: list[TrainResult] = []
    linear: list[float] = []
    counts: dict[str, int] = {}
    saved: dict[str, Any] = {}
    steps_run = 0
    wall = time.perf_counter()
    for seed in range(settings.seeds):
        indices = subset_indices(train_split.labels, subset, seed=seed, num_classes=train_split.num_classes, dataset=str(spec.dataset))
        counts = class_counts(train_split.labels, indices, train_split.classes)
        torch.manual_seed(seed)
        model = build_clip(ref, spec.img_size, resolved.path if resolved is not None else None).to(device)
        batch = min(spec.batch_size, len(indices))
        schedule = case_schedule(spec, settings, len(indices), batch)
        steps_run = schedule.steps
        trained_s = _train(model, ref, spec, settings, train_split.take(indices), prompts, batch, schedule.steps, schedule.warmup_steps, seed,
                           device)
        result, probe_top1 = _evaluate(model, ref, spec, train_split.take(indices), test_split, prompts, trained_s,
                                       schedule.steps * batch, device)
        results.append(result)
        linear.append(probe_top1)
        if seed == 0:
            saved = _save(model, ref, spec, settings, schedule.steps)
    return {
        **case_keys(spec, train_split, test_split, counts, settings.seeds),
        **seed_keys(results),
        "head_init": "text tower (zero-shot)",
        "captions": "templates of the class names" if train_split.captions is None else "the split's captions",
        "steps_run": steps_run,
        "train_time_s": sum(r.train_time_s for r in results) / len(results),
        "eval_time_s": sum(r.eval_time_s for r in results) / len(results),
        "train_ips": sum(r.train_ips for r in results) / len(results),
        "linear_top1": sum(linear) / len(linear),
        "linear_top1_per_seed": linear,
        "case_wall_s": time.perf_counter() - wall,
        **saved,
        **({"weights_file": str(resolved.path), "weights_source": resolved.source, "weights_sha256": resolved.sha256} if resolved else {}),
    }


def _train(model: torch.nn.Module, ref: Any, spec: CaseSpec, settings: Settings, train: TensorSplit, prompts: PromptSet,
           batch: int, steps: int, warmup: int, seed: int, device: torch.device) -> float:
    """``steps`` AdamW steps of ClipLoss on ``train``'s images and their captions; the seconds they took."""
    from open_clip.loss import ClipLoss

    pre = clip_preprocess(ref)
    tokenizer = tokenizer_of(ref.arch)
    if train.captions is not None:
        captions = tokenizer(list(train.captions))  # [N, L], one per image
    else:  # [class, template] -> tokens, every caption tokenised once
        per_class = [tokenizer([prompts.prompts(name)[t] for t in range(len(prompts.templates))]) for name in prompts.classnames]
        captions = torch.stack(per_class)
    optimizer = torch.optim.AdamW(model.parameters(), lr=_lr(batch, settings), weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps, warmup))  # the suite's warm-up + cosine
    loss_fn = ClipLoss()
    generator = torch.Generator().manual_seed(seed)
    hflip = hflip_of(str(spec.dataset), settings.data_root)
    pad = crop_padding(spec.img_size)
    model.train()
    start = time.perf_counter()
    with task(f"seed {seed} contrastive", total=steps, unit="step") as advance:
        for _ in range(steps):
            idx = torch.randperm(len(train), generator=generator)[:batch]
            images = random_crop_flip(train.images[idx.to(train.images.device)], pad, hflip, generator)
            x = prepare(images.to(device), size=spec.img_size, mean=pre.mean, std=pre.std)
            if train.captions is not None:
                text = captions[idx]
            else:
                text = captions[train.labels[idx], torch.randint(len(prompts.templates), (len(idx),), generator=generator)]
            image_f, text_f, scale = model(x, text.to(x.device))
            loss = loss_fn(image_f, text_f, scale)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():  # CLIP's clamp: a temperature below 1/100 makes the loss unstable
                model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)  # type: ignore[operator]
            advance(1)
    return time.perf_counter() - start


@torch.no_grad()
def _embed(model: torch.nn.Module, split: TensorSplit, img_size: int, mean: Any, std: Any, device: torch.device) -> torch.Tensor:
    parts = [model.encode_image(prepare(split.images[i:i + EVAL_BATCH], size=img_size, mean=mean, std=std).to(device))  # type: ignore[operator]
             for i in range(0, len(split), EVAL_BATCH)]
    return torch.cat(parts).float().cpu()


def _evaluate(model: torch.nn.Module, ref: Any, spec: CaseSpec, train: TensorSplit, test: TensorSplit, prompts: PromptSet,
              trained_s: float, images_seen: int, device: torch.device) -> tuple[TrainResult, float]:
    """The trained model's zero-shot result on ``test``, and a linear probe's top-1 on its image features."""
    model.eval()
    pre = clip_preprocess(ref)
    start = time.perf_counter()
    classifier = text_classifier(model, tokenizer_of(ref.arch), prompts, device).cpu()
    test_f = _embed(model, test, spec.img_size, pre.mean, pre.std, device)
    scores = zeroshot_logits(test_f, classifier, float(model.logit_scale.detach().exp()))  # type: ignore[operator]
    labels = test.labels.cpu()
    eval_s = time.perf_counter() - start
    probe = fit_linear(_embed(model, train, spec.img_size, pre.mean, pre.std, device), train.labels.cpu(), test.num_classes, l2=LINEAR_L2,
                       device=torch.device("cpu"))
    probe_top1 = topk_accuracy(probe.logits(test_f), labels, k=1)
    result = TrainResult(top1=topk_accuracy(scores, labels, k=1), top5=topk_accuracy(scores, labels, k=5), macro_f1=macro_f1(scores, labels),
                         per_class_acc=per_class_accuracy(scores, labels), curve=[], curve_split="test", epochs_to_target=None,
                         train_time_s=trained_s, train_ips=images_seen / trained_s if trained_s > 0 else 0.0, peak_train_mem_bytes=0,
                         epochs_run=0, best_epoch=0, eval_time_s=eval_s)
    return result, probe_top1


def _save(model: torch.nn.Module, ref: Any, spec: CaseSpec, settings: Settings, steps: int) -> dict[str, Any]:
    """Seed 0's trained model in open_clip's layout under the checkpoint folder, and the token that loads it."""
    folder = settings.checkpoint_dir / spec.case_id.replace("/", "__") / "seed0"
    folder.mkdir(parents=True, exist_ok=True)
    name = "contrastive_" + "".join(ch if ch.isalnum() else "_" for ch in spec.backbone_name.removeprefix("clip:"))
    config, checkpoint = folder / f"{name}.json", folder / f"{name}.pt"
    model_cfg = configs(ref.arch)[0]
    model_cfg["vision_cfg"]["image_size"] = spec.img_size
    from harness.files import write_atomic

    write_atomic(config, lambda tmp: tmp.write_text(json.dumps(model_cfg, indent=2) + "\n", encoding="utf-8"))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    write_atomic(checkpoint, lambda tmp: torch.save({"epoch": steps, "state_dict": state}, tmp))
    # The normalisation it was trained with (0.5/0.5 from random weights, the weights' own otherwise),
    # as the checkpoint's sidecar: whoever loads it feeds it the images it learned from.
    pre = clip_preprocess(ref)
    sidecar = {"mean": list(pre.mean), "std": list(pre.std), "input_size": spec.img_size, "interpolation": pre.interpolation}
    write_atomic(checkpoint.with_name(checkpoint.name + ".json"), lambda tmp: tmp.write_text(json.dumps(sidecar) + "\n", encoding="utf-8"))
    return {"clip_checkpoint": str(checkpoint), "clip_config": str(config), "clip_token": f"clip:{config}@{checkpoint}"}

