"""Behaviour of the training loop on tiny models and 8 px digits (each test a few seconds on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from harness.contract import normalise_augment
from harness.data.augment import MixBatch, random_crop_flip, scoped_global_rng
from harness.data.types import TensorSplit
from harness.training import loop
from harness.training.loop import train
from harness.training.recipes import Recipe, default_recipe, lr_factor
from harness.training.trained import EpochStats

CPU = torch.device("cpu")
CLASSES = tuple(str(i) for i in range(10))


@pytest.fixture(scope="module", autouse=True)
def one_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread: these models are tiny, and on a shared 2-core box OpenMP spin-waiting
    across threads made each step ~20x slower than running single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def splits() -> tuple[TensorSplit, TensorSplit, TensorSplit]:
    """Native 8x8 digits as 3-channel uint8: 320 train, 160 val, 160 test images."""
    d = load_digits()
    images = torch.round(torch.from_numpy(d.images).float() * 255 / 16).to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(d.target).long()
    full = TensorSplit(images, labels, CLASSES)
    return full.take(torch.arange(0, 320)), full.take(torch.arange(320, 480)), full.take(torch.arange(480, 640))


def cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))


def mlp(seed: int = 0) -> nn.Module:
    """No batch-norm: every sample's gradient is independent of the rest of its batch."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 10))


def small(**overrides: object) -> Recipe:
    base: dict[str, object] = dict(epochs=3, batch_size=32, warmup_epochs=0, hflip=False)
    base.update(overrides)
    return default_recipe("cnn", **base)


def run(model: nn.Module, splits: tuple[TensorSplit, TensorSplit, TensorSplit], recipe: Recipe, **kw: object):  # type: ignore[no-untyped-def]
    tr, _, te = splits
    kw.setdefault("measure_memory", False)
    return train(model, tr, te, recipe, device=CPU, **kw)  # type: ignore[arg-type]


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_result_fields_and_learning(splits) -> None:  # type: ignore[no-untyped-def]
    seen: list[EpochStats] = []
    res = run(cnn(), splits, small(lr=0.1), progress=seen.append)
    assert [s.epoch for s in seen] == [1, 2, 3] and res.epochs_run == 3 and res.best_epoch == 3
    assert res.top1 > 30.0  # chance is 10%: three epochs must learn something
    assert 0 <= res.top1 <= res.top5 <= 100 and 0 <= res.macro_f1 <= 1 and len(res.per_class_acc) == 10
    assert [row["epoch"] for row in res.curve] == [1, 2, 3] and res.curve_split == "test"
    assert res.curve[-1]["val_top1"] == res.top1  # no validation: the curve tracks the final test weights
    assert res.train_time_s > 0 and res.train_ips == pytest.approx(3 * (320 // 32) * 32 / res.train_time_s)
    assert res.epochs_to_target is not None and 1 <= res.epochs_to_target <= 3


def test_same_seed_is_bit_identical_and_seed_matters(splits) -> None:  # type: ignore[no-untyped-def]
    a, b, c = cnn(), cnn(), cnn()
    ra, rb = run(a, splits, small(epochs=2)), run(b, splits, small(epochs=2))
    assert ra.top1 == rb.top1 and ra.curve[-1]["loss"] == rb.curve[-1]["loss"]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    run(c, splits, small(epochs=2, seed=1))  # other shuffling/augmentation, same initial weights
    assert not torch.equal(a[0].weight, c[0].weight)


def test_resume_after_interruption_is_bit_identical(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recipe = small(epochs=3)
    whole_model = cnn()
    whole = run(whole_model, splits, recipe, checkpoint_dir=tmp_path / "whole")

    class Interrupt(Exception):
        pass

    def stop_after_first(stats: EpochStats) -> None:
        if stats.epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        run(cnn(), splits, recipe, checkpoint_dir=tmp_path / "cut", progress=stop_after_first)
    assert (tmp_path / "cut" / "last.pt").exists()
    resumed_model = cnn(seed=123)  # different init: everything must come from the checkpoint
    seen: list[EpochStats] = []
    resumed = run(resumed_model, splits, recipe, checkpoint_dir=tmp_path / "cut", resume=True, progress=seen.append)
    epochs_seen = [s.epoch for s in seen]
    assert epochs_seen == [2, 3]
    # It says it resumed, and its time and throughput are of the epochs it trained (2 and 3), not the first.
    assert [s.resumed_from_epoch for s in seen] == [1, 1] and resumed.resumed_from_epoch == 1 and whole.resumed_from_epoch is None
    assert resumed.train_time_s == pytest.approx(sum(point["epoch_time_s"] for point in resumed.curve[1:]), rel=1e-9)
    assert resumed.train_ips == pytest.approx(2 * (320 // 32) * 32 / resumed.train_time_s)
    assert resumed.top1 == whole.top1
    assert [r["loss"] for r in resumed.curve] == [r["loss"] for r in whole.curve]
    for k, v in whole_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k


def test_resume_with_other_recipe_is_refused(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run(cnn(), splits, small(epochs=2), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="different recipe"):
        run(cnn(), splits, small(epochs=2, lr=0.2), checkpoint_dir=tmp_path, resume=True)


def test_bf16_autocast_runs_on_cpu(splits) -> None:  # type: ignore[no-untyped-def]
    res = run(cnn(), splits, small(epochs=1, precision="bf16"))
    assert res.curve[0]["loss"] == res.curve[0]["loss"] and 0 <= res.top1 <= 100  # finite (not NaN)


def test_fp16_uses_a_grad_scaler_or_is_refused(splits) -> None:  # type: ignore[no-untyped-def]
    try:
        res = run(cnn(), splits, small(epochs=1, precision="fp16"))
    except ValueError as exc:  # a torch without CPU fp16 autocast must say what to use instead
        assert "bf16" in str(exc)
    else:
        assert res.curve[0]["loss"] == res.curve[0]["loss"]


def test_grad_accumulation_matches_one_big_step(splits) -> None:  # type: ignore[no-untyped-def]
    one, two = mlp(), mlp()
    start = weights(one)
    run(one, splits, small(epochs=1, batch_size=64, grad_accum_steps=1, lr=0.1))
    run(two, splits, small(epochs=1, batch_size=64, grad_accum_steps=2, lr=0.1))
    for k, v in one.state_dict().items():
        assert not torch.equal(v, start[k]), "training must move the weights"
        torch.testing.assert_close(two.state_dict()[k], v, rtol=1e-5, atol=1e-6)


def _grad_norms(splits, recipe: Recipe) -> list[float]:  # type: ignore[no-untyped-def]
    norms: list[float] = []

    def hook(opt: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_pre_hook(hook)
    try:
        run(mlp(), splits, recipe)
    finally:
        handle.remove()
    return norms


def test_clipping_caps_the_gradient_norm(splits) -> None:  # type: ignore[no-untyped-def]
    cap = 0.05
    free = _grad_norms(splits, small(epochs=1))
    clipped = _grad_norms(splits, small(epochs=1, clip_grad_norm=cap))
    assert max(free) > 2 * cap  # the cap binds, so the test below can fail
    assert len(clipped) == 10 and max(clipped) <= cap * (1 + 1e-4)


def test_early_stopping_stops_and_tests_the_best_epoch(splits) -> None:  # type: ignore[no-untyped-def]
    tr, val, te = splits
    # An lr this small leaves predictions unchanged, so val top-1 never improves after epoch 1.
    recipe = small(epochs=10, lr=1e-12, early_stop_patience=2)
    model = mlp()
    res = train(model, tr, te, recipe, device=CPU, val=val, measure_memory=False)
    assert res.epochs_run == 3 and res.best_epoch == 1 and res.curve_split == "val"
    with pytest.raises(ValueError, match="validation split"):
        run(mlp(), splits, recipe)


def test_val_fraction_carves_a_validation_split(splits) -> None:  # type: ignore[no-untyped-def]
    res = run(cnn(), splits, small(epochs=1, val_fraction=0.25))
    assert res.curve_split == "val"
    tr, val, te = splits
    with pytest.raises(ValueError, match="not both"):
        train(cnn(), tr, te, small(epochs=1, val_fraction=0.25), device=CPU, val=val, measure_memory=False)


def test_host_dataloader_path_matches_device_path(splits) -> None:  # type: ignore[no-untyped-def]
    a = run(cnn(), splits, small(epochs=1), data_on_device=True)
    b = run(cnn(), splits, small(epochs=1), data_on_device=False, num_workers=0)
    assert a.top1 == b.top1 and a.curve[0]["loss"] == b.curve[0]["loss"]


@pytest.mark.parametrize("augment", [("randaugment",), ("mixup",), ("cutmix",), ("randaugment", "mixup", "cutmix")])
def test_timm_augmentations_run_and_are_seeded(splits, augment: tuple[str, ...]) -> None:  # type: ignore[no-untyped-def]
    a = run(cnn(), splits, small(epochs=1, augment=augment))
    b = run(cnn(), splits, small(epochs=1, augment=augment))
    assert a.curve[0]["loss"] == b.curve[0]["loss"]


AUGMENT_GOOD = [
    (["standard"], ("standard",)),
    (["none"], ("none",)),
    ([" None ", "none"], ("none",)),
    (["MIXUP"], ("standard", "mixup")),
    (["cutmix", "mixup"], ("standard", "mixup", "cutmix")),
    (["mixup", "standard", "mixup"], ("standard", "mixup")),
    (["cutmix", "randaugment"], ("standard", "randaugment", "cutmix")),
    ("randaugment,mixup", ("standard", "randaugment", "mixup")),
    (("mixup", ""), ("standard", "mixup")),
]
AUGMENT_BAD = [
    (["bogus"], "unknown augmentation 'bogus'; valid: standard, randaugment, mixup, cutmix, none"),
    (["mixup", "mixpu"], "unknown augmentation 'mixpu' (did you mean mixup?)"),
    (["none", "mixup"], "augmentation 'none' turns every augmentation off and cannot be combined with mixup; pass none alone"),
    (["standard", "none"], "cannot be combined with standard"),
    ([], "augment needs at least one of: standard"),
    ([" "], "augment needs at least one of"),
]


@pytest.mark.parametrize(("names", "expected"), AUGMENT_GOOD)
def test_normalise_augment_canonicalises(names: list[str], expected: tuple[str, ...]) -> None:
    assert normalise_augment(names) == expected
    assert normalise_augment(expected) == expected  # canonical forms are fixed points


@pytest.mark.parametrize(("names", "message"), AUGMENT_BAD)
def test_normalise_augment_rejects_with_the_fix(names: list[str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        normalise_augment(names)
    assert message in str(info.value)


def test_recipe_keeps_augment_canonical() -> None:
    assert Recipe().augment == ("standard",)
    assert Recipe(augment=("cutmix", "mixup")).augment == ("standard", "mixup", "cutmix")
    assert default_recipe("cnn", augment=["randaugment"]).replace(augment=("none",)).augment == ("none",)
    with pytest.raises(ValueError, match="mixup_alpha must be > 0"):
        Recipe(augment=("mixup",), mixup_alpha=0.0)
    with pytest.raises(ValueError, match="make batch_size even"):
        Recipe(augment=("cutmix",), batch_size=33)


def _mixing_kind(before: torch.Tensor, after: torch.Tensor) -> str:
    """'cutmix' when every pixel is its own or its batch partner's (a pasted box), else 'mixup' (a blend)."""
    pasted = (after == before) | (after == before.flip(0))
    return "cutmix" if bool(pasted.all()) else "mixup"


def test_mixup_with_cutmix_mixes_both_ways_in_training(splits, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    built: list[MixBatch] = []
    kinds: list[str] = []

    class Recording(MixBatch):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            built.append(self)

        def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            before = x.clone()  # timm mixes in place
            out, targets = super().__call__(x, labels)
            kinds.append(_mixing_kind(before, out))
            assert torch.allclose(targets.sum(1), torch.ones(len(labels)))  # soft targets
            return out, targets

    monkeypatch.setattr(loop, "MixBatch", Recording)
    recipe = small(epochs=1, augment=("mixup", "cutmix"))
    run(cnn(), splits, recipe)
    (mix,) = built
    assert (mix.mix.mixup_alpha, mix.mix.cutmix_alpha, mix.mix.switch_prob) == (recipe.mixup_alpha, recipe.cutmix_alpha, 0.5)
    assert len(kinds) == 320 // 32 and {"mixup", "cutmix"} == set(kinds)


def test_single_mixing_kinds_stay_single() -> None:
    x = torch.randn(8, 3, 8, 8)
    labels = torch.arange(8) % 4
    for alphas, kind in (((0.8, 0.0), "mixup"), ((0.0, 1.0), "cutmix")):
        mix = MixBatch(4, 0.1, mixup_alpha=alphas[0], cutmix_alpha=alphas[1])
        with scoped_global_rng(0):
            seen = {_mixing_kind(x, mix(x.clone(), labels)[0]) for _ in range(6)}
        assert seen == {kind}
    with pytest.raises(ValueError, match="mixup_alpha > 0 or cutmix_alpha > 0"):
        MixBatch(4, 0.1, mixup_alpha=0.0, cutmix_alpha=0.0)


def test_random_crop_flip_takes_windows_of_the_padded_image() -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    assert torch.equal(random_crop_flip(images, 0, False, g), images)
    out = random_crop_flip(images, 1, True, g)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    for i in range(16):
        windows = [w for dy in range(3) for dx in range(3) for w in (padded[i, :, dy:dy + 8, dx:dx + 8],) for w in (w, w.flip(2))]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, images)


def test_memory_probe_is_called_on_a_step_with_optimizer_state(splits, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def fake_peak_bytes(fn, device, resident=()):  # type: ignore[no-untyped-def]
        calls.append(len(list(resident)))
        fn()
        return 4242

    monkeypatch.setattr(loop, "peak_bytes", fake_peak_bytes)
    model = cnn()
    res = run(model, splits, small(epochs=1), measure_memory=True)
    params, buffers = len(list(model.parameters())), len(list(model.buffers()))
    # parameters + buffers + one SGD momentum buffer per parameter + images + labels
    assert calls == [params + buffers + params + 2]
    assert res.peak_train_mem_bytes == 4242
    assert res.train_ips == pytest.approx(9 * 32 / res.train_time_s)  # the profiled step is left out


def test_real_memory_probe_counts_at_least_the_resident_state(splits) -> None:  # type: ignore[no-untyped-def]
    model = cnn()
    res = run(model, splits, small(epochs=1), measure_memory=True)
    param_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert res.peak_train_mem_bytes > 2 * param_bytes  # weights + momentum + batch + activations


def test_bad_input_is_refused(splits) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="unknown Recipe field 'learning_rate'; valid: optimizer, lr"):
        default_recipe("cnn", learning_rate=0.1)
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        Recipe(precision="fp8")
    with pytest.raises(ValueError, match=r"unknown family 'cnns' \(did you mean cnn\?\)"):
        default_recipe("cnns")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes=10"):
        run(nn.Sequential(nn.Flatten(), nn.Linear(192, 7)), splits, small(epochs=1))
    with pytest.raises(ValueError, match="lower batch_size"):
        run(cnn(), splits, small(epochs=2, batch_size=512))


def test_defaults_and_schedule() -> None:
    cnn_r, vit_r = default_recipe("cnn"), default_recipe("transformer", batch_size=512)
    assert (cnn_r.optimizer, cnn_r.lr, cnn_r.weight_decay) == ("sgd", 0.05, 5e-4)
    assert (vit_r.optimizer, vit_r.lr, vit_r.weight_decay) == ("adamw", pytest.approx(2e-3), 0.05)
    assert lr_factor(0, 100, 4) == 0.25 and lr_factor(4, 100, 4) == 1.0
    assert lr_factor(52, 100, 4) == pytest.approx(0.5) and lr_factor(99, 100, 4) < 1e-3


def test_finetune_recipe_and_head_learning_rate() -> None:
    from harness.training.recipes import build_optimizer, finetune_recipe

    # LP-FT: one lr (3e-4 at batch 128, square-root scaled), no smoothing, BatchNorm statistics frozen for CNNs and hybrids.
    r = finetune_recipe("cnn", batch_size=512, epochs=8)
    assert (r.optimizer, r.lr, r.backbone_lr_scale, r.weight_decay, r.label_smoothing, r.freeze_norm_stats) == (
        "adamw", pytest.approx(6e-4), 1.0, 0.05, 0.0, True)
    assert (finetune_recipe("transformer").freeze_norm_stats, finetune_recipe("hybrid").freeze_norm_stats) == (False, True)
    assert finetune_recipe("cnn", epochs=2).warmup_epochs == 0.5  # inside the first quarter of a short run
    # A separate head lr is still a recipe field: the classifier keeps lr, the rest lr x backbone_lr_scale.
    r = finetune_recipe("cnn", batch_size=512, lr=2e-3, backbone_lr_scale=0.1)
    import timm

    model = timm.create_model("resnet10t", num_classes=5)
    groups = build_optimizer(model, r).param_groups
    head = {id(p) for p in model.get_classifier().parameters()}
    by_lr: dict[float, set[int]] = {}
    for g in groups:
        by_lr.setdefault(round(g["lr"], 9), set()).update(id(p) for p in g["params"])
    assert set(by_lr) == {0.002, 0.0002} and by_lr[0.002] == head
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    # decay stays off for biases and norm weights in both the head's and the backbone's groups
    assert {g["weight_decay"] for g in groups if any(p.ndim <= 1 for p in g["params"])} == {0.0}


def test_curve_sample_is_fixed_and_stratified() -> None:
    labels = torch.arange(10).repeat_interleave(torch.tensor([100, 100, 100, 100, 100, 200, 200, 200, 400, 500]))
    picks = loop.curve_sample(labels, 500)
    assert len(picks) == 500 and torch.equal(picks, loop.curve_sample(labels, 500)) and torch.equal(picks, picks.sort().values)
    counts = torch.bincount(labels[picks], minlength=10)
    assert counts.tolist() == [25, 25, 25, 25, 25, 50, 50, 50, 100, 125]  # 500 of 2,000: a quarter of each class
    assert torch.equal(loop.curve_sample(labels[:300], 500), torch.arange(300))


def test_the_curve_reads_a_sample_and_the_final_test_the_whole_split(splits, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(loop, "CURVE_SAMPLE", 40)
    seen: list[int] = []
    real = loop._Run._predict_at

    def spy(self, batches, batch_size):  # type: ignore[no-untyped-def]
        seen.append(len(batches))
        return real(self, batches, batch_size)

    monkeypatch.setattr(loop._Run, "_predict_at", spy)
    res = run(cnn(), splits, small(epochs=2))
    assert seen == [40, 40, 160] and res.curve_images == 40
    assert res.eval_time_s > 0 and res.train_time_s > 0


def test_an_eval_batch_that_does_not_fit_is_halved(splits, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    real = loop._Run._predict_at
    sizes: list[int] = []

    def tight(self, batches, batch_size):  # type: ignore[no-untyped-def]
        sizes.append(batch_size)
        if batch_size > 64:
            raise torch.OutOfMemoryError("no room")
        return real(self, batches, batch_size)

    monkeypatch.setattr(loop._Run, "_predict_at", tight)
    reference = run(cnn(), splits, small(epochs=1))
    assert sizes[:3] == [256, 128, 64] and set(sizes[3:]) == {64}
    monkeypatch.setattr(loop._Run, "_predict_at", real)
    assert run(cnn(), splits, small(epochs=1)).top1 == reference.top1  # the batch does not change the answer


def test_batches_are_resized_on_the_device_and_normalised_with_the_weights_statistics(splits, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from harness.data.augment import normalize, prepare

    images = splits[0].images[:4]
    assert torch.equal(prepare(images), normalize(images))  # the scratch defaults change nothing
    big = prepare(images, size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert big.shape == (4, 3, 32, 32)
    up = torch.nn.functional.interpolate(images.float(), size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(big[:, 0], (up[:, 0] / 255 - 0.485) / 0.229)
    shapes: list[tuple[int, ...]] = []
    model = cnn()
    model.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    run(model, splits, small(epochs=1, img_size=24))
    assert {s[-2:] for s in shapes} == {(24, 24)}  # training and evaluation batches alike; the split stays 8 px


def test_a_run_whose_only_step_is_the_profiled_one_counts_it(splits) -> None:  # type: ignore[no-untyped-def]
    # One optimiser step in all (320 images, batch 320): it is profiled for memory, and it is the throughput there is.
    res = run(cnn(), splits, small(epochs=1, batch_size=320), measure_memory=True)
    assert res.steps_run == 1 and res.peak_train_mem_bytes > 0
    assert res.train_time_s > 0 and res.train_ips == pytest.approx(320 / res.train_time_s)


def test_resuming_a_finished_run_reports_the_checkpoints_training(splits, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    whole = run(cnn(), splits, small(epochs=2), checkpoint_dir=tmp_path)
    again = run(cnn(seed=5), splits, small(epochs=2), checkpoint_dir=tmp_path, resume=True)
    assert again.resumed_from_epoch == 2 and again.top1 == whole.top1
    assert (again.train_time_s, again.train_ips) == (whole.train_time_s, whole.train_ips)  # nothing trained here: the checkpoint's run
