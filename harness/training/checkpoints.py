"""A training run's checkpoints: ``last.pt`` every evaluated epoch, ``best.pt`` on a new best, and
resuming from ``last.pt``.

Written atomically by rank 0 (:func:`harness.files.write_atomic`), so a run killed mid-save
resumes from the previous epoch's checkpoint. A checkpoint holds everything the loop carries
between epochs (model, optimiser, scheduler, loss scaler, the loop's state); the shuffling,
augmentation and dropout RNGs are re-seeded from ``(recipe.seed, epoch)`` at every epoch start,
so "epoch" determines them and a resumed run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import torch

from harness.files import write_atomic
from harness.training.recipes import Recipe

CHECKPOINT = "last.pt"
BEST = "best.pt"


class CheckpointUnreadable(Exception):
    """A checkpoint ``--resume`` would start from that is not one this loop wrote (cut short, corrupt,
    another program's file); the message names it and the fix, the case fails without training."""


def save_best(folder: Path, best_state: dict[str, torch.Tensor], epoch: int) -> None:
    """The best epoch's weights (by validation top-1) as ``folder/best.pt``."""
    write_atomic(folder / BEST, partial(torch.save, {"model": best_state, "epoch": epoch}))


def save_checkpoint(path: Path, recipe: Recipe, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler | None, state: dict[str, Any], world_size: int) -> None:
    """Everything a resumed run needs, as ``path`` (atomically)."""
    write_atomic(path, partial(torch.save, {
        "recipe": asdict(recipe),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None if scaler is None else scaler.state_dict(),
        "state": state,
        # Streams and shares depend on the world: a checkpoint resumes on the same number of ranks.
        "world_size": world_size,
    }))


def load_checkpoint(path: Path, recipe: Recipe, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    scaler: torch.amp.GradScaler | None, world_size: int, device: torch.device) -> dict[str, Any]:
    """Load ``path`` into the model, optimiser, scheduler and scaler; the loop's state it holds.

    Raises ``ValueError`` naming the fix when the checkpoint was written with another recipe or
    another number of processes.
    """
    fix = f"delete {path} to train this case from the start, or run without --resume"
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises what its unpickler and zip reader raise; all mean "not ours"
        # Never the advice torch's message ends with (weights_only=False): that executes the file's code.
        first = str(exc).strip().splitlines()[0].split(". ")[0][:160] if str(exc).strip() else ""
        # The unpickler's own words ("Weights only load failed ...") point at weights_only: left out.
        plain = first and not isinstance(exc, (pickle.UnpicklingError, EOFError)) and "weights" not in first.lower()
        why = type(exc).__name__ + (f": {first}" if plain else ": not a checkpoint, or cut short")
        raise CheckpointUnreadable(f"--resume: checkpoint {path} is unreadable ({why}); {fix}") from None
    if not isinstance(ckpt, dict) or not {"recipe", "model", "optimizer", "scheduler", "state"} <= set(ckpt):
        raise CheckpointUnreadable(f"--resume: {path} is not a training checkpoint of backbone-bench (no recipe, model, optimizer, "
                                   f"scheduler and state); {fix}")
    if ckpt["recipe"] != asdict(recipe):
        raise ValueError(f"{path} was written with a different recipe; pass the same recipe or resume=False to start over")
    written = ckpt.get("world_size", 1)
    if written != world_size:
        raise ValueError(f"{path} was written by {written} process(es), this run has {world_size}; "
                         f"resume with torchrun --nproc-per-node {written} or resume=False to start over")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None:
        scaler.load_state_dict(ckpt["scaler"])
    state: dict[str, Any] = ckpt["state"]
    if state["best_state"] is not None:
        state["best_state"] = {k: v.cpu() for k, v in state["best_state"].items()}
    return state
