"""Command line: ``python -m harness compare BASELINE [CURRENT]`` and ``python -m harness report RUN... --out DIR``.

Exit codes: 0 nothing regressed (or report written), 1 regressions found, 2 usage error (bad
arguments, unreadable runs, bad tolerance spec: one ``error: ...`` line on stderr) or runs that
are not comparable (other hardware, or cases whose settings differ, unless ``--force``).
``python -m harness merge RUN... (--save NAME | --json FILE)`` joins the runs of ``pytest --shard
K/N`` sessions into one run (:mod:`harness.results.merge`), refusing shards of different machines,
commits, selections or splits with exit 2 before writing anything. ``merge --save`` is the only
command that writes into the storage directory: a new numbered file, never over an old one.
``python -m harness launch --executor local|slurm --shards N [...] -- PYTEST_ARGS`` runs those
shard sessions through submitit (:mod:`harness.launch`) and merges them the same way; its
``--save`` writes the merged run only, after every shard has finished (a failed shard: exit 2,
named with its logs and the ``--rerun K`` command, nothing merged or saved).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from harness import launch, weights
from harness.config.options import GATE_OPTIONS
from harness.config.parsers import argtype
from harness.results.compare import compare_runs
from harness.results.report import add_report_arguments, report_options, write_report
from harness.results.runs import RunError, load_run, machine_history

USAGE_ERROR = 2


class _UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit so every usage error is one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m harness", description="Compare, report and merge backbone-bench runs.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    cmp = sub.add_parser("compare", help="gate CURRENT against BASELINE; exit 1 on regressions, 2 when not comparable")
    cmp.add_argument("baseline", help="run file, or run id in the storage: 0003, 0003_name, name, latest, <machine>/<id>")
    cmp.add_argument("current", nargs="?", default="latest", help="run file or id (default: latest run of the baseline's machine)")
    _storage(cmp)
    for option in GATE_OPTIONS:  # the same options, names and parsers as pytest's --gate
        default = option.parse(option.default) if option.default is not None else None
        if option.flag:
            cmp.add_argument(f"--{option.name}", dest=option.field, action="store_true", help=option.help_text())
        else:
            cmp.add_argument(f"--{option.name}", dest=option.field, metavar=option.metavar, type=argtype(option.parse), default=default, help=option.help_text())
    cmp.add_argument("--markdown", action="store_true", help="print a GitHub Markdown table")
    sub.add_parser("contract", help="print the run contract (kinds, metrics, options) as the README's Markdown tables")
    rep = sub.add_parser("report", help="write report.md, report.csv and plots for one or more runs")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="run files or ids in the storage")
    _storage(rep)
    rep.add_argument("--out", type=Path, required=True, help="folder to write into (created)")
    add_report_arguments(rep)
    launch.add_parser(sub)
    weights.add_parser(sub)
    mrg = sub.add_parser("merge", help="join the runs of pytest --shard K/N sessions into one run")
    mrg.add_argument("runs", nargs="+", metavar="RUN", help="every shard's run: files or ids in the storage")
    _storage(mrg)
    out = mrg.add_mutually_exclusive_group(required=True)
    out.add_argument("--save", metavar="NAME", help="save as <storage>/<baseline_key>/NNNN_NAME.json, as --benchmark-save does")
    out.add_argument("--json", metavar="FILE", type=Path, help="write to FILE (a new file: an existing one is refused)")
    return parser


def _storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmark-storage", "--storage", dest="storage", type=_storage_path, default=Path("baselines"),
                        help="saved runs folder, as pytest's --benchmark-storage (file:// optional; default: baselines)")


def _storage_path(text: str) -> Path:
    return Path(text.removeprefix("file://"))


def _compare(args: argparse.Namespace) -> int:
    base = load_run(args.baseline, args.storage)
    # 'latest' (and other bare ids) for CURRENT resolve in the baseline's machine folder when it has one.
    machine = base.baseline_key if (args.storage / base.baseline_key).is_dir() else None
    cur = load_run(args.current, args.storage, machine=machine)
    if base.source == cur.source:
        print(f"warning: baseline and current are the same run ({cur.source}); nothing can differ", file=sys.stderr)
    history = [] if args.no_history else machine_history(args.storage, base.baseline_key)
    comparison = compare_runs(base, cur, args.fail_on, fail_on_missing=args.fail_on_missing, force=args.force, history=history)
    sys.stdout.write(comparison.render(markdown=args.markdown))
    return comparison.exit_code


def _report(args: argparse.Namespace) -> int:
    runs = [load_run(ref, args.storage) for ref in args.runs]
    if args.out.resolve() == args.storage.resolve() or args.storage.resolve() in args.out.resolve().parents:
        raise _UsageError(f"--out {args.out} is inside the storage {args.storage}; write reports elsewhere")
    result = write_report(runs, args.out, report_options(args))
    for path in result.files:
        print(f"wrote {path}")
    for reason in result.skipped:
        print(reason)
    return 0


def _merge(args: argparse.Namespace) -> int:
    from harness.results.merge import merge_runs
    from harness.results.storage import check_run_name, dumps, save_run, write_new

    # Refuse a bad destination before reading the shards: the merge itself may read many runs.
    if args.save is not None:
        check_run_name(args.save)
    elif args.json.exists():
        raise _UsageError(f"--json {args.json} exists; merge never overwrites a file: pass a new path")
    doc = merge_runs(args.runs, args.storage)
    try:
        text = dumps(doc)  # before any file exists: a saved run holds no NaN or Infinity
    except ValueError as exc:
        raise _UsageError(f"the merged run cannot be written as JSON ({exc}); a shard run holds NaN or Infinity: re-run that shard") from None
    if args.save is not None:
        path = save_run(args.storage, doc["machine_info"]["baseline_key"], args.save, doc)
    else:
        try:
            write_new(args.json, text)
        except FileExistsError:
            raise _UsageError(f"--json {args.json} exists; merge never overwrites a file: pass a new path") from None
        path = args.json
    cases = len(doc["benchmarks"]) + len(doc["backbone_bench"]["failed"])
    print(f"merged {doc['backbone_bench']['merged']['count']} shard(s), {cases} case(s) into {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 1 regressions, 2 usage error)."""
    try:
        args = _parser().parse_args(argv)
        if args.command == "contract":
            from harness.config.options import markdown_table
            from harness.contract import markdown_tables

            sys.stdout.write(markdown_tables() + "\n" + markdown_table())
            return 0
        if args.command == "launch":
            return launch.run(args)
        if args.command == "weights":
            return weights.run(args)
        if args.command == "merge":
            return _merge(args)
        return _compare(args) if args.command == "compare" else _report(args)
    except (_UsageError, RunError, OSError, weights.UnknownWeights, weights.UnknownBackbone) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR


if __name__ == "__main__":
    sys.exit(main())
