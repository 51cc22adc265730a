"""Several processes on one training case: torchrun's world, the process group, rank shares.

``torchrun --nproc-per-node N -m pytest …`` starts N copies of the session; each reads its place
in the world from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``). Training cases then run DistributedDataParallel: every rank holds the
whole split on its device and takes its share of every epoch's order, so one optimiser step
sees the same global batch a single process would. Rank 0 alone records and saves.

The default process group uses gloo for CPU tensors and NCCL for CUDA ones (one group serves a
session whose devices mix both). Nothing here imports pytest: a notebook started by torchrun
calls :func:`init_distributed` and :func:`harness.training.loop.train` directly. torch is
imported where it is needed: the plugin reads the world at start-up, before any case needs torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.errors import SettingError

if TYPE_CHECKING:
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    from harness.settings import Settings

# What a training record says about BatchNorm: its statistics are those of the whole global
# batch, in one process and (pooled over ranks by pool_batchnorm) under torchrun alike.
BATCHNORM_WHOLE_BATCH = "whole batch"
# Whether this module joined the default group (and so may leave it): a group someone else made stays.
_joined = False
# Seed streams of rank r > 0 are offset by r * this, so ranks draw different crops and dropout
# masks while rank 0 keeps exactly the streams of a single-process run (streams 0-3 are in use).
_RANK_STREAM_STRIDE = 16


@dataclass(frozen=True)
class World:
    """This process's place among the processes torchrun started; one process is ``World()``.

    ``backend`` is the default process group's backend once :func:`init_distributed` ran, else
    ``None``. ``local_size`` is the processes on this machine: they share its cores.
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that records, saves, gates and prints."""
        return self.rank == 0


def world_from_env(env: Mapping[str, str]) -> World:
    """The world torchrun describes in ``env``; a process started without torchrun is ``World()``."""
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
        local_size = int(env.get("LOCAL_WORLD_SIZE", str(size)))
    except ValueError:
        raise SettingError(
            f"torchrun's environment is not numeric (RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r}); "
            "start the session with torchrun or unset those variables"
        ) from None
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < local_size:
        raise SettingError(f"RANK={rank} WORLD_SIZE={size} LOCAL_RANK={local_rank} is not a valid world; start the session with torchrun or unset those variables")
    return World(rank, size, local_rank, local_size)


def current_world() -> World:
    """This process's world, from the environment, with the backend of the initialised group."""
    world = world_from_env(os.environ)
    if world.distributed and _initialised():
        import torch.distributed as dist

        return World(world.rank, world.size, world.local_rank, world.local_size, str(dist.get_backend()))
    return world


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def backend_for(devices: Iterable[str]) -> str:
    """The default group's backend for a session on ``devices``: gloo, plus NCCL for CUDA tensors."""
    return "cpu:gloo,cuda:nccl" if any(d.startswith("cuda") for d in devices) else "gloo"


def device_backend(device: torch.device | str) -> str:
    """The backend that carries one case's tensors: what its record names."""
    return "nccl" if str(device).startswith("cuda") else "gloo"


def threads_per_rank(world: World, cores: int | None = None) -> int:
    """CPU threads for one rank: the machine's cores shared by the ranks on it (at least 1)."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    return max(1, cores // world.local_size)


def check_session(world: World, settings: Settings, *, xdist: bool) -> None:
    """Refuse, before any rank joins the group, a session its ranks cannot run in step."""
    if world.distributed and xdist:
        raise SettingError(
            "pytest-xdist (-n) cannot run under torchrun: both start processes and the ranks would run different cases; "
            "drop -n (torchrun --nproc-per-node N starts the processes) or run without torchrun"
        )
    check_global_batches(settings.train_batch_sizes, world, settings.grad_accum)
    if world.distributed and any(d.startswith("cuda") for d in settings.devices):
        import torch

        # NCCL needs one GPU per rank: two ranks on one GPU fail inside the first collective.
        gpus = torch.cuda.device_count()
        if 0 < gpus < world.local_size:
            raise SettingError(f"{world.local_size} processes on this machine but {gpus} GPU(s): NCCL needs one GPU per process; "
                               f"use torchrun --nproc-per-node {gpus}, or --devices cpu")


def init_distributed(devices: Iterable[str], *, share_cores: bool = True) -> World:
    """Join the default process group once per process (a no-op for one process) and return the world.

    On CUDA the rank's device is ``cuda:LOCAL_RANK`` (set before the group, as NCCL needs), so
    a case's ``cuda`` is this rank's own GPU. ``share_cores`` gives each rank its share of the
    machine's cores as torch threads: N ranks each using every core would oversubscribe the CPU.
    """
    world = world_from_env(os.environ)
    if not world.distributed:
        return world
    import torch
    import torch.distributed as dist

    if share_cores:
        torch.set_num_threads(threads_per_rank(world))
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run without torchrun or install a torch with it")
    devices = list(devices)
    if any(d.startswith("cuda") for d in devices) and torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    if not dist.is_initialized():
        global _joined
        dist.init_process_group(backend_for(devices))
        _joined = True
    return current_world()


def shutdown_distributed() -> None:
    """Leave the default process group, if :func:`init_distributed` joined it."""
    global _joined
    if _joined and _initialised():
        import torch.distributed as dist

        dist.destroy_process_group()
    _joined = False


def require_group(world: World) -> None:
    """Refuse to train several ranks before the group exists (collectives would hang or crash)."""
    if world.distributed and not _initialised():
        raise RuntimeError(
            f"WORLD_SIZE={world.size} but no process group is initialised; call harness.runtime.distributed.init_distributed() first (the pytest plugin does)"
        )


def per_rank_batch(global_batch: int, world: World) -> int:
    """One rank's share of a global batch; the global batch must divide evenly."""
    if global_batch % world.size:
        raise ValueError(f"global batch {global_batch} does not split over {world.size} processes; use a multiple of {world.size}")
    return global_batch // world.size


def check_global_batches(batches: Iterable[int], world: World, grad_accum: int | None = None) -> None:
    """Refuse, before any case runs, train batches that the world cannot split evenly.

    ``--train-batch-sizes`` is the global batch: each rank trains on ``batch / world size``, and
    that share is split into ``grad_accum`` micro-batches.
    """
    step = world.size * (grad_accum or 1)
    bad = [b for b in batches if b % step]
    if world.distributed and bad:
        what = f"{world.size} processes × {grad_accum} accumulation steps" if (grad_accum or 1) > 1 else f"{world.size} processes (torchrun --nproc-per-node)"
        near = sorted({max(step, b // step * step) for b in bad} | {-(-b // step) * step for b in bad})
        raise SettingError(
            f"--train-batch-sizes {','.join(map(str, bad))} is the global batch and must split evenly over {what}; "
            f"use a multiple of {step}, e.g. {', '.join(map(str, near))}"
        )


def rank_share(order: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's share of an epoch's ``order``: every ``size``-th index from position ``rank``.

    The tail that does not split evenly is dropped, so every rank runs the same number of steps
    (a rank with one step more would wait for the others' gradients forever). Striding keeps
    each global step's images those of the single-process step: ranks' ``i``-th batches of
    ``b`` images together are ``order[i*b*size : (i+1)*b*size]``.
    """
    if not world.distributed:
        return order
    usable = len(order) - len(order) % world.size
    return order[:usable][world.rank :: world.size]


def rank_stream(stream: int, world: World) -> int:
    """A seed stream of this rank (see :func:`harness.data.batches.derive_seed`); rank 0 keeps ``stream``."""
    return stream + _RANK_STREAM_STRIDE * world.rank


def all_reduce_sum(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """The sum of ``tensor`` over ranks, in place (unchanged for one process)."""
    if world.distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(value: float, world: World, device: torch.device) -> float:
    """The largest ``value`` of any rank: a step's time is its slowest rank's."""
    if not world.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_value(value: float, world: World, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank, so decisions (best epoch, early stop) cannot diverge."""
    if not world.distributed:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    Parameters agree after every DDP step; per-rank BatchNorm statistics do not. With rank 0's
    buffers every rank evaluates the same model rank 0 saves.
    """
    if world.distributed:
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


@contextmanager
def main_first(world: World) -> Iterator[None]:
    """Rank 0 runs the block first (a download, a cache write), then the others read its result."""
    import torch.distributed as dist

    if world.distributed and not world.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if world.distributed and world.is_main:
            dist.barrier()


def pool_batchnorm(model: torch.nn.Module, world: World) -> int:
    """Make every BatchNorm of ``model`` normalise with the statistics of the whole global batch; the count.

    Under DDP each rank sees batch / world size images, and plain BatchNorm would normalise each
    share by its own mean and variance: a different model from the single-process run (on 2 CPU
    ranks, resnet18 on digits lost 0.7 pp of top-1 that way). ``torch.nn.SyncBatchNorm`` pools
    them on CUDA only; this pools them on any backend. In training, each rank's per-channel sum,
    sum of squares and count are summed over ranks with the differentiable all-reduce of
    ``torch.distributed.nn``, so gradients flow through the pooled statistics as they do through
    one process's; the running statistics are updated from the pooled ones, identically on every
    rank. timm's ``BatchNormAct2d`` keeps its dropout and activation after the normalisation.
    Evaluation (or one process) runs each module's own forward.
    """
    if not world.distributed:
        return 0
    from torch.nn.modules.batchnorm import _BatchNorm

    pooled = 0
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            module.forward = _pooled_forward(module, module.forward)  # type: ignore[method-assign, assignment]  # an instance attribute, not a method
            pooled += 1
    return pooled


def _pooled_forward(module: _BatchNorm, own: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    import torch
    import torch.distributed.nn.functional as dist_fn

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return own(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.full((1,), xf.numel() // channels, dtype=xf.dtype, device=x.device)
        local = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        totals: torch.Tensor = dist_fn.all_reduce(local)  # type: ignore[no-untyped-call]  # unannotated in torch
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels : 2 * channels] / n - mean * mean).clamp_min(0)
        tracked, running_mean, running_var = module.num_batches_tracked, module.running_mean, module.running_var
        assert tracked is not None and running_mean is not None and running_var is not None  # track_running_stats
        with torch.no_grad():
            tracked.add_(1)
            momentum = module.momentum if module.momentum is not None else 1.0 / float(tracked)
            running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
            running_var.mul_(1 - momentum).add_(var.detach() * n / (n - 1), alpha=momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + module.eps)
        if module.affine:
            y = y * module.weight.view(shape) + module.bias.view(shape)
        y = y.to(x.dtype)
        # timm's BatchNormAct2d: normalisation, then its dropout and activation.
        for after in ("drop", "act"):
            layer = getattr(module, after, None)
            if isinstance(layer, torch.nn.Module):
                y = layer(y)
        return y

    return forward
