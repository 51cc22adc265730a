"""Step 3, training on CUDA: resnet18 on digits at fp32, fp16 (loss scaling) and bf16.

The cases run through the suite (``pytest benchmarks -m train``) at 32 px (digits' own size)
and 224 px (resized on the device; where a GPU has work enough for MFU to mean something).
Then, in this process, for each recorded case:

* **compute time**: the same steps (the case's recipe from :func:`harness.protocols.recipe.recipe_for`,
  its optimiser, schedule, autocast and ``GradScaler`` for fp16, under the same determinism
  settings) on inputs already resized and normalised on the device: the epoch as pure compute;
  the engine's steady epochs (the record's ``curve``, epochs 2 on) over it should be within 1.5x;
* **data share**: the engine's data path alone (on-device gather in the epoch's order, random
  crop, resize and normalisation: ``Batches``, ``random_crop_flip``, ``prepare``) per step, over
  data + compute;
* **MFU**: achieved training FLOP/s (3 x forward, forward = 2 x the suite's GMACs per image,
  fvcore) over the dense peak for the precision (:mod:`gpu_proof_steps.peaks`), with a measured
  bf16 matmul ceiling beside it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gpu_proof_steps.common import StepContext, gpu_facts, median, pytest_session, suite_settings
from gpu_proof_steps.peaks import dense_tflops, peak_for

EPOCHS = 3  # epoch 1 warms cuDNN and the allocator; epochs 2-3 are the steady ones compared
RATIO_TARGET = 1.5
SESSION_SHARE_S = 45.0
MATMUL_N = 8192  # an 8192^3 product: large enough to run at the tensor cores' sustained rate


def run(ctx: StepContext) -> None:
    precisions, sizes = ("fp32,fp16,bf16", "32,224") if not ctx.rehearse else ("fp32", "32")
    values: dict[str, str | bool | None] = {
        "backbones": "resnet18", "dataset": "digits", "subsets": "full", "devices": ctx.device, "precisions": precisions,
        "img-sizes": sizes.split(",")[0], "train-img-sizes": sizes, "train-batch-sizes": "128",
        "epochs": str(EPOCHS if not ctx.rehearse else 2), "seeds": "1", "checkpoint-dir": str(ctx.raw / "checkpoints"),
    }
    session = pytest_session(ctx, "train", ["-m", "train"], values)
    settings = suite_settings(values)
    from harness.kinds import build

    specs = {case.spec.case_id: case.spec for case in build("train", settings)}
    ctx.plan("cases", sorted(specs))
    ctx.require_cuda()

    ctx.figures["gpu"] = facts = gpu_facts()
    if facts.get("cuda"):
        ctx.figures["matmul_bf16_tflops"] = _matmul_tflops()
    session.run(ctx.budget(SESSION_SHARE_S))
    ctx.figures["session"] = session.summary()
    problem = session.problem()
    if problem:
        ctx.unproven(problem)
    rows = []
    for case_id, record in session.cases.items():
        if record.get("status") != "ok" or case_id not in specs:
            ctx.unproven(f"{case_id}: {record.get('status')} {record.get('error', '')}".strip())
            continue
        if ctx.remaining() < 10:
            ctx.unproven(f"{case_id}: compute-time comparison not run: step cap reached")
            continue
        rows.append(_compare(ctx, specs[case_id], settings, record, facts))
    ctx.figures["rows"] = rows
    for row in rows:
        ctx.check(f"{row['case']} engine epoch / compute epoch", row["epoch_over_compute"] <= RATIO_TARGET,
                  round(row["epoch_over_compute"], 3), f"<= {RATIO_TARGET}")


def _compare(ctx: StepContext, spec: Any, settings: Any, record: Mapping[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    from harness.kinds.inference import static_profile
    from harness.protocols.recipe import recipe_for

    recipe = recipe_for(spec, settings, seed=0)
    if record.get("train_batch_used", recipe.batch_size) != recipe.batch_size:
        recipe = recipe_for(spec, settings, seed=0, batch_size=int(record["train_batch_used"]))
    steps = int(record["train_size"]) // recipe.batch_size
    compute_s = _compute_epochs(ctx, spec, recipe, steps)
    data_ms = _data_ms_per_step(ctx, spec, recipe, steps)
    engine_epochs = [float(point["epoch_time_s"]) for point in record["curve"][1:]] or [float(record["curve"][0]["epoch_time_s"])]
    engine_epoch, compute_epoch = median(engine_epochs), median(compute_s)
    compute_step_ms = 1000 * compute_epoch / steps
    gmacs = static_profile(spec.backbone, spec.img_size, spec.num_classes)[1]
    flops_per_image = 3 * 2 * gmacs * 1e9  # forward = 2 FLOPs per MAC; backward = 2 x forward
    row: dict[str, Any] = {
        "case": spec.case_id, "steps_per_epoch": steps, "batch": recipe.batch_size, "engine_epoch_s": round(engine_epoch, 4),
        "compute_epoch_s": round(compute_epoch, 4), "epoch_over_compute": engine_epoch / compute_epoch,
        "data_ms_per_step": round(data_ms, 3), "compute_ms_per_step": round(compute_step_ms, 3),
        "data_share": round(data_ms / (data_ms + compute_step_ms), 4), "train_ips": record.get("train_ips"),
        "gmacs_per_image": gmacs, "train_gflop_per_image": round(flops_per_image / 1e9, 3),
    }
    peak = peak_for(str(facts.get("gpu", "")))
    if peak is not None:
        tflops, rate = dense_tflops(peak, spec.precision, tf32=facts.get("cudnn_allow_tf32") is not False)  # unknown: the default, allowed
        achieved = float(record["train_ips"]) * flops_per_image / 1e12
        achieved_compute = steps * recipe.batch_size / compute_epoch * flops_per_image / 1e12
        row.update(peak_gpu=peak.gpu, peak_tflops=tflops, peak_rate=rate, peak_source=peak.source, achieved_tflops=round(achieved, 2),
                   mfu=round(achieved / tflops, 4), mfu_compute_only=round(achieved_compute / tflops, 4))
    elif not ctx.rehearse:
        ctx.unproven(f"MFU of {spec.case_id}: no dense peak for GPU {facts.get('gpu')!r} in gpu_proof_steps/peaks.py")
    ctx.log("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
    return row


def _compute_epochs(ctx: StepContext, spec: Any, recipe: Any, steps: int) -> list[float]:
    """Seconds of each timed epoch of the case's steps on prepared device tensors (after one untimed epoch)."""
    import torch
    import torch.nn.functional as F

    from harness.backbones.factory import create_backbone
    from harness.data.augment import prepare
    from harness.data.datasets import load_split
    from harness.data.registry import held_size
    from harness.runtime.devices import synchronize
    from harness.training.recipes import autocast_dtype, build_optimizer, build_scheduler, determinism

    device = torch.device(spec.device)
    split = load_split("digits", "train", img_size=held_size("digits", spec.img_size))
    n = steps * recipe.batch_size
    x_all = prepare(split.images[:n].to(device), size=recipe.img_size, mean=recipe.mean, std=recipe.std, channels_last=recipe.channels_last)
    y_all = split.labels[:n].to(device)
    torch.manual_seed(0)
    model = create_backbone(spec.backbone, num_classes=spec.num_classes, img_size=spec.img_size).to(device).train()
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, steps)
    amp = autocast_dtype(recipe.precision, device)
    scaler = torch.amp.GradScaler(device.type) if recipe.precision == "fp16" else None
    times: list[float] = []
    with determinism(recipe.deterministic):
        for epoch in range(1 + (EPOCHS - 1)):
            synchronize(device)
            start = time.perf_counter()
            for i in range(steps):
                x, y = x_all[i * recipe.batch_size:(i + 1) * recipe.batch_size], y_all[i * recipe.batch_size:(i + 1) * recipe.batch_size]
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=recipe.label_smoothing)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            synchronize(device)
            if epoch > 0:
                times.append(time.perf_counter() - start)
    return times


def _data_ms_per_step(ctx: StepContext, spec: Any, recipe: Any, steps: int) -> float:
    """Milliseconds per step of the engine's data path alone, median of three passes."""
    import torch

    from harness.data.augment import crop_padding, prepare, random_crop_flip
    from harness.data.batches import Batches, derive_seed, epoch_order
    from harness.data.datasets import load_split
    from harness.data.registry import held_size
    from harness.runtime.devices import synchronize

    device = torch.device(spec.device)
    split = load_split("digits", "train", img_size=held_size("digits", spec.img_size))
    batches = Batches(split, device)
    pad = crop_padding(split.images.shape[-1])
    passes = []
    for epoch in range(3):
        generator = torch.Generator(device=device).manual_seed(derive_seed(recipe.seed, epoch, 1))
        order = epoch_order(len(split), recipe.seed, epoch)
        synchronize(device)
        start = time.perf_counter()
        for images, _labels in batches.iterate(recipe.batch_size, order=order, drop_last=True):
            if "standard" in recipe.augment:
                images = random_crop_flip(images, pad, recipe.hflip, generator)
            prepare(images, size=recipe.img_size, mean=recipe.mean, std=recipe.std, channels_last=recipe.channels_last)
        synchronize(device)
        passes.append(1000 * (time.perf_counter() - start) / steps)
    return median(passes)


def _matmul_tflops() -> float:
    """Measured bf16 matmul rate (TFLOP/s): the mean of ten 8192^3 products after three warm-ups."""
    import torch

    a = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(MATMUL_N, MATMUL_N, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return round(2 * MATMUL_N**3 * 10 / (time.perf_counter() - start) / 1e12, 1)
