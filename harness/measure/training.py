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
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from harness.data.augment import MixBatch, RandAugmentBatch, crop_padding, prepare, random_crop_flip, scoped_global_rng
from harness.data.batches import Batches, derive_seed, epoch_order
from harness.data.subsets import split_validation
from harness.data.types import TensorSplit
from harness.errors import OUT_OF_MEMORY
from harness.files import write_atomic
from harness.measure.classification import epochs_to_target, macro_f1, per_class_accuracy, topk_accuracy
from harness.measure.memory import peak_bytes
from harness.measure.recipes import Recipe, autocast_dtype, build_optimizer, build_scheduler, determinism
from harness.measure.trained import EpochStats, TrainResult
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

CHECKPOINT = "last.pt"


BEST = "best.pt"


# The per-epoch curve on the test split reads a fixed stratified sample of this many images: 50
# per class on 10 classes puts the curve's standard error near 2 points, enough to see a model
# converge, while a 100-image subset no longer spends most of its time evaluating 10,000 images
# every epoch. The final evaluation always reads the whole split. A validation split (which picks
# the best epoch) is read whole.
CURVE_SAMPLE = 500


# Evaluation batches start here and halve on out-of-memory: per-image cost on a GPU flattens out
# well below 256, and a 224 px batch of 256 holds a few GB of activations for the registry's models.
EVAL_BATCH = 256


# The curve has at most this many points: a step schedule on a 25-image subset is 500 one-step
# epochs, and evaluating (and checkpointing) after each would cost more than the training. Runs of
# up to 20 epochs (every epoch schedule the suite ran before steps) keep one point per epoch.
CURVE_POINTS = 20


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
        train, val = _carve_validation(train, recipe)
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


class _Run:
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
        self.state: dict[str, Any] = dict(epoch=0, curve=[], best_top1=-1.0, best_epoch=0, best_state=None, since_best=0,
                                          stopped=False, train_time_s=0.0, train_images=0, peak_mem=0, eval_time_s=0.0)

    def fit(self, ckpt_dir: Path | None, resume: bool, progress: Callable[[EpochStats], None] | None,
            peak_fn: Callable[..., int] | None) -> TrainResult:
        if resume and ckpt_dir is not None and (ckpt_dir / CHECKPOINT).exists():
            self._load(ckpt_dir / CHECKPOINT)
        st = self.state
        # The epochs trained since the last curve point: their summed loss x steps, steps, seconds, images.
        pending: dict[str, float] = dict(loss=0.0, steps=0, seconds=0.0, images=0)
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
                        write_atomic(ckpt_dir / BEST, partial(torch.save, {"model": st["best_state"], "epoch": st["epoch"]}))
            else:
                st["since_best"] += 1
            patience = self.recipe.early_stop_patience
            st["stopped"] = patience is not None and st["since_best"] >= patience
            if ckpt_dir is not None and self.world.is_main:
                self._save(ckpt_dir / CHECKPOINT)
            if progress is not None:
                progress(EpochStats(st["epoch"], loss, top1, seconds, images / seconds if seconds > 0 else 0.0))
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
            synchronize(dev)
            seconds = all_reduce_max(time.perf_counter() - start - excluded_s, world, dev)
        loss = all_reduce_sum(total_loss, world).item() / world.size / steps
        return loss, seconds, steps * r.batch_size - excluded_images * world.size, steps

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
        for k, (xs, ts) in enumerate(chunks):
            # DDP averages gradients once per optimiser step: not after every micro-batch.
            sync = self.ddp.no_sync() if self.ddp is not None and k < len(chunks) - 1 else nullcontext()
            with sync:
                with self.autocast():
                    logits = self.net(xs)
                self._check_logits(logits)
                loss = F.cross_entropy(logits.float(), ts, label_smoothing=smoothing)
                total_loss += loss.detach() / r.grad_accum_steps
                scaled = loss / r.grad_accum_steps
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()  # type: ignore[no-untyped-call]  # Tensor.backward is unannotated
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

    def _check_logits(self, logits: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"model returned logits {tuple(logits.shape)}; build it with num_classes={self.num_classes}")

    def _resident(self, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """Tensors alive across a step: parameters, buffers, optimiser state and the batch."""
        opt_state = [v for s in self.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        return [*self.model.parameters(), *self.model.buffers(), *opt_state, images, labels]

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

    def _save(self, path: Path) -> None:
        st = self.state
        write_atomic(path, partial(torch.save, {
            "recipe": asdict(self.recipe),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            # Shuffling, augmentation and dropout RNGs are re-seeded from (recipe.seed, epoch) at
            # every epoch start and never touch global state, so "epoch" fully determines them.
            "state": st,
            # Streams and shares depend on the world: a checkpoint resumes on the same number of ranks.
            "world_size": self.world.size,
        }))

    def _load(self, path: Path) -> None:
        ckpt = torch.load(path, map_location=self.device, weights_only=True)
        if ckpt["recipe"] != asdict(self.recipe):
            raise ValueError(f"{path} was written with a different recipe; pass the same recipe or resume=False to start over")
        if ckpt.get("world_size", 1) != self.world.size:
            raise ValueError(f"{path} was written by {ckpt.get('world_size', 1)} process(es), this run has {self.world.size}; "
                             f"resume with torchrun --nproc-per-node {ckpt.get('world_size', 1)} or resume=False to start over")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = ckpt["state"]
        if self.state["best_state"] is not None:
            self.state["best_state"] = {k: v.cpu() for k, v in self.state["best_state"].items()}

    def _result(self) -> TrainResult:
        st = self.state
        final_curve_top1 = st["best_top1"]
        if self.val_b is not None and st["best_state"] is not None:
            self.model.load_state_dict(st["best_state"])
        broadcast_buffers(self.model, self.world)
        logits, labels = self._predict(self.test_b)
        return TrainResult(
            top1=topk_accuracy(logits, labels, k=1),
            top5=topk_accuracy(logits, labels, k=5),
            macro_f1=macro_f1(logits, labels),
            per_class_acc=per_class_accuracy(logits, labels),
            curve=copy.deepcopy(st["curve"]),
            curve_split="test" if self.val_b is None else "val",
            epochs_to_target=epochs_to_target(st["curve"], final_curve_top1),
            train_time_s=st["train_time_s"],
            train_ips=st["train_images"] / st["train_time_s"] if st["train_time_s"] > 0 else 0.0,
            peak_train_mem_bytes=st["peak_mem"],
            epochs_run=st["epoch"],
            steps_run=min(st["epoch"] * self.steps_per_epoch, self.total_steps),
            test_loss=float(F.cross_entropy(logits, labels)),
            best_epoch=st["best_epoch"],
            eval_time_s=st.get("eval_time_s", 0.0),
            curve_images=len(self.curve_b),
        )


def freeze_norm_stats(model: torch.nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode: its running statistics are used and kept."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def curve_sample(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` sorted indices of ``labels``, stratified: every class in proportion (to within one image),
    picked by a fixed permutation (seed 0), so every seed and epoch reads the same images."""
    total = len(labels)
    if total <= n:
        return torch.arange(total)
    perm = torch.randperm(total, generator=torch.Generator().manual_seed(0))
    by_class = perm[torch.argsort(labels.cpu()[perm], stable=True)]  # random order within each class
    return by_class[(torch.arange(n) * total) // n].sort().values


def _carve_validation(train: TensorSplit, recipe: Recipe) -> tuple[TensorSplit, TensorSplit]:
    """Split ``recipe.val_fraction`` of ``train`` off as validation (stratified, seeded by the recipe)."""
    train_idx, val_idx = split_validation(torch.arange(len(train)), train.labels, fraction=recipe.val_fraction, seed=recipe.seed)
    return train.take(torch.as_tensor(train_idx, dtype=torch.long)), train.take(torch.as_tensor(val_idx, dtype=torch.long))
