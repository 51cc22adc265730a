"""The in-session gate: ``pytest ... --gate BASELINE`` compares the run it just made.

The same comparison as ``python -m harness compare``: the baseline is resolved before any case
runs, among the stored runs of the machine the cases will run on (a missing run id is a usage
error up front, not after an hour of benchmarks), and the verdict table is printed in the
terminal summary. The gate's exit code is the comparison's: 0, 1 (regressions) or 2 (not
comparable, or the comparison could not be made).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from harness.results.compare import compare_runs
from harness.results.runs import Run, RunError, load_run, machine_history, resolve_run_id
from harness.results.tolerances import Tolerances, parse_tolerances

# The exit code of a gate that could not compare at all (other hardware, an unreadable run).
NOT_COMPARABLE = 2


class GateOptions(Protocol):
    """The gate's options as the session's settings carry them (``--fail-on`` … ``--no-history``)."""

    @property
    def fail_on(self) -> Tolerances | str | None: ...

    @property
    def fail_on_missing(self) -> bool: ...

    @property
    def force(self) -> bool: ...

    @property
    def no_history(self) -> bool: ...


def load_baseline(ref: str, storage: Path, machine: str | None = None) -> Run:
    """The baseline run ``ref``: a file, a ``<baseline_key>/<id>``, or an id among the runs of
    ``machine`` (this machine's baseline key); ``ValueError`` when unusable.

    A bare id is never looked up on other machines: their figures measure other hardware.
    """
    if machine is not None and not (Path(ref).is_file() or ref.endswith(".json") or "/" in ref):
        try:
            resolve_run_id(ref, storage, machine=machine)
        except RunError as exc:
            elsewhere = ", ".join(_stored_elsewhere(ref, storage))
            raise ValueError(
                f"no run {ref!r} among the runs of this machine ({machine}); {elsewhere} was saved on other hardware, "
                f"whose figures are not comparable: save a baseline on this machine, or name that run and pass --force"
                if elsewhere else str(exc)
            ) from None
    try:
        return load_run(ref, storage, machine=machine)
    except RunError as exc:
        raise ValueError(str(exc)) from None


def _stored_elsewhere(ref: str, storage: Path) -> list[str]:
    """The runs ``ref`` names in each machine folder of ``storage`` (``<baseline_key>/<NNNN_name>``)."""
    found = []
    for folder in sorted(p for p in storage.iterdir() if p.is_dir()) if storage.is_dir() else []:
        try:
            path = resolve_run_id(ref, storage, machine=folder.name)
        except RunError:
            continue
        found.append(str(path.relative_to(storage).with_suffix("")))
    return found


def gate_run(baseline: Run, run: dict[str, Any], options: GateOptions, *, storage: Path | None = None) -> tuple[list[str], int]:
    """Compare the session's ``run`` with ``baseline``: (lines to print, exit code: 0, 1 or 2).

    With ``storage`` (and without ``options.no_history``), the baseline machine's other stored
    runs set the run-to-run noise floor.
    """
    try:
        tolerances = options.fail_on if isinstance(options.fail_on, Tolerances) else parse_tolerances(options.fail_on)
        history = machine_history(storage, baseline.baseline_key) if storage is not None and not options.no_history else []
        current = Run.from_json(run, source="this session")
        comparison = compare_runs(baseline, current, tolerances, fail_on_missing=options.fail_on_missing, force=options.force, history=history)
    except (RunError, ValueError) as exc:
        return [f"backbone-bench gate: error: {exc}"], NOT_COMPARABLE
    return ["", "backbone-bench gate", *comparison.render().splitlines()], comparison.exit_code
