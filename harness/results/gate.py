"""The in-session gate: ``pytest ... --gate BASELINE`` compares the run it just made.

The same comparison as ``python -m harness compare``: the baseline is resolved before any case
runs (a missing run id is a usage error up front, not after an hour of benchmarks), and the
verdict table is printed in the terminal summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.results.compare import compare_runs, parse_tolerances
from harness.results.runs import Run, RunError, load_run, machine_history


def load_baseline(ref: str, storage: Path, machine: str | None = None) -> Run:
    """The baseline run ``ref`` (a run id in ``storage`` or a file); ``ValueError`` when unusable.

    A bare id is looked up first among this machine's runs (``machine`` is its baseline key).
    """
    if machine is not None and "/" not in ref:
        try:
            return load_run(ref, storage, machine=machine)
        except RunError:
            pass  # not among this machine's runs: look in every machine folder
    try:
        return load_run(ref, storage)
    except RunError as exc:
        raise ValueError(str(exc)) from None


def gate_run(
    baseline: Run, run: dict[str, Any], spec: str | None, *, fail_on_missing: bool, force: bool, storage: Path | None = None
) -> tuple[list[str], bool]:
    """Compare the session's ``run`` with ``baseline``: (lines to print, whether the gate failed).

    With ``storage``, the baseline machine's other stored runs set the run-to-run noise floor.
    """
    try:
        tolerances = parse_tolerances(spec)
        history = machine_history(storage, baseline.baseline_key) if storage is not None else []
        current = Run.from_json(run, source="this session")
        comparison = compare_runs(baseline, current, tolerances, fail_on_missing=fail_on_missing, force=force, history=history)
    except (RunError, ValueError) as exc:
        return [f"backbone-bench gate: error: {exc}"], True
    lines = ["", "backbone-bench gate", *comparison.render().splitlines()]
    return lines, bool(comparison.exit_code)
