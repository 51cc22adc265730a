"""The end of every run, written once: save it, write its JSON, gate it.

A pytest session (:mod:`harness.plugin`), ``python -m harness launch`` (the merged shards) and
``python -m harness merge`` all finish a run the same way, through :func:`publish_run`: the run's
text is made first (a run holding NaN or Infinity is refused before any file exists), then it is
saved under the next free number of ``<storage>/<baseline_key>/`` (:func:`~harness.results.storage.save_run`:
atomic, never over an old run), written to ``--benchmark-json``/``--json``, and compared with the
baseline (:func:`~harness.results.gate.gate_run`). What happened comes back as lines to print and
an exit code, so each caller only prints them in its own place.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.files import write_atomic
from harness.results.gate import GateOptions, gate_run
from harness.results.runs import Run
from harness.results.storage import SaveFailed, StorageError, dumps, reason_of, save_failure_lines, save_run, write_fallback, write_new


class UnwritableRun(ValueError):
    """The run holds a value JSON cannot (NaN or Infinity); nothing was written."""


def keep_unwritable(run: dict[str, Any], name: str) -> Path | None:
    """Write a run that holds NaN or Infinity (which no reader accepts) as it is, NaN spelt out, to a fallback
    file for inspection; its path, or ``None`` when no fallback folder takes it. Nothing measured is thrown away."""
    key = str(run.get("machine_info", {}).get("baseline_key", "unknown"))
    text = json.dumps(run, indent=4, allow_nan=True) + "\n"
    try:
        return write_fallback(text, key, f"{name}.nonfinite", "the storage", "", lambda path: "").fallback
    except StorageError:
        return None


def nonfinite_where(run: dict[str, Any]) -> str:
    """``case 'X' recorded latency_p50_ms = nan``: the first NaN or infinity in ``run``'s cases, named for the reader."""
    for bench in [*run.get("benchmarks", []), *run.get("backbone_bench", {}).get("failed", [])]:
        extra = bench.get("extra_info", bench) if isinstance(bench, dict) else {}
        for key, value in _floats(extra):
            if not math.isfinite(value):
                return f"case {extra.get('case_id', bench.get('name', '?'))!r} recorded {key} = {value}"
    for key, value in _floats(run):
        if not math.isfinite(value):
            return f"{key} = {value}"
    return "a case recorded NaN or Infinity"


def _floats(value: Any, key: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, float):
        yield key, value
    elif isinstance(value, dict):
        for name, item in value.items():
            yield from _floats(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for position, item in enumerate(value):
            yield from _floats(item, f"{key}[{position}]")


@dataclass(frozen=True)
class Published:
    """Where a run went and what its gate said.

    ``lines`` are what the saving has to tell: temporary files of killed saves it recovered, and,
    when a destination refused the run (``refused``), where the run was written instead and the
    command that moves it into place. ``gate_lines`` and ``code`` are the gate's (0 without one).
    """

    saved: Path | None = None
    written: Path | None = None
    lines: list[str] = field(default_factory=list)
    refused: bool = False
    gate_lines: list[str] = field(default_factory=list)
    code: int = 0


def publish_run(run: dict[str, Any], *, storage: Path, save: str | None = None, json_path: Path | None = None,
                new_json: bool = False, baseline: Run | None = None, gate: GateOptions | None = None) -> Published:
    """Save ``run`` as ``save`` in ``storage``, write it to ``json_path`` and gate it against ``baseline``.

    Nothing is lost: a destination that refuses the run (read-only, full, gone) leaves it in a
    fallback file, named in ``lines`` with the command that moves it (``refused``); the gate still
    judges it. ``new_json`` refuses an existing ``json_path`` (``FileExistsError``, ``merge``
    never overwrites) instead of replacing it atomically (``--benchmark-json`` replaces, as
    pytest-benchmark does). ``gate`` holds the tolerances and switches; it is required with a
    ``baseline``. Raises :class:`UnwritableRun` before writing anything when the run cannot be JSON.
    """
    try:
        text = dumps(run)
    except ValueError as exc:
        raise UnwritableRun(f"the run cannot be written as JSON ({exc}); {nonfinite_where(run)}") from None
    key = str(run["machine_info"]["baseline_key"])
    saved = written = None
    lines: list[str] = []
    refused = False
    try:
        if save:
            try:
                saved = save_run(storage, key, save, run, on_recover=lambda line: lines.append(f"backbone-bench: {line}"))
            except SaveFailed as exc:
                lines += save_failure_lines(exc)
                refused = True
        if json_path is not None:
            if new_json:
                write_new(json_path, text)
                written = json_path
            else:
                try:
                    write_atomic(json_path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
                    written = json_path
                except OSError as exc:
                    target = json_path
                    move = write_fallback(text, key, target.stem, str(target), reason_of(exc), lambda f: shlex.join(["mv", str(f), str(target)]))
                    lines += save_failure_lines(move)
                    refused = True
    except StorageError as exc:  # not even a fallback could take it
        lines.append(f"backbone-bench: {exc}")
        refused = True
    if baseline is None:
        return Published(saved, written, lines, refused)
    if gate is None:
        raise ValueError("publish_run: a baseline needs the gate's options")
    gate_lines, code = gate_run(baseline, run, gate, storage=storage)
    return Published(saved, written, lines, refused, gate_lines, code)
