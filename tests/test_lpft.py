"""LP-FT and selection on held-out data, through the library: the head starts where the probe ends,
every searched protocol records its grid, and the test split plays no part in any choice.

Weights: a random resnet10t saved as a team's checkpoint (the mechanics do not need good features).
Data: the embedded digits, a 50-image subset (5 per class), a few optimiser steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from harness.config.options import default_settings
from harness.data.datasets import load_split
from harness.data.types import TensorSplit
from harness.kinds import train as train_kind
from harness.kinds.train import cases as train_cases
from harness.training.loop import CURVE_POINTS, train
from harness.training.probes import fit_linear, load_into_head
from harness.training.recipes import Recipe

pytestmark = pytest.mark.xdist_group("lpft")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "resnet10t_random.safetensors"
    save_file({k: v.contiguous() for k, v in timm.create_model("resnet10t", num_classes=10).state_dict().items()}, str(path))
    return path


def _run(protocol: str, weights: Path, tmp: Path, test: TensorSplit | None = None, **options: Any) -> dict[str, Any]:
    settings = default_settings(backbones=[f"resnet10t@{weights}"], protocols=[protocol], subsets=["50"], devices=["cpu"],
                                steps=8, feature_cache=tmp / "features", checkpoint_dir=tmp / "ckpt", **options)
    [case] = [c.spec for c in train_cases(settings) if c.spec.protocol == protocol]
    if test is None:
        return train_kind.run_train_case(case, settings)
    real = train_kind.load_case_splits

    def with_other_test(spec: Any, opts: Any, world: Any) -> tuple[TensorSplit, TensorSplit]:
        return real(spec, opts, world)[0], test

    patch = pytest.MonkeyPatch()
    patch.setattr(train_kind, "load_case_splits", with_other_test)
    try:
        return train_kind.run_train_case(case, settings)
    finally:
        patch.undo()


def _noise(like: TensorSplit) -> TensorSplit:
    """A test split of the same shape whose images and labels carry nothing of the real one."""
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, like.images.shape, generator=gen, dtype=torch.uint8)
    return TensorSplit(images, torch.randint(0, like.num_classes, (len(like),), generator=gen), like.classes)


def test_the_head_starts_where_the_probe_ends(weights: Path) -> None:
    import timm

    torch.manual_seed(0)
    features = torch.randn(40, 512)
    labels = torch.arange(40) % 4
    probe = fit_linear(features, labels, 4, l2=1e-3)
    model = timm.create_model("resnet10t", num_classes=4)
    load_into_head(probe, model)
    assert torch.allclose(model.get_classifier()(features), probe.logits(features), atol=1e-4)
    with pytest.raises(ValueError, match="the probe's head is \\(4, 512\\) but the model's classifier is \\(3, 512\\)"):
        load_into_head(probe, timm.create_model("resnet10t", num_classes=3))


@pytest.mark.parametrize("protocol", ["linear", "knn", "finetune"])
def test_selection_never_reads_the_test_split(protocol: str, weights: Path, tmp_path: Path) -> None:
    real = _run(protocol, weights, tmp_path / "a")
    test = load_split("digits", "test", img_size=32)
    blind = _run(protocol, weights, tmp_path / "b", test=_noise(test))
    # The same grid, the same validation scores, the same choice, whatever the test split holds ...
    assert real["tuning"] == blind["tuning"] and real["tuning"]
    # ... while the test top-1 does see it (the noise split is at chance).
    assert real["top1"] != blind["top1"]
    chosen = real["tuning"][0]
    if protocol == "finetune":
        assert set(chosen) == {"head_l2", "lr"} and chosen["lr"]["grid"] == [1e-4, 3e-4, 1e-3, 3e-3]
        assert real["head_init"] == "linear probe (LP-FT)" and real["steps"] == 8 and real["steps_run"] == 8
        assert real["recipe"]["freeze_norm_stats"] is True and real["recipe"]["label_smoothing"] == 0.0
        # The final training fills a batch of all 50 images: the chosen batch-128 lr, square-root scaled to it.
        assert real["train_batch_used"] == 50 and real["lr"] == pytest.approx(chosen["lr"]["chosen"] * (50 / 128) ** 0.5)
    else:
        assert chosen["param"] == {"linear": "l2", "knn": "k"}[protocol]
    # 50 images, 5 per class: 1 per class validates (20 %), 4 per class fit.
    point = chosen["lr"] if protocol == "finetune" else chosen
    assert (point["fit_images"], point["val_images"]) == (40, 10)
    assert point["chosen"] in point["grid"] and len(point["val_top1"]) == len(point["grid"]) == len(point["val_loss"])


def test_tune_off_runs_one_fixed_setting(weights: Path, tmp_path: Path) -> None:
    record = _run("linear", weights, tmp_path, tune="off")
    assert record["tuning"] is None and record["probe"]["l2"] == 2e-4
    for tune, expected in (("off", (None, 2e-4)), ("on", ({"grid": {"l2": [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]}, "selection": (
            "best validation top-1 on a stratified 20% of the subset, then retrained on the whole subset")}, None))):
        settings = default_settings(backbones=[f"resnet10t@{weights}"], protocols=["linear"], devices=["cpu"], tune=tune)
        [case] = [c.spec for c in train_cases(settings)]
        digested = train_kind.settings_of(case, settings)
        assert (digested["tune"], digested["weight_decay"]) == expected


def test_a_step_schedule_cuts_the_last_epoch_and_bounds_the_curve() -> None:
    import timm

    data = load_split("digits", "train", img_size=32)
    small = data.take(torch.arange(64))
    torch.manual_seed(0)
    # 64 images at batch 16: 4 steps an epoch; 42 steps = 10 epochs and 2 steps of an 11th.
    recipe = Recipe(batch_size=16, steps=42, warmup_steps=4, hflip=False, lr=0.01)
    result = train(timm.create_model("resnet10t", num_classes=10), small, small, recipe, device=torch.device("cpu"), measure_memory=False)
    assert (result.steps_run, result.epochs_run) == (42, 11)
    assert [p["step"] for p in result.curve][-1] == 42 and len(result.curve) == 11 <= CURVE_POINTS
    # 45 one-step epochs (8 images, batch 8) evaluate every 3rd epoch (45 / 20 points, rounded up): 15 points.
    tiny = small.take(torch.arange(8))
    recipe = Recipe(batch_size=8, steps=45, warmup_steps=0, hflip=False, lr=0.01, augment=("none",))
    long = train(timm.create_model("resnet10t", num_classes=10), tiny, tiny, recipe, device=torch.device("cpu"), measure_memory=False)
    assert [p["epoch"] for p in long.curve] == list(range(3, 46, 3)) and long.steps_run == 45
    assert sum(p["epoch_time_s"] for p in long.curve) == pytest.approx(long.train_time_s)


def _result(train_s: float, eval_s: float) -> Any:
    from harness.training.trained import TrainResult

    return TrainResult(top1=0.0, top5=0.0, macro_f1=0.0, per_class_acc=[], curve=[], curve_split="test", epochs_to_target=None,
                       train_time_s=train_s, train_ips=0.0, peak_train_mem_bytes=0, epochs_run=1, best_epoch=1, eval_time_s=eval_s)


def test_the_wall_breakdown_is_the_phases_and_the_rest() -> None:
    from harness.protocols.network import wall_breakdown

    # Two seeds: searches of 1 s and 1.5 s, final runs of 3 + 2 s of steps and 1 + 0.5 s of evaluation, in 10 s of wall.
    assert wall_breakdown(10.0, 2.0, [1.0, 1.5], [_result(3.0, 1.0), _result(2.0, 0.5)]) == {
        "features": 2.0, "search": 2.5, "train": 5.0, "eval": 1.5, "other": 1.0}
    assert wall_breakdown(4.0, None, [0.0], [_result(3.0, 1.0)])["features"] == 0.0  # scratch: nothing extracted


def test_a_finetune_record_says_where_its_wall_went(weights: Path, tmp_path: Path) -> None:
    record = _run("finetune", weights, tmp_path, seeds=2)
    phases = record["wall_breakdown_s"]
    assert list(phases) == ["features", "search", "train", "eval", "other"]
    assert phases["features"] == pytest.approx(record["feature_time_s"], abs=1e-3)
    assert phases["search"] == pytest.approx(2 * record["search_time_s"], abs=1e-3) and record["search_time_s"] > 0
    assert phases["train"] == pytest.approx(2 * record["train_time_s"], abs=1e-3)
    assert phases["eval"] == pytest.approx(2 * record["eval_time_s"], abs=1e-3)
    assert phases["search"] + phases["train"] + phases["eval"] + phases["other"] == pytest.approx(record["case_wall_s"], abs=5e-3)
    scratch = _run("scratch", weights, tmp_path / "s", seeds=1)
    assert scratch["search_time_s"] is None and scratch["wall_breakdown_s"]["search"] < 0.05


def test_a_finetune_extracts_only_its_images_until_the_cache_has_the_split(weights: Path, tmp_path: Path) -> None:
    first = _run("finetune", weights, tmp_path, seeds=2)
    # Two seeds of 50 digits (5 a class) out of 1,347: their union is extracted, nothing is cached.
    assert first["feature_cache"] == {"train": ["subset"]} and first["feature_files"] == []
    assert 50 < first["feature_images"] <= 100 and not list((tmp_path / "features").rglob("*.pt"))
    linear = _run("linear", weights, tmp_path, seeds=2)  # extracts the whole split and caches it
    assert linear["feature_cache"]["train"] == ["miss"]
    again = _run("finetune", weights, tmp_path, seeds=2)
    assert again["feature_cache"] == {"train": ["hit"]} and again["feature_files"] == [linear["feature_files"][0]]
    # The subset's rows are the whole split's (the same per-image forward; another batch's rounding at most),
    # so the probe, the search and the fine-tune start from the same head either way.
    assert first["tuning"][0]["head_l2"]["chosen"] == again["tuning"][0]["head_l2"]["chosen"]
    [cached] = list((tmp_path / "features").rglob("*train*.pt"))
    assert cached.stat().st_size > 0
    assert abs(first["top1"] - again["top1"]) < 1.0
