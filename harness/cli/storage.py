"""``python -m harness storage check|adopt``: the storage's health, and a run saved elsewhere moved in.

``storage check [--repair]`` lists what a killed save left in the storage's machine folders
(temporary files: a complete run never put in place, or one cut short) and run files that do not
read as runs; exit 1 when there is any. ``--repair`` puts each complete run in place under the
next free number and removes the cut-short ones, then exits 0 unless something it must not
touch remains (a run file that does not read: nothing in the storage is ever overwritten or
deleted). ``storage adopt FILE [--name NAME]`` saves a run file (the fallback of a failed save)
into the storage under the next free number, atomically, as ``--benchmark-save`` would have.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from harness.cli.common import UsageError, add_storage


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``storage`` verb (``check``, ``adopt``) to ``python -m harness``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "storage", help="check the saved runs (and repair what a killed save left), or adopt a run saved elsewhere",
        description="check: list temporary files left by killed saves and unreadable run files; adopt: save a run file into the storage.")
    actions = parser.add_subparsers(dest="action", required=True, parser_class=type(parser))
    check = actions.add_parser("check", help="list leftovers of killed saves and unreadable runs; exit 1 when there is any")
    check.add_argument("--repair", action="store_true", help="put complete leftovers in place, remove cut-short ones (default: only list)")
    add_storage(check)
    adopt = actions.add_parser("adopt", help="save FILE (e.g. the fallback of a failed save) into the storage under the next free number")
    adopt.add_argument("file", type=Path, metavar="FILE", help="a run file")
    adopt.add_argument("--name", metavar="NAME", help="the run's name (default: FILE's name up to its first '-' or '.')")
    add_storage(adopt)
    return parser


def run(args: argparse.Namespace) -> int:
    """``check``: 0 clean (or repaired), 1 something found; ``adopt``: 0 saved."""
    return _adopt(args) if args.action == "adopt" else _check(args)


def _check(args: argparse.Namespace) -> int:
    from harness.results.runs import RunError, read_run_file, stored_runs
    from harness.results.storage import find_orphans, reason_of, repair_orphan

    storage: Path = args.storage
    if not storage.is_dir():
        raise UsageError(f"--benchmark-storage {storage}: no such folder")
    folders = [storage, *sorted(p for p in storage.iterdir() if p.is_dir())]
    problems = 0
    for folder in folders:
        for orphan in find_orphans(folder):
            if not args.repair or orphan.state == "foreign":
                print(f"{orphan.path}: {_ORPHAN_TEXT[orphan.state]}{': ' + orphan.detail if orphan.detail else ''}")
                problems += 1
                continue
            try:
                print(f"{folder}: {repair_orphan(orphan)}")
            except OSError as exc:
                print(f"{orphan.path}: could not repair ({reason_of(exc)})")
                problems += 1
    runs = stored_runs(storage)
    for path in runs:
        try:
            read_run_file(path)
        except RunError as exc:
            print(f"{exc}; not touched (nothing in the storage is overwritten or deleted): restore it from git, or move it out")
            problems += 1
    hint = "" if args.repair else f"; python -m harness storage check --repair --benchmark-storage {storage} fixes the leftovers"
    print(f"storage {storage}: {len(runs)} run(s), {problems} problem(s){hint if problems else ''}")
    return 1 if problems else 0


_ORPHAN_TEXT = {
    "complete": "a complete run a killed save left, never put in place (--repair saves it under the next free number)",
    "incomplete": "a run a killed save cut short (--repair removes it)",
    "duplicate": "a killed save's temporary copy of a run already in place (--repair removes it)",
    "foreign": "a temporary file that holds JSON but no run; move or delete it by hand",
}


def _adopt(args: argparse.Namespace) -> int:
    from harness.results.runs import read_run_file
    from harness.results.storage import check_run_name, link_numbered, recover_orphans, write_new

    source: Path = args.file
    run = read_run_file(source)  # a RunError (exit 2) names what is wrong with the file
    name = check_run_name(args.name or source.name.split("-", 1)[0].split(".", 1)[0])
    text = source.read_text(encoding="utf-8")  # byte for byte: the run as its session wrote it
    folder = args.storage / run.baseline_key
    for line in recover_orphans(folder):
        print(f"{folder}: {line}")
    path = link_numbered(folder, name, lambda target: write_new(target, text))
    print(f"saved {source} as {path}; {source} can be deleted")
    return 0
