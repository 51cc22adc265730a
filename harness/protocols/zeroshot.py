"""``zeroshot``: a CLIP model classifies by its text tower, no training image used.

Every class name goes into every template (``"a photo of the digit {}."``); each prompt's text
embedding is L2-normalised, the templates' embeddings of a class averaged and normalised again,
giving one weight column per class (CLIP_benchmark's ``zero_shot_classifier``). The logits of an
image are its normalised image embedding against those columns, times the model's own logit scale.
Top-1, top-5, macro-F1 and the mean per-class recall are recorded.

The image embeddings are the image tower's features, cached on disk like ``linear``'s and ``knn``'s
(:class:`harness.protocols.frozen.Extractor`), so the three protocols run the image tower once.
Pretrained weights give one deterministic evaluation that stands for every seed; random weights
(the chance-level baseline, said so in the record) one per seed's initialisation. The case's subset
plays no part: the record keeps it, so the zero-shot line sits beside the probes at each size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from harness.backbones.clip import build_clip, is_clip, tokenizer_of
from harness.backbones.registry import BackboneUnsupported
from harness.data.prompts import PromptSet, prompt_set, prompt_sources
from harness.data.subsets import class_counts, parse_subset, subset_indices
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.protocols import Progress
from harness.protocols.frozen import Extractor, weights_keys
from harness.protocols.keys import case_keys, seed_keys
from harness.runtime.distributed import World
from harness.settings import Settings
from harness.training.classification import macro_f1, per_class_accuracy, topk_accuracy
from harness.training.trained import TrainResult

# Prompts encoded per forward of the text tower: 18 templates x 100 classes fit a CPU's memory in a few chunks.
TEXT_BATCH = 256


def needs_text_tower(protocol: str, arch: str) -> str | None:
    """Why ``protocol`` (one whose row says it needs a text tower) cannot run on ``arch``, naming the
    fix; ``None`` for a CLIP model."""
    if is_clip(arch):
        return None
    return (f"{protocol} needs a text tower and {arch} is an image backbone: name a CLIP model in --backbones "
            "(clip:ViT-B-32/laion2b_s34b_b79k, clip:hf-hub:ORG/NAME or clip:CONFIG.json@CHECKPOINT)")


def grid(settings: Settings) -> Mapping[str, object] | None:
    return None  # nothing is searched


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """No recipe; ``optimizer`` holds what makes the head (the prompts' source: a built-in set's name or
    the files' sha256), as a probe's holds its fixed solver."""
    return {"schedule": None, "optimizer": prompt_sources(str(spec.dataset), settings.classnames, settings.templates), "lr": None,
            "weight_decay": None, "label_smoothing": None, "augment": None, "hflip": None, "early_stop": None, "val_fraction": None,
            "grad_accum": None, "clip_grad": None, "tune": None}


@torch.no_grad()
def text_classifier(model: torch.nn.Module, tokenizer: Any, prompts: PromptSet, device: torch.device) -> torch.Tensor:
    """``[D, C]``: per class, the normalised mean of its prompts' normalised text embeddings."""
    texts = [text for name in prompts.classnames for text in prompts.prompts(name)]
    tokens = tokenizer(texts)
    parts = [model.encode_text(tokens[i:i + TEXT_BATCH].to(device), normalize=True) for i in range(0, len(texts), TEXT_BATCH)]  # type: ignore[operator]
    per_class = torch.cat(parts).float().view(len(prompts.classnames), len(prompts.templates), -1).mean(dim=1)
    return F.normalize(per_class, dim=-1).T.contiguous()


def zeroshot_logits(image_features: torch.Tensor, classifier: torch.Tensor, logit_scale: float) -> torch.Tensor:
    """``logit_scale * normalise(images) @ classifier``: CLIP's logits, ``[N, C]``."""
    return logit_scale * F.normalize(image_features.float(), dim=-1) @ classifier


def _evaluate(spec: CaseSpec, options: Settings, extractor: Extractor, test_split: TensorSplit, prompts: PromptSet,
              init_seed: int | None) -> tuple[TrainResult, float, float, bool]:
    """One zero-shot evaluation: its result, the text tower's seconds, the feature seconds and whether they were cached."""
    test_f = extractor.features("test", test_split, init_seed)
    torch.manual_seed(0 if init_seed is None else init_seed)  # the same initialisation as the cached image tower's
    model = build_clip(extractor.ref, spec.img_size, extractor.resolved.path if extractor.resolved else None).to(extractor.device)
    start = time.perf_counter()
    classifier = text_classifier(model, tokenizer_of(extractor.ref.arch), prompts, extractor.device).cpu()
    text_s = time.perf_counter() - start
    scale = float(model.logit_scale.detach().exp())  # type: ignore[operator]
    start = time.perf_counter()
    scores = zeroshot_logits(test_f.features, classifier, scale)
    labels = test_f.labels
    per_class = per_class_accuracy(scores, labels)
    result = TrainResult(top1=topk_accuracy(scores, labels, k=1), top5=topk_accuracy(scores, labels, k=5), macro_f1=macro_f1(scores, labels),
                         per_class_acc=per_class, curve=[], curve_split="test", epochs_to_target=None, train_time_s=0.0, train_ips=0.0,
                         peak_train_mem_bytes=0, epochs_run=0, best_epoch=0, eval_time_s=time.perf_counter() - start)
    return result, text_s, test_f.seconds, test_f.hit


def run(spec: CaseSpec, settings: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
        progress: Progress | None) -> dict[str, Any]:
    """Every seed of a zero-shot case; the flat record of the train kind. Raises BackboneUnsupported for
    a backbone without a text tower, PromptError for prompts that do not fit the dataset."""
    reason = needs_text_tower(spec.protocol, spec.backbone)
    if reason is not None:
        raise BackboneUnsupported(reason)
    prompts = prompt_set(str(spec.dataset), test_split.classes, settings.classnames, settings.templates)
    extractor = Extractor(spec, settings, held_size=int(train_split.images.shape[-1]))
    pretrained = spec.weights is not None
    wall = time.perf_counter()
    results: list[TrainResult] = []
    text_s: list[float] = []
    feature_s: list[float] = []
    cache_use: list[str] = []
    for seed in range(settings.seeds):
        if pretrained and results:  # deterministic: the first evaluation stands for every seed
            results.append(results[0])
            feature_s.append(0.0)
            continue
        result, seconds, features_seconds, hit = _evaluate(spec, settings, extractor, test_split, prompts, None if pretrained else seed)
        results.append(result)
        text_s.append(seconds)
        feature_s.append(features_seconds)
        cache_use.append("hit" if hit else "miss")
    indices = subset_indices(train_split.labels, parse_subset(str(spec.subset)), seed=0, num_classes=train_split.num_classes,
                             dataset=str(spec.dataset))
    record: dict[str, Any] = {
        **case_keys(spec, train_split, test_split, class_counts(train_split.labels, indices, train_split.classes), settings.seeds),
        **seed_keys(results),
        "mean_per_class_recall": sum(results[-1].per_class_acc) / len(results[-1].per_class_acc),
        "train_images_used": 0,
        "prompts": {"classnames": list(prompts.classnames), "templates": list(prompts.templates),
                    "classnames_source": prompts.classnames_source, "templates_source": prompts.templates_source},
        "text_encode_s": sum(text_s) / len(text_s),
        "pretrained": pretrained,
        "feature_cache": {"test": cache_use},
        "feature_time_s": sum(feature_s) / len(feature_s),
        "eval_time_s": sum(r.eval_time_s for r in results) / len(results),
        "held_img_size": extractor.held_size,
        "case_wall_s": time.perf_counter() - wall,
    }
    return {**record, **weights_keys(extractor, spec.protocol)}
