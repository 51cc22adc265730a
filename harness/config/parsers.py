"""Parsers for every matrix option, and the validated :class:`Settings` of a session.

Each parser takes the text a user wrote (command line or ``pytest.ini``) and returns a typed
value, or raises :class:`SettingError` naming the valid choices. The plugin calls them as
argparse ``type=`` validators, so bad input is a usage error at parse time.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from harness.devices import PRECISIONS, available_devices, parse_device

T = TypeVar("T")


class SettingError(ValueError):
    """A bad option value; the message names the valid choices."""


def split_list(text: str) -> list[str]:
    """``"a, b,c"`` → ``["a", "b", "c"]``; newlines count as commas (multi-line ini values)."""
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def positive_int(text: str, what: str = "value") -> int:
    """A positive integer, or a :class:`SettingError` saying what was expected."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise SettingError(f"{what} must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise SettingError(f"{what} must be a positive integer, got {text!r}")
    return value


def int_list(what: str) -> Callable[[str], list[int]]:
    """A parser of comma-separated positive integers (``"1,32"``) for the option ``what``."""

    def parse(text: str) -> list[int]:
        values = [positive_int(part, f"{what} entry") for part in split_list(text)]
        if not values:
            raise SettingError(f"{what} needs at least one positive integer, e.g. 1,32")
        return list(dict.fromkeys(values))

    return parse


def choice_list(what: str, choices: tuple[str, ...]) -> Callable[[str], list[str]]:
    """A parser of comma-separated names drawn from ``choices``."""

    def parse(text: str) -> list[str]:
        values = [part.lower() for part in split_list(text)]
        for value in values:
            if value not in choices:
                close = difflib.get_close_matches(value, choices, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise SettingError(f"unknown {what} {value!r}{hint}; valid: {', '.join(choices)}")
        if not values:
            raise SettingError(f"{what} needs at least one of: {', '.join(choices)}")
        return list(dict.fromkeys(values))

    return parse


def parse_devices(text: str) -> list[str]:
    """``auto`` (every available device) or a list of ``cpu``, ``cuda``, ``cuda:N``, ``mps``."""
    if text.strip().lower() == "auto":
        return available_devices()
    try:
        values = [parse_device(part) for part in split_list(text)]
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    if not values:
        raise SettingError("devices needs at least one of: auto, cpu, cuda, cuda:N, mps")
    return list(dict.fromkeys(values))


def parse_backbones(text: str) -> list[str]:
    """Registry names, groups and timm model names (see :func:`harness.models.resolve_backbones`)."""
    from harness.models import UnknownBackbone, resolve_backbones

    try:
        names = resolve_backbones(split_list(text))
    except UnknownBackbone as exc:
        raise SettingError(str(exc)) from None
    if not names:
        raise SettingError("backbones needs at least one name or group (cnn, transformer, hybrid, edge, all)")
    return names


def parse_threads(text: str) -> int | None:
    """``auto`` (torch's default) or a positive thread count for CPU cases."""
    return None if text.strip().lower() == "auto" else positive_int(text, "threads")


def number(what: str, *, low: float = 0.0, high: float | None = None, low_inclusive: bool = False) -> Callable[[str], float]:
    """A parser of a float above ``low`` (or at it, with ``low_inclusive``) and below ``high``."""
    rule = f"{'>=' if low_inclusive else '>'} {low:g}" if high is None else f"in ({low:g}, {high:g})"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        above = value >= low if low_inclusive else value > low
        if not (above and (high is None or value < high)):  # NaN fails every comparison
            raise SettingError(f"{what} must be a number {rule}, got {text!r}")
        return value

    return parse


def positive_float(what: str) -> Callable[[str], float]:
    """A parser of a float > 0."""
    return number(what)


parse_precisions = choice_list("precision", PRECISIONS)


@dataclass(frozen=True)
class Settings:
    """The validated matrix and run options of one session."""

    backbones: list[str]
    img_sizes: list[int] = field(default_factory=lambda: [32])
    batch_sizes: list[int] = field(default_factory=lambda: [1, 32])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    runtimes: list[str] = field(default_factory=lambda: ["eager"])
    channels_last: bool = False
    compile: bool = False
    threads: int | None = 1
    num_classes: int = 10
    bench_time_s: float = 1.0
    # Training.
    datasets: list[str] = field(default_factory=lambda: ["digits"])
    subsets: list[str] = field(default_factory=lambda: ["full"])
    train_batch_sizes: list[int] = field(default_factory=lambda: [128])
    seeds: int = 1
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    augment: str | None = None
    early_stop: int | None = None
    val_fraction: float | None = None
    grad_accum: int | None = None
    clip_grad: float | None = None
    data_root: Path | None = None
    download: bool = False
    skip_checksums: bool = False
    resume: bool = False
    int8_accuracy: bool = False
    checkpoint_root: Path = Path(os.environ.get("BACKBONE_BENCH_CHECKPOINTS", ".bench-checkpoints"))
    # Edge.
    edge_profile: object | None = None
    power: bool = False
    plan_budget: int | None = None

    @property
    def plan_budget_bytes(self) -> int:
        """The planning budget: --plan-budget, else the edge profile's memory, else 512 MiB."""
        if self.plan_budget is not None:
            return self.plan_budget
        budget = getattr(self.edge_profile, "mem_budget_bytes", None)
        # 512 MiB: a Jetson-class share for one model, and a search a 2-core CPU finishes in minutes.
        return int(budget) if budget else 512 * 2**20
