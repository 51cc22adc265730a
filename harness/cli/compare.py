"""``python -m harness compare BASELINE [CURRENT]``: gate one run against another.

``compare NAME`` right after ``--benchmark-save=NAME`` (CURRENT defaults to the latest run, which is
then NAME's newest save) compares that save with the previous save of NAME, and says so.

Exit codes: 0 nothing regressed, 1 regressions found, 2 runs that are not comparable (other
hardware, or cases whose settings differ, unless ``--force``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import add_gate_options, add_storage


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` verb to ``python -m harness``'s subparsers."""
    cmp: argparse.ArgumentParser = subparsers.add_parser("compare", help="gate CURRENT against BASELINE; exit 1 on regressions, 2 when not comparable")
    cmp.add_argument("baseline", help="run file, or run id in the storage: 0003, 0003_name, name, latest, <machine>/<id>")
    cmp.add_argument("current", nargs="?", default=None, help="run file or id (default: latest run of the baseline's machine)")
    add_storage(cmp)
    add_gate_options(cmp)
    cmp.add_argument("--markdown", action="store_true", help="print a GitHub Markdown table")
    return cmp


def run(args: argparse.Namespace) -> int:
    """Compare and print; the comparison's exit code."""
    from harness.results.compare import compare_runs  # scipy: imported by the verb that runs, not by --help
    from harness.results.runs import load_run, machine_history
    from harness.results.tolerances import parse_tolerances

    base = load_run(args.baseline, args.storage)
    # 'latest' (and other bare ids) for CURRENT resolve in the baseline's machine folder when it has one.
    machine = base.baseline_key if (args.storage / base.baseline_key).is_dir() else None
    cur = load_run(args.current or "latest", args.storage, machine=machine)
    if base.source == cur.source:
        previous = _previous_save(args.storage, base.source) if args.current is None and not Path(args.baseline).is_file() else None
        if previous is None:
            print(f"warning: baseline and current are the same run ({cur.source}); nothing can differ", file=sys.stderr)
        else:
            # `compare smoke` right after `--benchmark-save=smoke`: the newest save of the name is the run to judge,
            # so the baseline is the save of that name before it.
            print(f"note: {cur.source}, the newest run named {args.baseline!r}, is the latest run; comparing it with the previous "
                  f"one of that name, {previous}", file=sys.stderr)
            base = load_run(previous, args.storage)
    history = [] if args.no_history else machine_history(args.storage, base.baseline_key)
    comparison = compare_runs(base, cur, parse_tolerances(args.fail_on), fail_on_missing=args.fail_on_missing, force=args.force, history=history)
    sys.stdout.write(comparison.render(markdown=args.markdown))
    return comparison.exit_code


def _previous_save(storage: Path, label: str) -> str | None:
    """The run id (``<machine>/NNNN_name``) of the save of the same name on the same machine before
    the stored run ``label``; None when it is the first, or not a stored run."""
    from harness.results.runs import RUN_FILE

    path = storage / f"{label}.json"
    m = RUN_FILE.match(path.name)
    if m is None or not path.is_file():
        return None
    earlier = sorted(p.name for p in path.parent.glob(f"*_{m['name']}.json") if (n := RUN_FILE.match(p.name)) and n["name"] == m["name"] and p.name < path.name)
    return f"{path.parent.name}/{earlier[-1].removesuffix('.json')}" if earlier else None
