"""``python -m harness merge RUN... (--save NAME | --json FILE)``: the runs of ``pytest --shard K/N`` as one run.

The merge itself is :mod:`harness.results.merge`: shards of different machines, commits,
selections or splits are refused with exit 2 before anything is written. ``merge --save`` is
the only command that writes into the storage directory: a new numbered file, never over an old one;
a storage that refuses it (read-only, full) leaves the run in a fallback file, printed with the
command that moves it into place (``python -m harness storage adopt``), exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.cli.common import UsageError, add_storage


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``merge`` verb to ``python -m harness``'s subparsers."""
    mrg: argparse.ArgumentParser = subparsers.add_parser("merge", help="join the runs of pytest --shard K/N sessions into one run")
    mrg.add_argument("runs", nargs="+", metavar="RUN", help="every shard's run: files or ids in the storage")
    add_storage(mrg)
    out = mrg.add_mutually_exclusive_group(required=True)
    out.add_argument("--save", metavar="NAME", help="save as <storage>/<baseline_key>/NNNN_NAME.json, as --benchmark-save does")
    out.add_argument("--json", metavar="FILE", type=Path, help="write to FILE (a new file: an existing one is refused)")
    return mrg


def run(args: argparse.Namespace) -> int:
    """Merge, then save or write; 0, or 1 when the storage refused the run (then in a fallback file)."""
    from harness.results.merge import merge_runs  # imported by the verb that runs, not by --help
    from harness.results.storage import SaveFailed, check_run_name, dumps, save_failure_lines, save_run, write_new

    # Refuse a bad destination before reading the shards: the merge itself may read many runs.
    if args.save is not None:
        check_run_name(args.save)
    elif args.json.exists():
        raise UsageError(f"--json {args.json} exists; merge never overwrites a file: pass a new path")
    doc = merge_runs(args.runs, args.storage)
    try:
        text = dumps(doc)  # before any file exists: a saved run holds no NaN or Infinity
    except ValueError as exc:
        raise UsageError(f"the merged run cannot be written as JSON ({exc}); a shard run holds NaN or Infinity: re-run that shard") from None
    if args.save is not None:
        try:
            path = save_run(args.storage, doc["machine_info"]["baseline_key"], args.save, doc, on_recover=print)
        except SaveFailed as exc:  # the merged run is in the fallback file, named with the command that moves it
            print("\n".join(save_failure_lines(exc)), file=sys.stderr)
            return 1
    else:
        try:
            write_new(args.json, text)
        except FileExistsError:
            raise UsageError(f"--json {args.json} exists; merge never overwrites a file: pass a new path") from None
        path = args.json
    cases = len(doc["benchmarks"]) + len(doc["backbone_bench"]["failed"])
    print(f"merged {doc['backbone_bench']['merged']['count']} shard(s), {cases} case(s) into {path}")
    return 0
