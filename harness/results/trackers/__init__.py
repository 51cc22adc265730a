"""Experiment trackers: a finished run's cases logged, offline, to MLflow, W&B or TensorBoard.

A tracker is registered by its row in :data:`harness.contract.TRACKER_SPECS` (its name, the package
its extra installs, what it writes) and implemented by the module ``harness.results.trackers.<name>``,
which provides:

- ``log(cases, directory, label)``: write every :class:`Tracked` case as one tracker run, grouped
  under ``label`` (the run's timestamp), below ``directory`` (``--track-dir``); returns a line
  saying where it went and how to look at it;
- ``read(directory, label)``: the cases of ``label`` read back with the tracker's own library,
  as :class:`Tracked` again, so a test (or a doubtful user) can check them against the run's JSON.

They log from the run's JSON (:func:`cases_of`), the one document every case ends in, at the end of
a session (:mod:`harness.plugin.session`, after :func:`~harness.results.publish.publish_run`), so a
serial and an xdist session log the same cases. Nothing else branches on a tracker's name.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

from harness.contract import KINDS, METRICS, TRACKER_SPECS, module_name, unknown

# The record's per-epoch curve (harness.training.trained): these keys are its x, the rest its y.
_CURVE_AXES = ("epoch", "step")
CURVE_PREFIX = "curve/"
# A tag every tracker run carries: the run (one session) its case belongs to.
LABEL_KEY = "bench_run"


@dataclass(frozen=True)
class Tracked:
    """One case as a tracker holds it.

    ``params``: its identity, what it resolved (steps, lr, …) and its settings (``settings.<key>``),
    each as text (JSON for anything but a string), because a tracker's params are text. ``metrics``:
    the contract's metrics of its kind that it recorded. ``curves``: ``curve/<key>`` → (epoch, value)
    of the train record's per-epoch curve (loss, val_top1, epoch_time_s).
    """

    name: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)


class TrackerModule(Protocol):
    """What ``harness.results.trackers.<name>`` provides (see the module docstring)."""

    def log(self, cases: Sequence[Tracked], directory: Path, label: str) -> str: ...

    def read(self, directory: Path, label: str) -> dict[str, Tracked]: ...


def tracker_module(name: str) -> TrackerModule:
    """The module of tracker ``name``; ``ValueError`` naming the valid ones for a name with no row."""
    if name not in TRACKER_SPECS:
        raise ValueError(unknown("tracker", name, TRACKER_SPECS))
    return cast(TrackerModule, importlib.import_module(f"{__name__}.{module_name(name)}"))


def missing_message(names: Iterable[str]) -> str | None:
    """The usage error for trackers whose package is not installed (``None`` when all are):
    one line naming the extra that installs each."""
    absent = [TRACKER_SPECS[name] for name in names if importlib.util.find_spec(TRACKER_SPECS[name].package) is None]
    if not absent:
        return None
    what = ", ".join(f"{t.name} needs the {t.package} package" for t in absent)
    extras = ",".join(t.name for t in absent)
    return f"--track {','.join(t.name for t in absent)}: {what}, which is not installed; pip install -e '.[{extras}]' (or drop it from --track)"


def run_label(run: Mapping[str, Any]) -> str:
    """The label of a run's tracker runs: its timestamp (``datetime``), unique per session."""
    return str(run["datetime"])


def cases_of(run: Mapping[str, Any]) -> list[Tracked]:
    """Every case of ``run`` (measured and failed) as a tracker logs it."""
    records = [entry["extra_info"] for entry in run.get("benchmarks", [])]
    records += [entry["extra_info"] for entry in run.get("backbone_bench", {}).get("failed", [])]
    return [tracked(record) for record in records]


def tracked(record: Mapping[str, Any]) -> Tracked:
    """One case record as a tracker logs it (see :class:`Tracked`)."""
    kind = KINDS.get(str(record.get("kind")))
    wanted = kind.metrics if kind is not None else ()
    metrics = {key: float(record[key]) for key in wanted if _number(record.get(key))}
    params = {key: text(value) for key, value in record.items()
              if key not in METRICS and key != "settings" and (value is None or isinstance(value, (str, int, float, bool)))}
    params.update({f"settings.{key}": text(value) for key, value in (record.get("settings") or {}).items()})
    curves: dict[str, list[tuple[int, float]]] = {}
    for point in record.get("curve") or []:
        for key, value in point.items():
            if key not in _CURVE_AXES and _number(value):
                curves.setdefault(f"{CURVE_PREFIX}{key}", []).append((int(point["epoch"]), float(value)))
    return Tracked(str(record.get("case_id", "")), params, metrics, curves)


def text(value: object) -> str:
    """A param's text: a string as it is, anything else as JSON (``None`` → ``null``, ``0.1`` → ``0.1``)."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def track_run(run: Mapping[str, Any], names: Sequence[str], directory: Path) -> tuple[list[str], bool]:
    """Log ``run``'s cases to every tracker in ``names`` under ``directory``.

    Returns the lines to print and whether every tracker took the run: a tracker that fails is one
    line naming it and its error (the run is saved already; the others still log).
    """
    cases = cases_of(run)
    label = run_label(run)
    lines: list[str] = []
    ok = True
    for name in names:
        try:
            where = tracker_module(name).log(cases, directory, label)
        except Exception as exc:  # noqa: BLE001 - a tracker's library raises its own errors; the run is saved already
            lines.append(f"backbone-bench: --track {name}: logging failed ({type(exc).__name__}: {exc}); the run's JSON holds every value")
            ok = False
            continue
        lines.append(f"backbone-bench: tracked {len(cases)} case(s) in {name}: {where}")
    return lines, ok


def _number(value: object) -> bool:
    """A finite number a tracker can hold as a metric (a bool is a setting, not a measurement)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
