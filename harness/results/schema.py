"""A case record checked against the run contract, and schema 1 records read as schema 2.

Schema 2 (:data:`harness.contract.SCHEMA_VERSION`): every case record carries ``settings`` (the
resolved values of exactly its kind's contract settings) and ``settings_digest``. A reader
recomputes the digest; a mismatch means the file was hand-edited or written by other code, and
comparing it would judge cases that may not have run as their record says.

Schema 1 records carry neither. They are read by filling in what version 1 ran with
(:data:`V1_SETTINGS`), so every baseline saved before schema 2 stays comparable with new runs
made under the same settings.

A train case trained by several processes (torchrun) records ``world_size`` and its id ends in
``-ws{N}``; records written before that have no ``world_size`` and were one process
(:func:`world_size`).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

from harness.contract import (
    KIND_NAMES,
    KINDS,
    METRICS,
    SCHEMA_VERSION,
    STATUSES,
    UNIT_BOUNDS,
    metric_range_problem,
    settings_digest,
    unknown,
)

Record = Mapping[str, Any]
# One fact about version 1: (the case's record, its run's pytest-benchmark options) -> the value.
V1Fact = Callable[[Record, Record], object]
# Keys that hold the raw repeated measurements behind a metric (latency rounds, per-seed top-1).
SAMPLE_KEYS = tuple(dict.fromkeys(m.samples for m in METRICS.values() if m.samples))
# The metric whose unit each sample key's values are in (the first metric naming it).
_SAMPLED = {key: next(m.key for m in METRICS.values() if m.samples == key) for key in SAMPLE_KEYS}


class RecordError(ValueError):
    """A case record that breaks the contract; the message says what, the reader says where."""


def _key(name: str, default: object = None) -> V1Fact:
    return lambda record, options: record.get(name, default)


def _fixed(value: object) -> V1Fact:
    return lambda record, options: value


def _v1_bench_time(record: Record, options: Record) -> object:
    return options.get("bench_time_s", 1.0)


def _v1_profile(record: Record, options: Record) -> object:
    """The edge profile's name: v1 copied ``EdgeProfile.as_record()`` (``edge_profile``: the name)."""
    value = record.get("edge_profile", record.get("edge_profile_name"))
    if isinstance(value, Mapping):
        value = value.get("name")
    return None if value is None else str(value)


def _v1_power(record: Record, options: Record) -> object:
    return "power_source" in record or "power_unavailable" in record


def _v1_seeds(record: Record, options: Record) -> object:
    seeds = record.get("seeds")
    return len(seeds) if isinstance(seeds, list) else seeds


def _v1_augment(record: Record, options: Record) -> object:
    augment = record.get("augment")  # v1 wrote one name ("standard"); schema 2 a list of names
    if augment is None or isinstance(augment, list):
        return augment
    from harness.contract import normalise_augment

    # v1's "mixup" and "randaugment" included the standard crop, as schema 2 spells out.
    return list(normalise_augment([str(augment)]))


# What version 1 ran with, per kind and contract setting. HISTORICAL AND FROZEN: these describe the
# code that wrote the schema-1 files (its defaults and the record keys it kept). Never change one to
# follow a new default: every schema-1 baseline would change its digest and be compared with runs
# that did not run as it did. A setting added to the contract later gets the value v1 used.
V1_SETTINGS: Mapping[str, Mapping[str, V1Fact]] = {
    "inference": {
        "num_classes": _key("num_classes", 10),
        "threads": _key("threads"),  # v1 recorded the torch threads the case used
        "bench_time_s": _v1_bench_time,
        "edge_profile": _v1_profile,
        "power": _v1_power,
    },
    "train": {
        "threads": _fixed(None),  # v1 did not record it: unknown, so never equal to a recorded count
        "seeds": _v1_seeds,
        # Schema 4 replaced epochs by the schedule and added the search and flips (see ADDED_IN_V4).
        "schedule": lambda record, options: legacy_schedule(record.get("epochs")),
        "optimizer": _key("optimizer"),
        "lr": _key("lr"),
        "weight_decay": _key("weight_decay"),
        "label_smoothing": _fixed(0.1),
        "augment": _v1_augment,
        "hflip": _fixed(None),
        "early_stop": _fixed(None),
        "val_fraction": _fixed(None),
        "grad_accum": _fixed(1),
        "clip_grad": _fixed(None),
        "tune": _fixed(None),
        "edge_profile": _v1_profile,
        "weights_sha256": _fixed(None),  # every case trained from random weights
        "robustness": _fixed(None),
    },
    "plan": {
        "num_classes": _key("num_classes", 10),
        "plan_budget_bytes": _key("plan_budget_bytes"),
        "edge_profile": _v1_profile,
    },
}


# Settings added after schema 2, with the value every schema-2 case ran with. HISTORICAL AND
# FROZEN, like V1_SETTINGS: a schema-2 case gets exactly these, so it stays comparable with a new
# run that ran the same way.
ADDED_AFTER_V2: Mapping[str, Mapping[str, object]] = {
    "inference": {},
    "train": {"weights_sha256": None},  # schema 2 trained from random weights only
    "plan": {},
}


# Schema 4 counts training in optimiser steps: a schema 1-3 train case recorded ``epochs`` and
# neither ``schedule``, ``tune`` nor ``hflip``. HISTORICAL AND FROZEN: it is read with its schedule
# as ``"epochs N"`` (an epoch schedule, so two old runs of other epochs still differ) and the other
# two unset (it ran no search; its flips were not recorded): with a new run it is "not comparable:
# schedule epochs 10 → steps 100, …", never judged against one that trained a different length.
ADDED_IN_V4: Mapping[str, Mapping[str, object]] = {"inference": {}, "train": {"tune": None, "hflip": None}, "plan": {}}
# Schema 5 added --robustness: a case before it ran none.
ADDED_IN_V5: Mapping[str, Mapping[str, object]] = {"inference": {}, "train": {"robustness": None}, "plan": {}}
# Kinds younger than schema 1, with the schema that brought them: no older run can hold one, so the
# tables above have no row for them.
KIND_SINCE: Mapping[str, int] = {"dense": 5}
RENAMED_IN_V4: Mapping[str, Mapping[str, str]] = {"inference": {}, "train": {"epochs": "schedule"}, "plan": {}}


def legacy_schedule(epochs: object) -> str | None:
    """The schedule setting of a case that recorded ``epochs`` (schema 1-3)."""
    return None if epochs is None else f"epochs {epochs}"


def is_number(value: Any) -> bool:
    """A real number, not a bool (numbers.Real also admits numpy scalars from the plugin's in-memory run)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_schema(schema: object) -> int:
    """The run's schema version, when this reader knows it."""
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise RecordError(f"backbone_bench.schema {schema!r} is not a schema version; the file was hand-edited, restore it from git or re-run the suite")
    if schema > SCHEMA_VERSION:
        raise RecordError(f"written by a newer backbone-bench (run schema {schema}, this one reads up to {SCHEMA_VERSION}); update this checkout")
    return schema


_WS_SUFFIX = re.compile(r"-ws(\d+)$")


def world_size(record: Record) -> int:
    """The processes a case trained on: 1 when absent (every record from before torchrun cases)."""
    value = record.get("world_size", 1)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RecordError(f"world_size must be a positive integer, got {value!r}: {_EDITED}")
    return value


def check_record(record: Record, failed: bool) -> tuple[str, str]:
    """(kind, status) of a record whose metric values and samples have the contract's types."""
    kind = record["kind"]
    if kind not in KINDS:
        raise RecordError(unknown("kind", str(kind), KIND_NAMES))
    # The world size is part of a case's identity: its id says the same (no suffix for one process).
    suffix = _WS_SUFFIX.search(str(record.get("case_id", "")))
    if kind == "train" and (int(suffix[1]) if suffix else 1) != world_size(record):
        raise RecordError(f"case_id {record.get('case_id')!r} does not match world_size {world_size(record)}: {_EDITED}")
    # 'status' is part of the contract; a case written without it ran to completion, so it is 'ok'.
    # An entry of backbone_bench.failed is failed whatever its record says (e.g. ok but no rounds).
    status = "failed" if failed else record.get("status", "ok")
    if status not in STATUSES:
        raise RecordError(unknown("status", str(status), STATUSES))
    for key in METRICS:  # compare does arithmetic on every metric
        if record.get(key) is not None and not is_number(record[key]):
            raise RecordError(f"{key} must be a number or null, got {record[key]!r}")
        if record.get(key) is not None and (problem := metric_range_problem(key, float(record[key]))):
            raise RecordError(f"{problem}: {_GARBAGE}")
    for key in SAMPLE_KEYS:
        value = record.get(key)
        if value is not None and not (isinstance(value, list) and all(is_number(v) for v in value)):
            raise RecordError(f"{key} must be a list of numbers, got {str(value)[:60]}")
        low, high = UNIT_BOUNDS[METRICS[_SAMPLED[key]].unit]
        if value and not all(low <= sample <= high for sample in value):  # NaN fails both comparisons; the slow path names it
            for position, sample in enumerate(value):
                if problem := metric_range_problem(_SAMPLED[key], float(sample), f"{key}[{position}]"):
                    raise RecordError(f"{problem}: {_GARBAGE}")
    return str(kind), str(status)


def case_settings(record: Record, kind: str, schema: int, options: Record) -> dict[str, Any]:
    """The case's settings in the contract's order: checked (schema 2) or filled in (schema 1)."""
    expected = KINDS[kind].settings
    if schema < KIND_SINCE.get(kind, 1):
        raise RecordError(f"a {kind} case in a schema-{schema} run, but the {kind} kind came with schema {KIND_SINCE[kind]}: {_EDITED}")
    if schema == 1:
        return {key: V1_SETTINGS[kind][key](record, options) for key in expected}
    settings = record.get("settings")
    if not isinstance(settings, dict):
        raise RecordError(f"no 'settings' (schema {schema} records every case's settings): {_EDITED}")
    added = {**(ADDED_AFTER_V2[kind] if schema == 2 else {}), **(ADDED_IN_V4[kind] if schema < 4 else {}), **(ADDED_IN_V5[kind] if schema < 5 else {})}
    renamed = RENAMED_IN_V4[kind] if schema < 4 else {}
    expected = (*(key for key in expected if key not in added and key not in renamed.values()), *renamed)
    missing, extra = [k for k in expected if k not in settings], [k for k in settings if k not in expected]
    if missing or extra:
        wrong = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "", f"unknown {', '.join(extra)}" if extra else "") if part)
        raise RecordError(f"settings {wrong} (a {kind} case records {', '.join(expected)}): {_EDITED}")
    digest = settings_digest(settings)
    if record.get("settings_digest") != digest:
        raise RecordError(f"settings_digest {record.get('settings_digest')!r} is not the digest of its settings ({digest}): {_EDITED}")
    filled = {**settings, **added, **{new: legacy_schedule(settings[old]) for old, new in renamed.items()}}
    return {key: filled[key] for key in KINDS[kind].settings}


# Never a verdict on a value that is no measurement: the reader refuses the whole run.
_GARBAGE = ("not a measurement, so no verdict is given on this run; the file was hand-edited or written by a broken session: "
            "restore it from git or re-run the case")
_EDITED = "the file was hand-edited or written by another version of backbone-bench; restore it from git or re-run the suite"
