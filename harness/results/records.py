"""Assembling a run: case records into pytest-benchmark's JSON layout.

Every case — timed in this process by pytest-benchmark, or in an xdist worker — ends as a
:class:`CaseResult`: its flat record (``extra_info``) and its raw timed rounds. :func:`build_run`
turns a session's results into one JSON document that ``pytest-benchmark compare``/``list``
read unchanged (``stats`` computed by pytest-benchmark's own :class:`Stats`) and that
``python -m harness compare`` gates on. Cases that failed have no timing; they are listed under
the top-level ``backbone_bench.failed`` key, which pytest-benchmark ignores. Every record carries
its ``settings`` and ``settings_digest`` (:func:`harness.kinds.base_record`); the reader
(:mod:`harness.results.schema`) checks them against :data:`harness.contract.SCHEMA_VERSION`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pytest_benchmark.stats import Stats

from harness.contract import SCHEMA_VERSION


@dataclass(frozen=True)
class CaseResult:
    """One case's outcome as it travels from the test (or an xdist worker) to the writer."""

    name: str
    fullname: str
    param: str
    record: dict[str, Any]
    samples_s: Sequence[float] = ()

    @property
    def ok(self) -> bool:
        return self.record.get("status") == "ok" and bool(self.samples_s)

    def to_wire(self) -> dict[str, Any]:
        """A plain dict that survives xdist's serialisation."""
        return {"name": self.name, "fullname": self.fullname, "param": self.param, "record": self.record, "samples_s": list(self.samples_s)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> CaseResult:
        return cls(data["name"], data["fullname"], data["param"], data["record"], tuple(data["samples_s"]))


def stats_of(samples_s: Sequence[float]) -> dict[str, Any]:
    """pytest-benchmark's statistics of raw per-round seconds (one iteration per round)."""
    # pytest-benchmark ships py.typed but leaves Stats unannotated.
    stats = Stats()  # type: ignore[no-untyped-call]
    for value in samples_s:
        stats.update(value)  # type: ignore[no-untyped-call]
    return {**stats.as_dict(), "iterations": 1}  # type: ignore[no-untyped-call]


def benchmark_entry(result: CaseResult, options: dict[str, Any]) -> dict[str, Any]:
    """One element of the run's ``benchmarks`` list."""
    return {
        "group": result.record.get("kind"),
        "name": result.name,
        "fullname": result.fullname,
        "params": {"case": result.param},
        "param": result.param,
        "extra_info": result.record,
        "options": options,
        "stats": stats_of(result.samples_s),
    }


def build_run(
    results: Iterable[CaseResult],
    *,
    machine_info: dict[str, Any],
    commit_info: dict[str, Any],
    options: dict[str, Any],
    shard: dict[str, Any] | None = None,
    merged: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's JSON document, cases in the order given.

    ``shard`` (a ``pytest --shard K/N`` session: index, count, selection and plan digests) and
    ``merged`` (a run merged from shards by ``python -m harness merge``) are recorded under
    ``backbone_bench`` when given.
    """
    results = list(results)
    ours: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "failed": [{"name": r.name, "fullname": r.fullname, "extra_info": r.record} for r in results if not r.ok],
    }
    if shard is not None:
        ours["shard"] = shard
    if merged is not None:
        ours["merged"] = merged
    return {
        "machine_info": machine_info,
        "commit_info": commit_info,
        "benchmarks": [benchmark_entry(r, options) for r in results if r.ok],
        "datetime": dt.datetime.now(dt.timezone.utc).isoformat(),
        "version": metadata.version("pytest-benchmark"),
        "backbone_bench": ours,
    }
