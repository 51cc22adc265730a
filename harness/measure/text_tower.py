"""What a CLIP backbone's inference record adds: which tower was timed, the whole model's size, and
the text tower's one-off cost of encoding the class prompts.

A robot runs the image tower per frame (what an inference case times, ``tower: "image"``); the text
tower runs once, when the class names are set, so its cost is recorded beside the latency rather
than in it: ``text_encode_ms``, the median of :data:`TEXT_ROUNDS` encodings of ``num_classes`` x
templates prompts on the case's device.
"""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path

import torch

from harness.backbones.clip import build_clip, tokenizer_of
from harness.backbones.weights import WeightsRef
from harness.data.prompts import GENERIC_TEMPLATES, read_lines
from harness.measure.flops import count_params
from harness.runtime.devices import synchronize

# Encodings timed: the first pays for allocation; the median of three is stable to a few percent.
TEXT_ROUNDS = 3


def class_prompts(num_classes: int, templates_file: Path | None) -> list[str]:
    """Placeholder class names (``class 0`` …) in every template (``--templates``, else CLIP's plainest):
    the text tower's cost depends on the prompts' count and length, not on the words."""
    templates = read_lines(templates_file)[0] if templates_file is not None else list(GENERIC_TEMPLATES)
    return [template.format(f"class {index}") for index in range(num_classes) for template in templates]


@functools.lru_cache(maxsize=16)
def clip_inference_keys(backbone: str, img_size: int, num_classes: int, device: str, templates_file: Path | None) -> dict[str, object]:
    """``tower``, ``clip_params_total``, ``text_prompts`` and ``text_encode_ms`` of a ``clip:`` backbone
    (random weights: inference measures the architecture). Cached: every batch and runtime shares them."""
    torch.manual_seed(0)
    model = build_clip(WeightsRef(backbone), img_size, None).to(device)
    tokens = tokenizer_of(backbone)(class_prompts(num_classes, templates_file)).to(device)
    samples: list[float] = []
    with torch.inference_mode():
        for _ in range(TEXT_ROUNDS):
            synchronize(torch.device(device))
            start = time.perf_counter()
            model.encode_text(tokens, normalize=True)  # type: ignore[operator]
            synchronize(torch.device(device))
            samples.append((time.perf_counter() - start) * 1000)
    return {"tower": "image", "clip_params_total": count_params(model), "text_prompts": int(tokens.shape[0]),
            "text_encode_ms": statistics.median(samples)}
