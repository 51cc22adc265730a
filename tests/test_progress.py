"""Progress bars of long work: shown on a terminal the session installs, silent everywhere else."""

from __future__ import annotations

import io

import pytest
import torch

from harness.data.digits import load_digits_split
from harness.runtime.progress import Terminal, show, task, wanted
from harness.training.loop import train
from harness.training.recipes import default_recipe


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_work_is_silent_without_a_terminal() -> None:
    seen = []
    with task("anything", total=3, unit="step") as advance:
        for _ in range(3):
            advance(1)
            seen.append(1)
    assert seen == [1, 1, 1]  # the work ran; nothing was drawn anywhere


def test_a_terminal_draws_the_bar_with_its_prefix_and_count() -> None:
    out = FakeTTY()
    with show(Terminal(out, prefix="resnet18-digits_full ", interval_s=0)), task("seed 0 training", total=4, unit="step") as advance:
        for _ in range(4):
            advance(1)
    text = out.getvalue()
    assert "resnet18-digits_full seed 0 training" in text and "4/4" in text and "step/s" in text


def test_bars_are_wanted_on_an_interactive_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert wanted(FakeTTY()) and not wanted(io.StringIO())  # a pipe or a log file gets none
    assert not wanted(FakeTTY(), quiet=True)  # -q
    monkeypatch.setenv("CI", "true")
    assert not wanted(FakeTTY())


def test_training_reports_every_step_of_its_schedule() -> None:
    data = load_digits_split("train", img_size=8)
    split = data.take(torch.arange(64))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))
    recipe = default_recipe("transformer", batch_size=16, steps=6, warmup_steps=1, augment=("none",), seed=3)
    out = FakeTTY()
    with show(Terminal(out, interval_s=0)):
        train(model, split, split, recipe, device=torch.device("cpu"), measure_memory=False)
    assert "seed 3 training" in out.getvalue() and "6/6" in out.getvalue()
