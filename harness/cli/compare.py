"""``python -m harness compare BASELINE [CURRENT]``: gate one run against another.

Exit codes: 0 nothing regressed, 1 regressions found, 2 runs that are not comparable (other
hardware, or cases whose settings differ, unless ``--force``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.cli.common import add_gate_options, add_storage


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` verb to ``python -m harness``'s subparsers."""
    cmp: argparse.ArgumentParser = subparsers.add_parser("compare", help="gate CURRENT against BASELINE; exit 1 on regressions, 2 when not comparable")
    cmp.add_argument("baseline", help="run file, or run id in the storage: 0003, 0003_name, name, latest, <machine>/<id>")
    cmp.add_argument("current", nargs="?", default="latest", help="run file or id (default: latest run of the baseline's machine)")
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
    cur = load_run(args.current, args.storage, machine=machine)
    if base.source == cur.source:
        print(f"warning: baseline and current are the same run ({cur.source}); nothing can differ", file=sys.stderr)
    history = [] if args.no_history else machine_history(args.storage, base.baseline_key)
    comparison = compare_runs(base, cur, parse_tolerances(args.fail_on), fail_on_missing=args.fail_on_missing, force=args.force, history=history)
    sys.stdout.write(comparison.render(markdown=args.markdown))
    return comparison.exit_code
