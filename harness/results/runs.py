"""Load and validate backbone-bench run files (pytest-benchmark JSON) and resolve run ids.

A run id names a file saved by ``--benchmark-save`` under ``<storage>/<baseline_key>/NNNN_NAME.json``:
``0003``, ``0003_mybranch``, ``mybranch`` (the newest save of that name), ``latest`` (the highest
number), each optionally prefixed by the machine directory (``<baseline_key>/0003``). Anything ending
in ``.json`` or naming an existing file is a path. Schema 1 and 2 runs are read alike
(:mod:`harness.results.schema`): every :class:`Case` has its settings and their digest.
"""

from __future__ import annotations

import json
import numbers
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from harness.contract import settings_digest
from harness.files import special_kind
from harness.results.schema import RecordError, case_settings, check_record, check_schema

RUN_FILE = re.compile(r"^(?P<num>\d{4})_(?P<name>.+)\.json$")
_LISTED = 20  # how many candidates an error message lists before summarising: keeps it one screen


class RunError(Exception):
    """A run reference or run file that cannot be used; the message says what to do instead."""


@dataclass(frozen=True)
class Case:
    """One benchmark of a run, keyed by its ``extra_info['case_id']``.

    ``settings`` are the resolved values of the kind's contract settings (read from a schema 2
    record, or what version 1 ran with for a schema 1 record) and ``settings_digest`` their digest:
    two cases with the same id are comparable only when their digests agree.
    """

    case_id: str
    kind: str
    name: str
    status: str
    extra: Mapping[str, Any]
    stats: Mapping[str, Any]
    settings: Mapping[str, Any]
    settings_digest: str

    def value(self, metric: str) -> float | None:
        """The metric from ``extra_info`` as a float, or ``None`` when absent or null."""
        raw = self.extra.get(metric)
        return float(raw) if isinstance(raw, numbers.Real) and not isinstance(raw, bool) else None

    @property
    def code_digest(self) -> str | None:
        """A team's own backbone's code digest (``backbone_code_digest``); ``None`` for timm and registry names."""
        raw = self.extra.get("backbone_code_digest")
        return str(raw) if raw is not None else None

    def samples(self, key: str) -> list[float] | None:
        """A list-valued sample key (``latency_samples_ms``, ``top1_per_seed``) or ``None`` if absent/empty."""
        raw = self.extra.get(key)
        return [float(v) for v in raw] if isinstance(raw, list) and raw else None


@dataclass(frozen=True)
class Run:
    """A validated run: machine and commit info plus its cases in file order."""

    source: str
    machine_info: Mapping[str, Any]
    commit_info: Mapping[str, Any]
    datetime: str | None
    cases: Mapping[str, Case] = field(repr=False)
    schema: int = 2
    # ``backbone_bench.shard`` of a ``pytest --shard K/N`` session (one part of a study) and
    # ``backbone_bench.merged`` of a run that ``python -m harness merge`` made of such parts.
    shard: Mapping[str, Any] | None = None
    merged: Mapping[str, Any] | None = None

    @property
    def baseline_key(self) -> str:
        return str(self.machine_info.get("baseline_key"))

    @classmethod
    def from_json(cls, data: Any, source: str = "current session") -> Run:
        """Validate a decoded pytest-benchmark JSON document (e.g. the plugin's in-memory dict)."""
        if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
            raise RunError(
                f"{source}: not a pytest-benchmark run (no 'benchmarks' list); pass a file written by "
                "pytest --benchmark-json=FILE or --benchmark-save=NAME"
            )
        raw_ours = data.get("backbone_bench")
        ours: dict[str, Any] = raw_ours if isinstance(raw_ours, dict) else {}
        try:
            schema = check_schema(ours.get("schema", 1))  # version 1 wrote no schema at first
        except RecordError as exc:
            raise RunError(f"{source}: {exc}") from None
        # Failed cases have no timing, so the plugin lists them under backbone_bench.failed, not benchmarks.
        raw_failed = ours.get("failed")
        failed: list[Any] = raw_failed if isinstance(raw_failed, list) else []
        benches = [*data["benchmarks"], *({**f, "failed": True} for f in failed if isinstance(f, dict))]
        raw_shard = ours.get("shard")
        shard = MappingProxyType(raw_shard) if isinstance(raw_shard, dict) else None
        raw_merged = ours.get("merged")
        if not benches and shard is None:  # a shard whose cases all skipped is still one part of a study
            raise RunError(f"{source}: the run contains no benchmarks; re-run the suite without deselecting every case")
        foreign = [b.get("name", "?") if isinstance(b, dict) else repr(b)[:40] for b in benches if not _has_contract(b)]
        if foreign:
            raise RunError(
                f"{source}: {len(foreign)} of {len(benches)} benchmarks lack extra_info 'case_id'/'kind' "
                f"(e.g. {foreign[0]!r}): this pytest-benchmark run was not produced by backbone-bench's "
                "benchmarks; compare only runs of this suite"
            )
        machine = data.get("machine_info")
        if not isinstance(machine, dict) or not machine.get("baseline_key"):
            raise RunError(
                f"{source}: machine_info has no 'baseline_key'; the run was not written with backbone-bench's "
                "pytest plugin loaded (run pytest from the repository root)"
            )
        # The session's options (bench_time_s) sit on every timed entry; failed entries have none.
        options: dict[str, Any] = next((b["options"] for b in data["benchmarks"] if isinstance(b, dict) and isinstance(b.get("options"), dict)), {})
        cases: dict[str, Case] = {}
        for bench in benches:
            own = bench.get("options")
            case = _case(bench, source, schema, {**options, **(own if isinstance(own, dict) else {})})
            if case.case_id in cases:
                raise RunError(f"{source}: case_id {case.case_id!r} appears twice; case ids must be unique in a run")
            cases[case.case_id] = case
        commit = data.get("commit_info")
        return cls(
            source=source,
            machine_info=MappingProxyType(machine),
            commit_info=MappingProxyType(commit if isinstance(commit, dict) else {}),
            datetime=data.get("datetime"),
            cases=MappingProxyType(cases),
            schema=schema,
            shard=shard,
            merged=MappingProxyType(raw_merged) if isinstance(raw_merged, dict) else None,
        )


def _has_contract(bench: Any) -> bool:
    extra = bench.get("extra_info") if isinstance(bench, dict) else None
    return isinstance(extra, dict) and isinstance(extra.get("case_id"), str) and "kind" in extra


def _case(bench: dict[str, Any], source: str, schema: int, options: dict[str, Any]) -> Case:
    extra = bench["extra_info"]
    case_id = extra["case_id"]
    try:
        kind, status = check_record(extra, failed=bool(bench.get("failed")))
        settings = case_settings(extra, kind, schema, options)
    except RecordError as exc:
        raise RunError(f"{source}: case {case_id!r}: {exc}") from None
    stats = bench.get("stats")
    return Case(
        case_id=case_id,
        kind=kind,
        name=str(bench.get("name", case_id)),
        status=status,
        extra=MappingProxyType(extra),
        stats=MappingProxyType(stats if isinstance(stats, dict) else {}),
        settings=MappingProxyType(settings),
        settings_digest=settings_digest(settings),
    )


def read_run_file(path: Path, label: str | None = None) -> Run:
    """Read and validate one run file; every failure is a :class:`RunError` naming the file."""
    label = label or str(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise RunError(f"{label}: no such file") from None
    except OSError as exc:
        raise RunError(f"{label}: cannot read run file ({exc})") from None
    if not stat.S_ISREG(mode):  # never opened: a FIFO or a device would block the read, or never end
        raise RunError(f"{label}: {special_kind(path)}, not a run file; pass a file written by pytest --benchmark-json=FILE or --benchmark-save=NAME")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{label}: cannot read run file ({exc})") from None
    if not text.strip():
        raise RunError(f"{label}: the file is empty; the benchmark session that wrote it probably crashed, re-run it")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RunError(
            f"{label}: corrupt JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); "
            "the file was truncated or hand-edited, restore it from git or re-run the suite"
        ) from None
    return Run.from_json(data, source=label)


def stored_runs(storage: Path) -> list[Path]:
    """All ``NNNN_NAME.json`` files under ``storage`` and its machine directories, oldest id first."""
    if not storage.is_dir():
        raise RunError(f"storage directory {storage} does not exist; pass --storage DIR or a run file path")
    found = [p for p in [*storage.glob("*/*.json"), *storage.glob("*.json")] if RUN_FILE.match(p.name)]
    return sorted(found, key=lambda p: (p.name, str(p.parent)))


def _label(path: Path, storage: Path) -> str:
    return str(path.relative_to(storage).with_suffix(""))


def resolve_run_id(ref: str, storage: Path, *, machine: str | None = None) -> Path:
    """The storage file a run id names; ``machine`` scopes ids without a ``<machine>/`` prefix."""
    if "/" in ref:
        machine, ref = ref.rsplit("/", 1)
    files = stored_runs(storage)
    pool = [p for p in files if machine is None or p.parent.name == machine]
    if not pool:
        where = f"{storage}/{machine}" if machine else str(storage)
        raise RunError(f"no saved runs in {where}; save one with pytest --benchmark-save=NAME or pass a file path")
    if ref == "latest":
        top = pool[-1].name[:4]
        matches = [p for p in pool if p.name[:4] == top] if machine is None else [pool[-1]]
    else:
        matches = [p for p in pool if _matches(p.name, ref)]
        if len({p.parent for p in matches}) == 1 and not ref.isdigit():
            matches = matches[-1:]  # a name saved repeatedly on one machine means its newest save
    if len(matches) == 1:
        return matches[0]
    available = [_label(p, storage) for p in pool]
    shown = ", ".join(available[-_LISTED:]) + (f" (+{len(available) - _LISTED} older)" if len(available) > _LISTED else "")
    if not matches:
        raise RunError(f"no run matches {ref!r} in {storage}; available: {shown}")
    names = ", ".join(_label(p, storage) for p in matches)
    raise RunError(f"run id {ref!r} is ambiguous in {storage}: {names}; prefix it with the machine directory or pass a file path")


def _matches(filename: str, ref: str) -> bool:
    m = RUN_FILE.match(filename)
    assert m is not None  # stored_runs only returns matching names
    return ref in (m["num"], m["name"], f"{m['num']}_{m['name']}", filename)


def load_run(ref: str, storage: Path, *, machine: str | None = None) -> Run:
    """Load a run from a file path or a run id in ``storage`` (``0003``, ``0003_x``, ``x``, ``latest``)."""
    path = Path(ref)
    if path.exists() and not path.is_dir():
        return read_run_file(path)  # a file, or something else there: refused by its type
    if ref.endswith(".json") and not path.is_dir():
        raise RunError(f"{ref}: no such file; pass an existing run file or a run id such as 0001 or latest")
    try:
        found = resolve_run_id(ref, storage, machine=machine)
    except RunError:
        if path.is_dir():
            raise RunError(f"{ref}: a folder, not a run file; pass a run file in it, or a run id such as latest with --benchmark-storage {ref}") from None
        raise
    return read_run_file(found, label=_label(found, storage))


def machine_history(storage: Path, baseline_key: str, *, exclude: tuple[str, ...] = ()) -> list[Run]:
    """Every readable run stored for ``baseline_key`` except the sources in ``exclude``.

    The gate reads the machine's run-to-run spread from them; an unreadable file is skipped
    (it is reported when it is itself compared), never fatal here. Shard runs that a stored
    merged run was made of are left out: it holds the same measurements, which must not count twice.
    """
    folder = storage / baseline_key
    runs: list[Run] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        label = _label(path, storage)
        if not RUN_FILE.match(path.name) or label in exclude or str(path) in exclude:
            continue
        try:
            runs.append(read_run_file(path, label))
        except RunError:
            continue
    return without_merged_shards(runs)


def without_merged_shards(runs: list[Run]) -> list[Run]:
    """``runs`` less the shard runs that one of them, a merged run, was made of (the same
    measurements must not count twice); order kept."""
    merged = {(str(r.merged.get("selection")), str(r.merged.get("plan"))) for r in runs if r.merged is not None}
    return [r for r in runs if r.shard is None or (str(r.shard.get("selection")), str(r.shard.get("plan"))) not in merged]
