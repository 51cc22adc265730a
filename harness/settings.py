"""The validated settings of one session: one field per row of the option table.

Fields have no defaults here: :func:`harness.config.options.settings_from` fills every one from
the command line, pytest.ini, the environment or the table's default, and
:func:`harness.config.options.default_settings` gives a session's defaults to a notebook or a
test. A test checks that the fields and the table's rows are the same set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # edge.profiles imports torch: a parsed --edge-profile is one, but --help needs none
    from harness.edge.profiles import EdgeProfile

# 512 MiB: a Jetson-class share for one model, and a search a 2-core CPU finishes in minutes.
DEFAULT_PLAN_BUDGET = 512 * 2**20


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (1-based, as users and CI matrices count): ``--shard 2/3``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Settings:
    """The matrix, run and gate options of one session, parsed and checked."""

    backbones: list[str]
    img_sizes: list[int]
    batch_sizes: list[int]
    devices: list[str]
    precisions: list[str]
    runtimes: list[str]
    channels_last: bool
    compile: bool
    datasets: list[str]
    subsets: list[str]
    train_batch_sizes: list[int]
    train_img_sizes: list[int | str] | None
    protocols: list[str]
    seg_datasets: list[str] | None
    seg_steps: int
    seg_layers: str
    threads: int | None
    num_classes: int
    bench_time_s: float
    seeds: int
    steps: int | None
    epochs: int | None
    tune: str
    lr: float | None
    weight_decay: float | None
    label_smoothing: float | None
    augment: tuple[str, ...] | None
    early_stop: int | None
    val_fraction: float | None
    grad_accum: int | None
    clip_grad: float | None
    classnames: Path | None
    templates: Path | None
    edge_profile: EdgeProfile | None
    plan_budget: int | None
    count_instructions: bool
    power: bool
    robustness: tuple[str, ...]
    robust_severities: tuple[int, ...]
    int8_accuracy: bool
    data_root: Path | None
    checkpoint_dir: Path
    skip_checksums: bool
    download: bool
    skip_unavailable: bool
    feature_cache: Path
    resume: bool
    track: list[str] | None
    track_dir: Path
    shard: Shard | None
    gate: str | None
    # The gate's tolerance spec as given (checked when parsed; harness.results.tolerances.parse_tolerances reads it).
    fail_on: str
    fail_on_missing: bool
    force: bool
    no_history: bool

    @property
    def plan_budget_bytes(self) -> int:
        """The planning budget: --plan-budget, else the edge profile's memory, else 512 MiB."""
        if self.plan_budget is not None:
            return self.plan_budget
        budget = self.edge_profile.mem_budget_bytes if self.edge_profile is not None else None
        return int(budget) if budget else DEFAULT_PLAN_BUDGET

    @property
    def robustness_setting(self) -> dict[str, object] | None:
        """``--robustness`` as a digested train setting: the corruptions, severities and the corruption
        seed (another set is another case, "not comparable"); ``None`` when off."""
        from harness.contract import CORRUPTION_SEED

        if not self.robustness:
            return None
        return {"corruptions": list(self.robustness), "severities": list(self.robust_severities), "seed": CORRUPTION_SEED}

    @property
    def edge_profile_name(self) -> str | None:
        """The edge profile as a digested setting: its name, or ``None``."""
        return self.edge_profile.name if self.edge_profile is not None else None

    @property
    def inference_threads(self) -> int | None:
        """CPU threads of inference cases: an edge profile's count wins over --threads."""
        return (self.edge_profile.threads if self.edge_profile is not None else None) or self.threads
