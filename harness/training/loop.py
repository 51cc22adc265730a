"""The one training loop: every benchmark trains through :func:`train`.

Data lives on the device as ``uint8`` and is shuffled, augmented and normalised there per batch
(see ``harness.data.batches`` / ``harness.data.augment``). All randomness the loop uses is a
function of ``(recipe.seed, epoch)`` and scoped so global RNG is left as found; together with
per-epoch checkpoints this makes an interrupted-and-resumed run bit-identical to an
uninterrupted one on CPU.

Under torchrun (:mod:`harness.runtime.distributed`) the model is wrapped in DistributedDataParallel:
``recipe.batch_size`` stays the global batch, each rank takes its share of every epoch's order
and steps on ``batch_size / world size`` images, and rank 0 alone writes checkpoints. One
process runs exactly the single-process loop.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from harness.data.augment import MixBatch, RandAugmentBatch, crop_padding, random_crop_flip, scoped_global_rng
from harness.data.batches import Batches, derive_seed, epoch_order
from harness.data.types import TensorSplit
from harness.measure.memory import peak_bytes
from harness.runtime.devices import synchronize
from harness.runtime.distributed import (
    World,
    all_reduce_max,
    all_reduce_sum,
    broadcast_buffers,
    broadcast_value,
    current_world,
    per_rank_batch,
    pool_batchnorm,
    rank_share,
    rank_stream,
    require_group,
)
from harness.runtime.progress import Advance, task
from harness.training.checkpoints import BEST, CHECKPOINT, load_checkpoint, save_best, save_checkpoint
from harness.training.classification import epochs_to_target, macro_f1, per_class_accuracy, topk_accuracy
from harness.training.curve import CURVE_POINTS, CURVE_SAMPLE, carve_validation, curve_sample
from harness.training.evaluation import EVAL_BATCH, Evaluating
from harness.training.recipes import Recipe, autocast_dtype, build_optimizer, build_scheduler, determinism
from harness.training.trained import DIVERGED_LOSS, EpochStats, TrainingDiverged, TrainResult

# Importable from here as before the split: tests and callers name them as the loop's.
__all__ = ["BEST", "CHECKPOINT", "CURVE_POINTS", "CURVE_SAMPLE", "EVAL_BATCH", "curve_sample", "freeze_norm_stats", "train"]




def train(
    model: torch.nn.Module,
    train: TensorSplit,
    test: TensorSplit,
    recipe: Recipe,
    *,
    device: torch.device,
    val: TensorSplit | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: Callable[[EpochStats], None] | None = None,
    measure_memory: bool = True,
    data_on_device: bool | None = None,
    num_workers: int = 4,
    world: World | None = None,
) -> TrainResult:
    """Train ``model`` on ``train`` with ``recipe``, then report test metrics.

    With a validation split (``val``, or ``recipe.val_fraction > 0`` to carve one) the best
    epoch by val top-1 is kept and tested; otherwise the final weights are. ``model`` holds
    those weights on return. ``checkpoint_dir`` gets ``last.pt`` every epoch (atomic) and
    ``best.pt``; ``resume=True`` continues from ``last.pt`` if present. ``measure_memory``
    profiles one step with ``harness.measure.memory.peak_bytes``. ``data_on_device=None``
    decides residency by ``harness.data.batches.fits_on_device``; ``num_workers`` serves the
    host path. ``world`` (default: :func:`harness.runtime.distributed.current_world`) of more than one
    process trains with DistributedDataParallel over its initialised process group; every rank
    returns the same result, and only rank 0 writes ``checkpoint_dir``.
    """
    if train.classes != test.classes or (val is not None and val.classes != train.classes):
        raise ValueError("train, test and val splits must share the same classes tuple; load them from one dataset")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (where last.pt was written)")
    if val is not None and recipe.val_fraction > 0:
        raise ValueError("pass either val or recipe.val_fraction > 0, not both")
    if val is None and recipe.val_fraction > 0:
        train, val = carve_validation(train, recipe)
    if recipe.early_stop_patience is not None and val is None:
        raise ValueError("early_stop_patience needs a validation split: pass val or set recipe.val_fraction > 0")
    world = current_world() if world is None else world
    require_group(world)
    amp_dtype = autocast_dtype(recipe.precision, device)
    peak_fn = peak_bytes if measure_memory else None
    with determinism(recipe.deterministic):
        return _Run(model, train, test, val, recipe, device, amp_dtype, data_on_device, num_workers, world).fit(
            checkpoint_dir, resume, progress, peak_fn
        )


class _Run(Evaluating):
    """State of one training run; split out of :func:`train` so the loop reads top to bottom."""

    def __init__(self, model: torch.nn.Module, train: TensorSplit, test: TensorSplit, val: TensorSplit | None, recipe: Recipe,
                 device: torch.device, autocast_dtype: torch.dtype | None, on_device: bool | None, num_workers: int,
                 world: World) -> None:
        self.recipe, self.device, self.num_classes, self.world = recipe, device, train.num_classes, world
        self.per_rank_batch = per_rank_batch(recipe.batch_size, world)
        if self.per_rank_batch % recipe.grad_accum_steps:
            raise ValueError(f"per-rank batch {self.per_rank_batch} does not split into grad_accum_steps={recipe.grad_accum_steps}; "
                             f"use a global batch that is a multiple of {world.size * recipe.grad_accum_steps}")
        if world.distributed and ("mixup" in recipe.augment or "cutmix" in recipe.augment) and self.per_rank_batch % 2:
            raise ValueError(f"mixup/cutmix pair images within a rank's batch of {self.per_rank_batch}; use a global batch that is a multiple of {2 * world.size}")
        self.model = model.to(device)
        if recipe.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # `net` runs the training forward: the model itself, or its DDP wrapper that averages the
        # gradients of every rank in backward. Evaluation and checkpoints use the bare model.
        self.ddp: DistributedDataParallel | None = None
        if world.distributed:
            pool_batchnorm(self.model, world)  # the global batch's statistics, as in one process
            index = (torch.cuda.current_device() if device.index is None else device.index) if device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=None if index is None else [index])
        self.net: torch.nn.Module = self.model if self.ddp is None else self.ddp
        self.train_b = Batches(train, device, on_device=on_device, num_workers=num_workers)
        self.test_b = Batches(test, device, on_device=on_device, num_workers=num_workers)
        self.val_b = None if val is None else Batches(val, device, on_device=on_device, num_workers=num_workers)
        if self.val_b is not None:
            self.curve_b = self.val_b
        elif len(test) > CURVE_SAMPLE:
            self.curve_b = Batches(test.take(curve_sample(test.labels, CURVE_SAMPLE)), device, on_device=on_device, num_workers=num_workers)
        else:
            self.curve_b = self.test_b
        self.eval_batch = max(EVAL_BATCH, recipe.batch_size)
        # Equal to every rank's steps: rank_share leaves n // size images, and
        # (n // size) // (batch // size) == n // batch.
        self.steps_per_epoch = len(train) // recipe.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"training split has {len(train)} images, fewer than batch_size={recipe.batch_size}; lower batch_size")
        self.optimizer = build_optimizer(self.model, recipe)
        self.scheduler = build_scheduler(self.optimizer, recipe, self.steps_per_epoch)
        self.total_steps = recipe.total_steps(self.steps_per_epoch)
        self.total_epochs = -(-self.total_steps // self.steps_per_epoch)  # the last one may be partial
        # Evaluate (and checkpoint) every `eval_every` epochs and after the last one.
        self.eval_every = -(-self.total_epochs // CURVE_POINTS)
        self.scaler = torch.amp.GradScaler(device.type) if recipe.precision == "fp16" else None
        self.autocast = (lambda: torch.autocast(device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
        self.pad = crop_padding(train.images.shape[-1])
        # recipe.augment is canonical (harness.contract.normalise_augment): every combination
        # but ("none",) holds "standard"; randaugment and mixup/cutmix stack on top of it.
        self.crop_flip = "standard" in recipe.augment
        self.randaug = RandAugmentBatch(train.images.shape[-1]) if "randaugment" in recipe.augment else None
        mixup_alpha = recipe.mixup_alpha if "mixup" in recipe.augment else 0.0
        cutmix_alpha = recipe.cutmix_alpha if "cutmix" in recipe.augment else 0.0
        mixing = mixup_alpha > 0 or cutmix_alpha > 0
        self.mix = MixBatch(self.num_classes, recipe.label_smoothing, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha) if mixing else None
        self.resumed_from: int | None = None  # the epochs a resumed checkpoint had trained
        self.step_losses: list[torch.Tensor] = []  # this epoch's, per optimiser step (_train_epoch resets them)
        self.step_lrs: list[float] = []
        self.advance: Advance = lambda n: None  # the progress bar's, while fit runs (harness.runtime.progress)
        self.state: dict[str, Any] = dict(epoch=0, curve=[], best_top1=-1.0, best_epoch=0, best_state=None, since_best=0,
                                          stopped=False, train_time_s=0.0, train_images=0, peak_mem=0, eval_time_s=0.0)

    def fit(self, ckpt_dir: Path | None, resume: bool, progress: Callable[[EpochStats], None] | None,
            peak_fn: Callable[..., int] | None) -> TrainResult:
        if resume and ckpt_dir is not None and (ckpt_dir / CHECKPOINT).exists():
            self.state = load_checkpoint(ckpt_dir / CHECKPOINT, self.recipe, self.model, self.optimizer, self.scheduler, self.scaler,
                                         self.world.size, self.device)
            self.resumed_from = int(self.state["epoch"])
        st = self.state
        # This process's training is what its figures count: the checkpoint's time and images came before.
        self.before = (st["train_time_s"], st["train_images"])
        # The epochs trained since the last curve point: their summed loss x steps, steps, seconds, images.
        pending: dict[str, float] = dict(loss=0.0, steps=0, seconds=0.0, images=0)
        left = self.total_steps - min(st["epoch"] * self.steps_per_epoch, self.total_steps)
        with task(f"seed {self.recipe.seed} training", total=left, unit="step") as self.advance:
            return self._epochs(st, pending, ckpt_dir, progress, peak_fn)

    def _epochs(self, st: dict[str, Any], pending: dict[str, float], ckpt_dir: Path | None,
                progress: Callable[[EpochStats], None] | None, peak_fn: Callable[..., int] | None) -> TrainResult:
        while st["epoch"] < self.total_epochs and not st["stopped"]:
            loss, seconds, images, steps = self._train_epoch(st["epoch"], peak_fn)
            st["epoch"] += 1
            st["train_time_s"] += seconds
            st["train_images"] += images
            pending.update(loss=pending["loss"] + loss * steps, steps=pending["steps"] + steps,
                           seconds=pending["seconds"] + seconds, images=pending["images"] + images)
            if st["epoch"] % self.eval_every and st["epoch"] < self.total_epochs:
                continue
            # Every rank evaluates rank 0's model; rank 0's figure decides, so no rank can diverge.
            broadcast_buffers(self.model, self.world)
            top1 = broadcast_value(topk_accuracy(*self._predict(self.curve_b), k=1), self.world, self.device)
            loss, seconds = pending["loss"] / pending["steps"], pending["seconds"]
            images = int(pending["images"])
            pending.update(loss=0.0, steps=0, seconds=0.0, images=0)
            step = min(st["epoch"] * self.steps_per_epoch, self.total_steps)
            st["curve"].append(dict(epoch=st["epoch"], step=step, loss=loss, val_top1=top1, epoch_time_s=seconds))
            if self.val_b is None or top1 > st["best_top1"]:
                st.update(best_top1=top1, best_epoch=st["epoch"], since_best=0)
                if self.val_b is not None:
                    st["best_state"] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                    if ckpt_dir is not None and self.world.is_main:
                        save_best(ckpt_dir, st["best_state"], st["epoch"])
            else:
                st["since_best"] += 1
            patience = self.recipe.early_stop_patience
            st["stopped"] = patience is not None and st["since_best"] >= patience
            if ckpt_dir is not None and self.world.is_main:
                save_checkpoint(ckpt_dir / CHECKPOINT, self.recipe, self.model, self.optimizer, self.scheduler, self.scaler, st, self.world.size)
            if progress is not None:
                progress(EpochStats(st["epoch"], loss, top1, seconds, images / seconds if seconds > 0 else 0.0, self.resumed_from))
        return self._result()

    def _train_epoch(self, epoch: int, peak_fn: Callable[..., int] | None) -> tuple[float, float, int, int]:
        """One pass over the training split (the last one cut at the schedule's end); returns (mean
        loss, device-synchronised seconds, images, steps).

        Over several ranks: the mean loss of every rank, the slowest rank's seconds and the images
        of all ranks, so images / seconds is the global throughput.
        """
        r, dev, world = self.recipe, self.device, self.world
        self.model.train()
        if r.freeze_norm_stats:
            freeze_norm_stats(self.model)
        # The same order on every rank (same seed), each rank its own stride of it.
        order = rank_share(epoch_order(len(self.train_b), r.seed, epoch), world)
        self.gen = torch.Generator(device=dev).manual_seed(derive_seed(r.seed, epoch, rank_stream(1, world)))
        total_loss = torch.zeros((), device=dev)
        # Each step's loss (a device tensor: no sync per step) and lr, to name the step where training diverged.
        self.step_losses, self.step_lrs = [], []
        excluded_s, excluded_images = 0.0, 0
        cuda_devices = [dev] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices), scoped_global_rng(derive_seed(r.seed, epoch, rank_stream(3, world))):
            torch.manual_seed(derive_seed(r.seed, epoch, rank_stream(2, world)))  # dropout / drop-path inside the model
            synchronize(dev)
            start = time.perf_counter()
            # Every rank's share yields steps_per_epoch batches of per_rank_batch (rank_share drops
            # the tail), so the ranks step together; islice states it for the profiled-step count.
            steps = min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch)
            batches = islice(self.train_b.iterate(self.per_rank_batch, order=order, drop_last=True), steps)
            for i, (images, labels) in enumerate(batches):
                global_step = epoch * self.steps_per_epoch + i
                # Profile the second optimiser step (the first with optimiser state), or the only one.
                if peak_fn is not None and global_step == min(1, self.total_steps - 1):
                    synchronize(dev)
                    t0 = time.perf_counter()
                    self.state["peak_mem"] = int(peak_fn(partial(self._step, images, labels, total_loss), dev, self._resident(images, labels)))
                    synchronize(dev)
                    excluded_s += time.perf_counter() - t0
                    excluded_images += len(labels)
                else:
                    self._step(images, labels, total_loss)
                self.advance(1)
            synchronize(dev)
            if excluded_images == steps * self.per_rank_batch:
                excluded_s, excluded_images = 0.0, 0  # the profiled step was the only one: it is the throughput there is
            seconds = all_reduce_max(time.perf_counter() - start - excluded_s, world, dev)
        loss = all_reduce_sum(total_loss, world).item() / world.size / steps
        if not (math.isfinite(loss) and loss <= DIVERGED_LOSS):
            self._diverged(epoch, loss)
        return loss, seconds, steps * r.batch_size - excluded_images * world.size, steps

    def _diverged(self, epoch: int, loss: float) -> None:
        """Raise :class:`TrainingDiverged` naming the epoch's first step whose loss is non-finite or absurd (this
        rank's; under torchrun another rank's may be the one, then the epoch's first step is named) and its lr."""
        losses = torch.stack(self.step_losses).cpu() if self.step_losses else torch.tensor([loss])
        bad = (~torch.isfinite(losses) | (losses.abs() > DIVERGED_LOSS)).nonzero()
        first = int(bad[0]) if len(bad) else 0
        value, lr = float(losses[first]), self.step_lrs[first] if self.step_lrs else float("nan")
        step = epoch * self.steps_per_epoch + first + 1
        raise TrainingDiverged(f"training diverged: the loss is {value:g} at optimiser step {step} of {self.total_steps} "
                               f"(lr {lr:g}); lower --lr, or clip the gradient with --clip-grad 1.0")

    def _step(self, images: torch.Tensor, labels: torch.Tensor, total_loss: torch.Tensor) -> None:
        r = self.recipe
        if self.randaug is not None:
            images = self.randaug(images)
        if self.crop_flip:
            images = random_crop_flip(images, self.pad, r.hflip, self.gen)
        x = self._input(images)
        targets: torch.Tensor = labels
        smoothing = r.label_smoothing
        if self.mix is not None:
            x, targets = self.mix(x, labels)  # soft targets already carry the smoothing
            smoothing = 0.0
        micro = self.per_rank_batch // r.grad_accum_steps
        chunks = list(zip(torch.split(x, micro), torch.split(targets, micro), strict=True))
        step_loss = torch.zeros((), device=total_loss.device)
        self.step_lrs.append(float(self.optimizer.param_groups[0]["lr"]))
        for k, (xs, ts) in enumerate(chunks):
            # DDP averages gradients once per optimiser step: not after every micro-batch.
            sync = self.ddp.no_sync() if self.ddp is not None and k < len(chunks) - 1 else nullcontext()
            with sync:
                with self.autocast():
                    logits = self.net(xs)
                self._check_logits(logits)
                loss = F.cross_entropy(logits.float(), ts, label_smoothing=smoothing)
                step_loss += loss.detach() / r.grad_accum_steps
                scaled = loss / r.grad_accum_steps
                torch.autograd.backward(self.scaler.scale(scaled) if self.scaler is not None else scaled)
        total_loss += step_loss
        self.step_losses.append(step_loss)
        if r.clip_grad_norm is not None:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.clip_grad_norm)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _resident(self, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Tensors alive across a step: parameters, buffers, optimiser state and the batch."""
        opt_state = [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        return [*self.model.parameters(), *self.model.buffers(), *opt_state, images, labels]

    def _result(self) -> TrainResult:
        st = self.state
        final_curve_top1 = st["best_top1"]
        if self.val_b is not None and st["best_state"] is not None:
            self.model.load_state_dict(st["best_state"])
        broadcast_buffers(self.model, self.world)
        logits, labels = self._predict(self.test_b)
        seconds, images = st["train_time_s"] - self.before[0], st["train_images"] - self.before[1]
        if seconds <= 0:  # resumed after the last epoch: this process trained nothing, the checkpoint's run did
            seconds, images = st["train_time_s"], st["train_images"]
        return TrainResult(
            top1=topk_accuracy(logits, labels, k=1),
            top5=topk_accuracy(logits, labels, k=5),
            macro_f1=macro_f1(logits, labels),
            per_class_acc=per_class_accuracy(logits, labels),
            curve=copy.deepcopy(st["curve"]),
            curve_split="test" if self.val_b is None else "val",
            epochs_to_target=epochs_to_target(st["curve"], final_curve_top1),
            train_time_s=seconds,
            train_ips=images / seconds if seconds > 0 else 0.0,
            peak_train_mem_bytes=st["peak_mem"],
            epochs_run=st["epoch"],
            steps_run=min(st["epoch"] * self.steps_per_epoch, self.total_steps),
            test_loss=float(F.cross_entropy(logits, labels)),
            best_epoch=st["best_epoch"],
            eval_time_s=st.get("eval_time_s", 0.0),
            curve_images=len(self.curve_b),
            resumed_from_epoch=self.resumed_from,
        )


def freeze_norm_stats(model: torch.nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode: its running statistics are used and kept."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
