"""Shards: a deterministic, duration-balanced part of the selected cases (``--shard K/N``).

A study too large for one machine runs as N shard sessions (CI matrix jobs, SLURM array tasks,
Kubernetes indexed jobs), each on the same checkout with the same arguments plus ``--shard K/N``.
:func:`plan` splits the cases that remain after ``-k``/``-m`` so that

- every case is in exactly one shard, and every machine computes the same split: the order is a
  hash of each case's id (not collection order, not the machine), and the costs come from the
  committed ``baselines/`` folder, which every clone of a commit shares;
- shards take about the same wall time: a case costs its median ``duration_s`` over the stored
  runs, or an estimate calibrated on them (:class:`CostModel`) when it never ran, and
  :func:`split` spreads the expensive cases first;
- adding a case moves few others: every case has a home shard (a hash of its id) and stays
  there unless home is full.

The run of a shard session records :meth:`Plan.record`: the shard, a digest of the whole
selection (case ids and their settings digests) and a digest of the split, which
``python -m harness merge`` checks so that shards of different selections, settings or splits
are never merged into one run.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.contract import KINDS
from harness.errors import SettingError
from harness.settings import Shard

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
# A test that is not a benchmark case (a plain test collected beside them) is cheap.
_PLAIN_TEST_S = 0.1


def parse_shard(text: str) -> Shard:
    """``"2/3"`` → ``Shard(2, 3)``; anything else is a :class:`SettingError` naming the form."""
    match = _SHARD.match(str(text))
    if match is None:
        raise SettingError(f"--shard wants K/N with whole numbers, e.g. --shard 2/3 (the second of three shards), got {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1:
        raise SettingError(f"--shard {text}: the shard count N must be at least 1")
    if not 1 <= index <= count:
        raise SettingError(f"--shard {text}: shards are numbered 1 to {count}; use --shard 1/{count} … --shard {count}/{count}")
    return Shard(index, count)


@dataclass(frozen=True)
class Item:
    """One selected test as the planner sees it: ``key`` is the case id (or the node id of a
    plain test), ``digest`` its settings digest, ``cost_s`` its expected seconds."""

    key: str
    digest: str
    cost_s: float
    source: str  # "stored", "estimated" or "plain"


@dataclass(frozen=True)
class Plan:
    """The split of one selection into ``count`` shards."""

    items: tuple[Item, ...]
    shards: tuple[int, ...]  # 1-based shard of items[i]
    count: int

    def keys_of(self, index: int) -> list[str]:
        return [item.key for item, shard in zip(self.items, self.shards, strict=True) if shard == index]

    def cost_of(self, index: int) -> float:
        return sum(item.cost_s for item, shard in zip(self.items, self.shards, strict=True) if shard == index)

    @property
    def selection_digest(self) -> str:
        """What was selected and with which settings: equal on every shard of one study."""
        return _digest(f"{item.key}\t{item.digest}" for item in sorted(self.items, key=lambda i: i.key))

    @property
    def plan_digest(self) -> str:
        """Which case went to which shard: equal on every shard that split the same way."""
        return _digest(f"{item.key}\t{shard}" for item, shard in sorted(zip(self.items, self.shards, strict=True), key=lambda p: p[0].key))

    def record(self, shard: Shard) -> dict[str, Any]:
        """What a shard session's run records under ``backbone_bench.shard``."""
        sources = [item.source for item, s in zip(self.items, self.shards, strict=True) if s == shard.index]
        return {
            "index": shard.index,
            "count": shard.count,
            "selection": self.selection_digest,
            "plan": self.plan_digest,
            "cases": len(sources),
            "expected_s": round(self.cost_of(shard.index), 3),
            "costs_from_stored_runs": sources.count("stored"),
        }


def _digest(lines: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def _order_key(key: str) -> str:
    # A hash of the case id: the same on every machine, whatever the collection order, and
    # spreading each backbone's (and each kind's) cases over the shards.
    return hashlib.sha256(key.encode()).hexdigest()


# How far past its fair share of the cost a shard may take a case that belongs there: a little
# imbalance buys a split that stays put when cases come and go.
SLACK = 0.05


def split(items: Sequence[Item], count: int) -> Plan:
    """Assign every item to one of ``count`` shards, balancing cost and keeping items at home.

    Each item has a home shard (a hash of its key). Taking items from the most to the least
    expensive, an item goes home when home stays within the fair share of the total cost (plus
    :data:`SLACK`), else to the least-loaded shard, as longest-processing-time scheduling does.
    The expensive items are thus spread first and the cheap ones fill the gaps, so no shard
    exceeds its share by more than about one case; and since most items sit at home, adding a
    case moves only the few that overflowed near it, not the whole split.
    """
    ordered = sorted(items, key=lambda item: (-item.cost_s, _order_key(item.key), item.key))
    capacity = sum(item.cost_s for item in ordered) / count * (1 + SLACK)
    loads = [0.0] * count
    shard_of: dict[str, int] = {}
    for item in ordered:
        home = int(_order_key(item.key), 16) % count
        target = home if loads[home] + item.cost_s <= capacity else min(range(count), key=lambda k: (loads[k], k))
        loads[target] += item.cost_s
        shard_of[item.key] = target + 1
    by_key = sorted(ordered, key=lambda item: item.key)
    shards = [shard_of[item.key] for item in by_key]
    if len(by_key) >= count and len(set(shards)) < count:
        # Only when nothing costs anything: every shard still gets work (a shard session with none fails).
        shards = [index * count // len(by_key) + 1 for index in range(len(by_key))]
    return Plan(tuple(by_key), tuple(shards), count)


# --- costs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseFacts:
    """What the cost model needs of a case: its kind, id, settings and the work it will do."""

    case_id: str
    kind: str
    backbone: str
    img_size: int
    images: int  # training images per epoch (train cases)
    epochs: int
    seeds: int
    bench_time_s: float


class CostModel:
    """Expected seconds per case, from the durations of the stored runs.

    A case that ran before costs the median of its stored ``duration_s`` (older runs, which lack
    it, give the training's ``case_wall_s`` or the timed rounds' total). A case that never ran is
    estimated from work units calibrated on the stored cases of its kind: training costs
    ``GMACs × images × epochs × seeds`` (GMACs from any stored case of the backbone, scaled by
    the resolution squared), a latency case its timed seconds plus set-up, a planning case a
    constant. Without any stored case of a kind the calibration falls back to defaults measured
    on a 2-core CPU.
    """

    # Seconds per unit without calibration: each kind's row (harness.contract.Kind.seconds_per_unit).
    DEFAULT_SCALE = {kind.name: kind.seconds_per_unit for kind in KINDS.values()}
    TIMED_SETUP_S = 2.0

    def __init__(self, durations: Mapping[str, list[float]], gmacs: Mapping[tuple[str, int], float]) -> None:
        self.durations = {key: statistics.median(values) for key, values in durations.items() if values}
        self.gmacs = dict(gmacs)
        self.scale: dict[str, float] = dict(self.DEFAULT_SCALE)

    @classmethod
    def from_storage(cls, storage: Path) -> CostModel:
        """Read every stored run under ``storage`` but shard runs.

        A shard session saved with ``--benchmark-save`` must not change the split of the shards
        that run after it, so runs that are one shard (``backbone_bench.shard``) are left out;
        merged and serial runs count. Unreadable files are skipped: they are reported when they
        are themselves compared, never fatal here.
        """
        from harness.results.runs import RunError, read_run_file, stored_runs

        durations: dict[str, list[float]] = {}
        gmacs: dict[tuple[str, int], float] = {}
        try:
            paths = stored_runs(storage)
        except RunError:
            paths = []
        for path in paths:
            try:
                run = read_run_file(path)
            except RunError:
                continue
            if run.shard is not None:
                continue
            for case in run.cases.values():
                seconds = stored_seconds(case.kind, case.extra, case.stats)
                if seconds is not None:
                    durations.setdefault(case.case_id, []).append(seconds)
                value = case.value("gmacs")
                size = case.extra.get("img_size")
                if value and isinstance(size, int):
                    gmacs[(str(case.extra.get("backbone")), size)] = value
        return cls(durations, gmacs)

    def calibrate(self, facts: Iterable[CaseFacts]) -> None:
        """Fit each kind's seconds per work unit on the cases that both ran before and are selected."""
        ratios: dict[str, list[float]] = {}
        for fact in facts:
            seconds, units = self.durations.get(fact.case_id), self.units(fact)
            if seconds is not None and units:
                ratios.setdefault(fact.kind, []).append(seconds / units)
        for kind, values in ratios.items():
            self.scale[kind] = statistics.median(values)

    def units(self, fact: CaseFacts) -> float | None:
        """The case's work in its kind's cost units (:attr:`harness.contract.Kind.cost`)."""
        cost = KINDS[fact.kind].cost
        if cost == "training":
            gmacs = self.backbone_gmacs(fact.backbone, fact.img_size)
            return None if gmacs is None else gmacs * fact.images * fact.epochs * fact.seeds
        if cost == "timed":
            return fact.bench_time_s + self.TIMED_SETUP_S
        return 1.0

    def backbone_gmacs(self, backbone: str, img_size: int) -> float | None:
        """GMACs per image of ``backbone`` at ``img_size`` from any stored size (FLOPs scale with pixels)."""
        if (backbone, img_size) in self.gmacs:
            return self.gmacs[(backbone, img_size)]
        known = sorted((size, value) for (name, size), value in self.gmacs.items() if name == backbone)
        if known:
            size, value = known[0]
            return value * (img_size / size) ** 2
        # Never measured: the median backbone stored (or 1 GMAC at 224 px), at this resolution.
        typical = [value * (224 / size) ** 2 for (_, size), value in self.gmacs.items()]
        return (statistics.median(typical) if typical else 1.0) * (img_size / 224) ** 2

    def cost(self, fact: CaseFacts) -> tuple[float, str]:
        """``(seconds, "stored" | "estimated")``."""
        if fact.case_id in self.durations:
            return self.durations[fact.case_id], "stored"
        units = self.units(fact)
        return (units or 1.0) * self.scale.get(fact.kind, 1.0), "estimated"


def stored_seconds(kind: str, record: Mapping[str, Any], stats: Mapping[str, Any]) -> float | None:
    """A stored case's wall seconds: ``duration_s``; for runs written before it, the training's
    ``case_wall_s`` or the total of the timed rounds."""
    trained = kind in KINDS and KINDS[kind].cost == "training"
    for value in (record.get("duration_s"), record.get("case_wall_s") if trained else None, stats.get("total")):
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def plan(selected: Sequence[tuple[str, str, CaseFacts | None]], count: int, model: CostModel) -> Plan:
    """Split ``selected`` — ``(key, settings digest, facts or None for a plain test)`` — into ``count`` shards."""
    facts = [fact for _, _, fact in selected if fact is not None]
    model.calibrate(facts)
    items = []
    for key, digest, fact in selected:
        if fact is None:
            items.append(Item(key, digest, _PLAIN_TEST_S, "plain"))
        else:
            seconds, source = model.cost(fact)
            items.append(Item(key, digest, seconds, source))
    keys = [item.key for item in items]
    if len(set(keys)) != len(keys):
        duplicate = next(key for key in keys if keys.count(key) > 1)
        raise SettingError(f"--shard: the selection holds {duplicate!r} twice; a shard plan needs unique case ids")
    return split(items, count)


def case_facts(spec: Any, settings: Any, digested: Mapping[str, Any]) -> CaseFacts:
    """The cost-model facts of a :class:`~harness.matrix.cases.CaseSpec` under the session's settings;
    ``digested`` are the case's resolved contract settings (epochs and seeds as they will run)."""
    images = _training_images(str(spec.dataset), str(spec.subset)) if KINDS[spec.kind].cost == "training" else 0
    return CaseFacts(
        case_id=spec.case_id,
        kind=spec.kind,
        backbone=spec.backbone,
        img_size=spec.img_size,
        images=images,
        epochs=_passes(digested, images, spec.batch_size),
        seeds=int(digested.get("seeds") or 1),
        bench_time_s=float(settings.bench_time_s),
    )


def _passes(digested: Mapping[str, Any], images: int, batch_size: int) -> int:
    """Passes over the training images the case's schedule makes (its steps x batch / images)."""
    from harness.training.schedule import planned_steps

    schedule = digested.get("schedule")
    if not schedule or not images:
        return 1
    steps = planned_steps(str(schedule), images, batch_size)
    return max(1, round(steps * min(batch_size, images) / images))


def _training_images(dataset: str, subset: str) -> int:
    from harness.data.subsets import parse_subset, planned_size

    size = planned_size(dataset, subset)
    if size is None:
        # A folder's size is known once it is read; a folder's subset is usually its point.
        spec = parse_subset(subset)
        return spec.value if spec.kind == "count" and spec.value else 1000
    return size
