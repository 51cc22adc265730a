"""Stored runs gathered into what the site draws: machines, their runs in storage order, and one
series per (case, metric) split where the case stops being comparable.

A machine is a folder of the storage (its baseline key; a run file lying in the storage root is
filed under its own ``baseline_key``). Its runs are in storage order, the ``NNNN`` number
``--benchmark-save`` gives, which is the order they were saved in. An unreadable run file is
skipped and named, never fatal: one corrupt file must not take the history of the others down.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from harness.contract import LATENCY_SAMPLES, SEED_SAMPLES, Metric
from harness.results.comparable import code_note, settings_note
from harness.results.hosts import HostClasses
from harness.results.runs import Case, Run, RunError, read_run_file, stored_runs, without_merged_shards
from harness.results.site.changes import change_points

_NUMBER = re.compile(r"^(\d{4})_")
# The spread band per samples key: (label, lower and upper percentile, the unit the samples are in).
# A metric gets the band only when its unit is the samples' unit: the latency percentiles and the
# mean, not throughput (its rounds are latencies); top-1, not top-5 (its seeds are top-1's).
_BANDS = {LATENCY_SAMPLES: ("rounds p10–p90", 10.0, 90.0, "ms"), SEED_SAMPLES: ("seeds min–max", 0.0, 100.0, "%")}


@dataclass(frozen=True)
class StoredRun:
    """A readable run file: its label (``<machine>/NNNN_name``), its number and the run."""

    label: str
    number: int
    run: Run

    @property
    def name(self) -> str:
        """The file's name without the machine folder: ``0003_smoke``."""
        return self.label.rsplit("/", 1)[-1]

    @property
    def commit(self) -> str:
        """The commit id, shortened to 8 characters (``?`` when the run recorded none)."""
        return str(self.run.commit_info.get("id") or "?")[:8]

    @property
    def date(self) -> str:
        """When the run was saved (``YYYY-MM-DD HH:MM``), or ``?``."""
        return (self.run.datetime or "?")[:16].replace("T", " ")


@dataclass(frozen=True)
class Machine:
    """One baseline key and its runs, oldest first."""

    key: str
    runs: tuple[StoredRun, ...]

    @cached_property
    def hosts(self) -> HostClasses:
        """The host classes of this machine's runs (:mod:`harness.results.hosts`)."""
        return HostClasses([s.run for s in self.runs])

    def cases(self) -> dict[str, str]:
        """Every case id seen on this machine and its kind, in the order first seen."""
        found: dict[str, str] = {}
        for stored in self.runs:
            for case_id, case in stored.run.cases.items():
                found.setdefault(case_id, case.kind)
        return found


@dataclass(frozen=True)
class Storage:
    """The readable runs of a storage folder by machine, and each skipped file with its reason."""

    root: Path
    machines: Mapping[str, Machine]
    skipped: tuple[str, ...] = ()


def gather(root: Path) -> Storage:
    """Read every run file under ``root``; :class:`RunError` when there is none, or none readable."""
    files = stored_runs(root)
    if not files:
        raise RunError(f"no runs in {root}: nothing to build a site from; save runs with pytest --benchmark-save=NAME "
                       "or pass --benchmark-storage DIR")
    by_machine: dict[str, list[StoredRun]] = {}
    skipped: list[str] = []
    for path in files:
        label = str(path.relative_to(root).with_suffix(""))
        try:
            run = read_run_file(path, label)
        except RunError as exc:
            skipped.append(str(exc))
            continue
        key = path.parent.name if path.parent != root else run.baseline_key
        match = _NUMBER.match(path.name)
        by_machine.setdefault(key, []).append(StoredRun(label, int(match[1]) if match else 0, run))
    if not by_machine:
        raise RunError(f"no readable run in {root}; skipped: " + "; ".join(skipped))
    machines = {}
    for key in sorted(by_machine):
        runs = sorted(by_machine[key], key=lambda s: (s.number, s.label))
        kept = {id(r) for r in without_merged_shards([s.run for s in runs])}
        machines[key] = Machine(key, tuple(s for s in runs if id(s.run) in kept))
    return Storage(root, machines, tuple(skipped))


@dataclass(frozen=True)
class Point:
    """One run's value of a metric, the spread band around it (or ``None``) and the case it came from."""

    run: StoredRun
    value: float
    case: Case
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Segment:
    """Consecutive runs of a case with one settings digest; ``changes`` index the points where a
    new level starts; ``differs`` says what changed against the previous segment (``""`` first);
    ``host`` why its host class is not the previous segment's (``""``: the same class)."""

    points: tuple[Point, ...]
    changes: tuple[int, ...] = ()
    differs: str = ""
    host: str = ""


@dataclass(frozen=True)
class Series:
    """A metric of one case over a machine's runs, in comparable segments; ``band`` names the spread drawn."""

    case_id: str
    metric: Metric
    segments: tuple[Segment, ...] = field(default=())
    band: str | None = None

    @property
    def points(self) -> list[Point]:
        return [p for s in self.segments for p in s.points]


def series(machine: Machine, case_id: str, metric: Metric) -> Series:
    """``metric`` of ``case_id`` over the machine's runs: successful cases with a value, split where
    the settings digest changes or, for a timed metric, the host class does (a break, not a step),
    with change points found within each segment."""
    band = _BANDS.get(metric.samples or "")
    if band is not None and band[3] != metric.unit:
        band = None
    runs: list[list[Point]] = []
    for stored in machine.runs:
        case = stored.run.cases.get(case_id)
        value = case.value(metric.key) if case is not None and case.status == "ok" else None
        if case is None or value is None:
            continue
        low = high = None
        samples = case.samples(metric.samples) if band is not None and metric.samples else None
        if band is not None and samples:
            low, high = (float(v) for v in np.percentile(samples, [band[1], band[2]]))
        point = Point(stored, value, case, low, high)
        last = runs[-1][-1] if runs else None
        same_host = metric.noise != "timed" or last is None or machine.hosts.of(last.run.run) is machine.hosts.of(stored.run)
        if last is not None and same_host and last.case.settings_digest == case.settings_digest and last.case.code_digest == case.code_digest:
            runs[-1].append(point)
        else:
            runs.append([point])
    segments = []
    for i, points in enumerate(runs):
        differs = "; ".join(n for n in (settings_note(runs[i - 1][-1].case, points[0].case), code_note(runs[i - 1][-1].case, points[0].case)) if n) if i else ""
        host = machine.hosts.differs(runs[i - 1][-1].run.run, points[0].run.run) if i and metric.noise == "timed" else ""
        found = change_points([p.value for p in points], metric.noise)
        segments.append(Segment(tuple(points), tuple(found), differs, host))
    return Series(case_id, metric, tuple(segments), band[0] if band is not None else None)
