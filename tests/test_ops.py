"""Where a forward's time goes: module rows (:func:`harness.measure.ops.module_self_ms`)."""

from __future__ import annotations

import time

import torch
from torch import nn

from harness.measure.ops import module_key, module_self_ms


class _Slow(nn.Module):
    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def test_module_rows_name_the_path_with_indices_as_stars_and_the_class() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    assert [module_key(n, m) for n, m in model.named_modules()] == [
        "(model) (Sequential)", "* (Sequential)", "*.* (Linear)", "*.* (ReLU)"]
    assert module_key("stages.10.blocks.2.mlp.fc1", nn.Linear(1, 1)) == "stages.*.blocks.*.mlp.fc1 (Linear)"
    assert module_key("layer1", nn.ReLU()) == "layer1 (ReLU)"  # an index inside a name is not one


def test_self_time_lands_in_the_module_that_spends_it_and_repeats_add_up() -> None:
    # Two blocks, each sleeping 20 ms in its "act": one row of ~40 ms a forward, the parents' rows small.
    block = lambda: nn.Sequential(nn.Identity(), _Slow(0.02))  # noqa: E731
    model = nn.Sequential(block(), block())
    rows = module_self_ms(model, lambda: model(torch.zeros(1)), torch.device("cpu"), forwards=2)
    top, ms = next(iter(rows.items()))
    assert top == "*.* (_Slow)" and ms >= 40.0
    assert sum(v for k, v in rows.items() if k != top) < ms / 4  # sleeping is all the work there is
    assert all(not h for h in (model._forward_hooks, model._forward_pre_hooks))  # the hooks are gone
