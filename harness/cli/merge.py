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
    from harness.results.publish import UnwritableRun, publish_run
    from harness.results.storage import check_run_name

    # Refuse a bad destination before reading the shards: the merge itself may read many runs.
    if args.save is not None:
        check_run_name(args.save)
    elif args.json.exists():
        raise UsageError(f"--json {args.json} exists; merge never overwrites a file: pass a new path")
    doc = merge_runs(args.runs, args.storage)
    try:
        published = publish_run(doc, storage=args.storage, save=args.save, json_path=args.json, new_json=True)
    except UnwritableRun as exc:
        raise UsageError(f"{exc}: re-run the shard that recorded it") from None
    except FileExistsError:
        raise UsageError(f"--json {args.json} exists; merge never overwrites a file: pass a new path") from None
    for line in published.lines:  # killed saves recovered, or where a refused run went and how to move it
        print(line, file=sys.stderr if published.refused else sys.stdout)
    if published.refused:
        return 1
    cases = len(doc["benchmarks"]) + len(doc["backbone_bench"]["failed"])
    print(f"merged {doc['backbone_bench']['merged']['count']} shard(s), {cases} case(s) into {published.saved or published.written}")
    return 0
