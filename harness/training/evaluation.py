"""Evaluation inside the training loop: a split's logits in eval mode at the recipe's precision,
in batches that halve on out-of-memory, timed apart from training.

:class:`Evaluating` is the part of the loop's run (:class:`harness.training.loop._Run`) that
reads splits; the run sets the attributes it declares.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch

from harness.data.augment import prepare
from harness.data.batches import Batches
from harness.errors import OUT_OF_MEMORY
from harness.runtime.devices import synchronize
from harness.training.recipes import Recipe

# Evaluation batches start here and halve on out-of-memory: per-image cost on a GPU flattens out
# well below 256, and a 224 px batch of 256 holds a few GB of activations for the registry's models.
EVAL_BATCH = 256


class Evaluating:
    """Reading a split with the run's model: the input pipeline, the logits' check, prediction."""

    model: torch.nn.Module
    recipe: Recipe
    device: torch.device
    num_classes: int
    eval_batch: int
    state: dict[str, Any]
    autocast: Callable[[], AbstractContextManager[Any]]

    def _check_logits(self, logits: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"model returned logits {tuple(logits.shape)}; build it with num_classes={self.num_classes}")


    def _input(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the model's input: resized on the device, normalised with the weights' statistics."""
        r = self.recipe
        return prepare(images, size=r.img_size, mean=r.mean, std=r.std, channels_last=r.channels_last)


    def _predict(self, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (float32, CPU) and labels for a whole split, in eval mode at the recipe's precision.

        Batches of ``eval_batch``, halved (for the rest of the run) when one does not fit; the
        time, device-synchronised, adds to ``eval_time_s``.
        """
        synchronize(self.device)
        start = time.perf_counter()
        while True:
            try:
                result = self._predict_at(batches, self.eval_batch)
                break
            except OUT_OF_MEMORY:
                if self.eval_batch == 1:
                    raise
                self.eval_batch //= 2
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        synchronize(self.device)
        self.state["eval_time_s"] = self.state.get("eval_time_s", 0.0) + time.perf_counter() - start
        return result

    @torch.inference_mode()
    def _predict_at(self, batches: Batches, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        outs, labels = [], []
        try:
            for images, y in batches.iterate(batch_size):
                with self.autocast():
                    logits = self.model(self._input(images))
                self._check_logits(logits)
                outs.append(logits.float().cpu())
                labels.append(y.cpu())
        finally:
            self.model.train()
        return torch.cat(outs), torch.cat(labels)
