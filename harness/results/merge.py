"""One run from shard runs: ``python -m harness merge`` joins the runs of ``pytest --shard K/N``.

A study too large for one session runs as N shard sessions, each saving an ordinary run whose
``backbone_bench.shard`` names its shard and carries two digests (:mod:`harness.scale.shards`): one of
the whole selection (every case id and its settings digest) and one of the split (which case
went to which shard). :func:`merge_runs` joins the N runs into one document in the contract of
:func:`harness.results.records.build_run`, so compare, the gate, the report and
``pytest-benchmark compare`` read it like any other run.

A merged run claims that its cases ran together: one machine, one software stack, one commit,
one selection. Every input is therefore checked first, and a merge that would break that claim
is refused, naming the runs and the fix, before anything is written. The checks follow the
order in which a user can act on them: the wrong file, the wrong machine or checkout, the wrong
selection or split, then a shard given twice or missing.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.results.hosts import apart, fingerprint
from harness.results.runs import Run, RunError, read_run_file, resolve_run_id

# Software facts of machine_info that decide what ran. The merged run states them once, so every
# shard must share them. (The host name may differ: shards of a study run on several nodes; the
# hardware is named by the baseline key, checked on its own.)
_SOFTWARE = ("torch", "torchvision", "timm", "fvcore", "onnxruntime", "cuda")


class MergeError(RunError):
    """Runs that cannot be merged into one; the message names the runs involved and the fix."""


@dataclass(frozen=True)
class ShardRun:
    """One input: its file, its label in messages, the document as written and its validation."""

    path: Path
    label: str
    doc: dict[str, Any]
    run: Run
    index: int
    count: int
    selection: str
    plan: str
    cases: int

    @property
    def name(self) -> str:
        return f"{self.label} (shard {self.index}/{self.count})"


def merge_runs(refs: Sequence[str], storage: Path) -> dict[str, Any]:
    """The one run of the shard runs ``refs`` (files, or run ids in ``storage`` as :func:`load_run` takes them).

    Raises :class:`RunError` for an unreadable or invalid run and :class:`MergeError` for runs
    that are not together every shard of one split; nothing is written either way.
    """
    if not refs:
        raise MergeError("nothing to merge; pass the run of every shard: python -m harness merge RUN... --save NAME")
    shards = [read_shard(ref, storage) for ref in refs]
    for other in shards[1:]:
        _check_same_study(shards[0], other)
    _check_complete(shards)
    doc = _merged(sorted(shards, key=lambda s: s.index))
    Run.from_json(doc, source="the merged run")  # what is written must read back; a bug here is not the user's to fix
    return doc


def read_shard(ref: str, storage: Path) -> ShardRun:
    """Read, validate (:meth:`Run.from_json`) and check one shard run."""
    path = Path(ref)
    if path.is_file() or ref.endswith(".json"):
        label = str(path)  # a missing .json file is reported by the reader below
    else:
        path = resolve_run_id(ref, storage)
        label = str(path.relative_to(storage).with_suffix(""))  # as load_run labels a stored run
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        read_run_file(path, label)  # raises the reader's RunError: no such file, empty, corrupt, each with its fix
        raise RunError(f"{label}: cannot read run file ({exc})") from None  # it changed while being read
    run = Run.from_json(doc, source=label)
    ours = doc.get("backbone_bench")
    record = ours.get("shard") if isinstance(ours, dict) else None
    if record is None:
        raise MergeError(
            f"{label} is not a shard run (it has no backbone_bench.shard); merge only the runs written by "
            "pytest --shard K/N, one per shard (a run of the whole selection needs no merging)"
        )
    problem = _shard_record_problem(record)
    if problem:
        raise MergeError(
            f"{label}: backbone_bench.shard is not a shard record ({problem}); the file was hand-edited or written by "
            "another version of backbone-bench: re-run that shard"
        )
    return ShardRun(path, label, doc, run, record["index"], record["count"], record["selection"], record["plan"], record["cases"])


def _shard_record_problem(record: Any) -> str:
    """What is wrong with a ``backbone_bench.shard`` record, or ``""``."""
    if not isinstance(record, dict):
        return f"{type(record).__name__}, not an object"
    count = _whole(record.get("count"), 1)
    if count is None:
        return f"count {record.get('count')!r} is not a whole number of at least 1"
    index = _whole(record.get("index"), 1)
    if index is None or index > count:
        return f"index {record.get('index')!r} is not 1 to {count}"
    for key in ("selection", "plan"):
        if not isinstance(record.get(key), str):
            return f"{key} {record.get(key)!r} is not a digest"
    if _whole(record.get("cases"), 0) is None:
        return f"cases {record.get('cases')!r} is not a count"
    return ""


def _whole(value: object, least: int) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= least else None


def _check_same_study(a: ShardRun, b: ShardRun) -> None:
    """Refuse ``b`` unless it ran where, what and as ``a`` did."""
    if a.run.baseline_key != b.run.baseline_key:
        raise MergeError(
            f"{a.label} (baseline key {a.run.baseline_key}) and {b.label} (baseline key {b.run.baseline_key}) ran on "
            "different machines; a merged run has one machine: merge only shards run on one kind of machine"
        )
    # Kernels, CPUs and GPU, not calibration: shards run side by side on one node calibrate slower by their
    # neighbours' load (1.9x between the shards of one 2-core machine here), which no class change is.
    a_host, b_host = fingerprint(a.run), fingerprint(b.run)
    differs_by = apart(a_host, b_host, calibration=False) if a_host is not None and b_host is not None else ""
    if differs_by:
        raise MergeError(
            f"{a.label} and {b.label} ran on hosts of different classes ({differs_by}); a merged run's latencies are one "
            "host's: run every shard on one class of node (the same CPU model and core count), or keep the runs apart"
        )
    software = [(fact, a.run.machine_info.get(fact), b.run.machine_info.get(fact)) for fact in _SOFTWARE]
    software.append(("pytest-benchmark", a.doc.get("version"), b.doc.get("version")))
    differs = [f"{fact} {x} vs {y}" for fact, x, y in software if x != y]
    if differs:
        raise MergeError(
            f"{a.label} and {b.label} ran different software ({', '.join(differs)}); a merged run has one software "
            "stack: install the same lock on every shard machine and re-run the shards that differ"
        )
    commit_a, commit_b = a.run.commit_info.get("id"), b.run.commit_info.get("id")
    if commit_a != commit_b:
        raise MergeError(
            f"{a.label} ran commit {commit_a} and {b.label} ran commit {commit_b}; every shard must run the same "
            "checkout: re-run the shards at one commit and merge again"
        )
    if a.count != b.count:
        raise MergeError(
            f"{a.name} and {b.name} belong to different splits; merge the shards of one split "
            f"(all --shard K/{a.count} or all --shard K/{b.count})"
        )
    if a.selection != b.selection:
        raise MergeError(
            f"{a.name} and {b.name} are shards of different selections or settings (selection digest {a.selection} "
            f"vs {b.selection}); every shard must run the same pytest arguments (-k, -m, options) plus --shard K/{a.count}"
        )
    if a.plan != b.plan:
        raise MergeError(
            f"{a.name} and {b.name} split the selection differently (plan digest {a.plan} vs {b.plan}), e.g. because the "
            "stored durations changed between shard sessions; every shard must run against the same baselines/ folder: "
            "re-run the shards from one checkout and merge again"
        )


def _check_complete(shards: Sequence[ShardRun]) -> None:
    """Refuse a shard given twice, a case in two runs, or a missing shard."""
    by_index: dict[int, ShardRun] = {}
    for shard in shards:
        seen = by_index.setdefault(shard.index, shard)
        if seen is not shard:
            same = " (the same file)" if seen.path.resolve() == shard.path.resolve() else ""
            raise MergeError(f"shard {shard.index}/{shard.count} given twice: {seen.label} and {shard.label}{same}; pass each shard's run once")
    owner: dict[str, ShardRun] = {}
    for shard in shards:
        for case_id in shard.run.cases:
            first = owner.setdefault(case_id, shard)
            if first is not shard:
                raise MergeError(
                    f"case {case_id!r} is in both {first.name} and {shard.name}; a split runs every case in one shard, "
                    "so one of these files was edited or copied: re-run those shards and merge again"
                )
    count = shards[0].count
    missing = [k for k in range(1, count + 1) if k not in by_index]
    if missing:
        wanted = ", ".join(f"{k}/{count}" for k in missing)
        given = ", ".join(f"{k}/{count} {by_index[k].label}" for k in sorted(by_index))
        commands = " and ".join(f"`pytest ... --shard {k}/{count}`" for k in missing)
        raise MergeError(
            f"missing shard {wanted} (given: {given}); run {commands} with the other shards' arguments and merge again"
        )


def _merged(shards: Sequence[ShardRun]) -> dict[str, Any]:
    """The merged document: ``shards`` sorted by index and already checked to be one study."""
    first = shards[0]
    benchmarks = [copy.deepcopy(b) for s in shards for b in s.doc["benchmarks"]]
    failed = [copy.deepcopy(f) for s in shards for f in _failed(s.doc)]
    newest = max(shards, key=lambda s: _moment(s.run.datetime))
    return {
        "machine_info": copy.deepcopy(first.doc["machine_info"]),
        "commit_info": copy.deepcopy(dict(first.run.commit_info)),
        # Sorted, not in shard order: the merged run of one selection is the same file whatever the split.
        "benchmarks": sorted(benchmarks, key=_order),
        "datetime": newest.run.datetime,
        "version": first.doc.get("version"),
        "backbone_bench": {
            "schema": first.run.schema,
            "failed": sorted(failed, key=_order),
            "merged": {
                "count": first.count,
                "selection": first.selection,
                "plan": first.plan,
                "shards": [{"index": s.index, "source": s.label, "datetime": s.run.datetime, "cases": s.cases} for s in shards],
            },
        },
    }


def _failed(doc: dict[str, Any]) -> list[dict[str, Any]]:
    failed = doc["backbone_bench"].get("failed")
    return [f for f in failed if isinstance(f, dict)] if isinstance(failed, list) else []


def _order(entry: dict[str, Any]) -> tuple[str, str]:
    return str(entry.get("fullname", "")), str(entry["extra_info"]["case_id"])


def _moment(text: str | None) -> dt.datetime:
    """A run's datetime for ordering: older pytest-benchmark releases wrote naive UTC; a missing or bad one sorts first."""
    try:
        moment = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)
