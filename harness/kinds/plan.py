"""Batch-size planning for a backbone: the largest inference and training batch under a budget.

Memory per batch is measured with the one memory probe (:func:`harness.measure.memory.peak_bytes`)
— for inference around a forward pass, for training as the engine's own profiled optimiser step
(:func:`harness.training.loop.train` on two batches) — so the plan speaks of the same bytes the inference
and training cases record. :func:`harness.edge.planning.estimate_max_batch` fits fixed + per-sample bytes from
two probe batches past the point where memory starts growing, predicts the largest batch within
90% of the budget, then checks the prediction by running it and searches for the true largest
batch (``harness.edge.planning``).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from itertools import product
from typing import Any

import torch

from harness.backbones.factory import create_backbone
from harness.data.types import TensorSplit
from harness.edge.planning import estimate_max_batch, search_max_batch
from harness.matrix.cases import CaseSpec
from harness.matrix.expand import MatrixCase, architectures, matrix_case
from harness.measure.memory import peak_bytes
from harness.runtime.devices import DTYPES
from harness.settings import Settings
from harness.training.loop import train
from harness.training.recipes import default_recipe

# First probe batch. Training starts at 2: batch-norm cannot train on a single image.
FIRST_PROBE = {"inference": 1, "train": 2}
# The probes must see memory grow with the batch: at small batches a training step's peak is
# the optimiser's weight-sized temporaries, flat in the batch, and a fit there predicts far too
# large a batch. Probe pairs (b, 2b) double until the peak grows by 5% (well above the
# probe's byte-exact repeatability, well below the growth once activations dominate).
GROWTH = 1.05
# The estimate plans for 90% of the budget: a training step's peak grows slightly faster than
# linearly in the batch (measured at 512 MiB: the linear fit overshot the true maximum by 3.5%
# for resnet18 and 9% for mobilenetv3), and a planned batch must run, not nearly run.
HEADROOM = 0.9
# The search stops here: larger batches than this are not a small-data training question.
BATCH_LIMIT = 4096


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """The contract settings of a planning case."""

    return {"num_classes": spec.num_classes, "plan_budget_bytes": settings.plan_budget_bytes, "edge_profile": settings.edge_profile_name}


def cases(settings: Settings) -> list[MatrixCase]:
    """backbone × device × resolution × precision: the batch-size plan of each."""
    return [
        matrix_case("plan", name, device, precision, batch_size=1, img_size=size, num_classes=settings.num_classes)
        for name, device, size, precision in product(architectures(settings), settings.devices, settings.img_sizes, settings.precisions)
    ]


def inference_peak(spec: CaseSpec, batch: int, model: torch.nn.Module | None = None) -> int:
    """Peak bytes of one forward of ``batch`` images (weights and input included).

    ``model``: the backbone already on the case's device and dtype (built here when absent);
    a forward does not change it, so one model serves every probed batch.
    """
    device, dtype = torch.device(spec.device), DTYPES[spec.precision]
    if model is None:
        model = create_backbone(spec.backbone, num_classes=spec.num_classes, img_size=spec.img_size).to(device=device, dtype=dtype)
    x = torch.zeros(batch, 3, spec.img_size, spec.img_size, device=device, dtype=dtype)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    return peak_bytes(forward, device, resident=[*model.parameters(), *model.buffers(), x])


def train_peak(spec: CaseSpec, batch: int) -> int:
    """Peak bytes of one optimiser step at ``batch`` in the training engine (the family recipe)."""
    device = torch.device(spec.device)
    images = torch.zeros(2 * batch, 3, spec.img_size, spec.img_size, dtype=torch.uint8)
    labels = torch.arange(2 * batch, dtype=torch.int64) % spec.num_classes
    split = TensorSplit(images, labels, tuple(str(c) for c in range(spec.num_classes)))
    recipe = default_recipe(spec.family, epochs=1, batch_size=batch, precision=spec.precision, warmup_epochs=0.0)
    model = create_backbone(spec.backbone, num_classes=spec.num_classes, img_size=spec.img_size)
    return train(model, split, split.take(torch.arange(min(batch, 2))), recipe, device=device, measure_memory=True).peak_train_mem_bytes


def growing_probes(measure: Callable[[int], int], first: int, budget_bytes: int) -> tuple[int, int]:
    """A probe pair past the knee where memory starts to grow with the batch.

    Doubling from ``first``, the first pair (b, 2b) whose peak grows by ``GROWTH`` puts 2b past
    the knee (b may still sit before it), so the pair returned is (2b, 4b) — or (b, 2b) when 4b
    would exceed the budget or ``BATCH_LIMIT``, where the search settles the rest.
    """
    batch = first
    while 4 * batch <= BATCH_LIMIT:
        if measure(2 * batch) > budget_bytes:
            return batch, 2 * batch
        if measure(2 * batch) >= measure(batch) * GROWTH:
            if measure(4 * batch) <= budget_bytes:
                return 2 * batch, 4 * batch
            return batch, 2 * batch
        batch *= 2
    return batch, 2 * batch


def plan_batches(spec: CaseSpec, budget_bytes: int) -> dict[str, Any]:
    """The plan record: estimate, its check by running it, and the searched maximum, for
    inference and training."""
    record: dict[str, Any] = {**spec.identity(), "status": "ok", "plan_budget_bytes": budget_bytes}
    device = torch.device(spec.device)
    model = create_backbone(spec.backbone, num_classes=spec.num_classes, img_size=spec.img_size)
    model = model.to(device=device, dtype=DTYPES[spec.precision])
    record.update(_plan_one("inference", functools.partial(inference_peak, spec, model=model), budget_bytes))
    # The training probes read the device's peak of every live allocation (on CUDA,
    # max_memory_allocated): the inference model must be gone by then, or each probe counts
    # a second copy of the weights and the training plan comes out low. _plan_one keeps no
    # reference once it returns (its measure cache dies with it); this drops the last one.
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # Training changes the weights: every probed batch trains a freshly built model.
    record.update(_plan_one("train", functools.partial(train_peak, spec), budget_bytes))
    return record


def _plan_one(what: str, peak: Callable[[int], int], budget_bytes: int) -> dict[str, Any]:
    """The ``plan_{what}_*`` keys: estimate, its check by running it, and the searched maximum."""
    measure = functools.cache(peak)  # every batch is measured once
    least = FIRST_PROBE[what]  # the smallest batch that runs at all (training: 2, for batch norm)
    probes = growing_probes(measure, least, budget_bytes)
    fit = estimate_max_batch(measure, int(budget_bytes * HEADROOM), probe_batches=probes)
    estimate = min(fit.max_batch, BATCH_LIMIT)
    fits = estimate >= least and measure(estimate) <= budget_bytes  # the estimate, run
    searched = search_max_batch(measure, budget_bytes, start=max(least, estimate), limit=BATCH_LIMIT, least=least)
    return {
        f"plan_{what}_estimated_max_batch": estimate,
        f"plan_{what}_estimate_fits": fits,
        f"plan_{what}_searched_max_batch": searched,
        f"plan_{what}_searched_over_estimate": searched / estimate if estimate else None,
        f"plan_{what}_per_sample_bytes": fit.per_sample_bytes,
        f"plan_{what}_fixed_bytes": fit.fixed_bytes,
        f"plan_{what}_probe_batches": list(probes),
    }
