"""The command line put together: every verb's subparser, and the one place that turns errors into exit 2.

Exit codes: 0 nothing regressed (or the verb's work done), 1 regressions found (or a file
missing), 2 a usage error (bad arguments, unreadable runs, bad tolerance spec: one
``error: ...`` line on stderr) or runs that are not comparable. The verbs and what each does:
``compare`` (:mod:`harness.cli.compare`), ``contract``, ``report``, ``launch``, ``weights``,
``merge``. argparse lives in :mod:`harness.cli` and :mod:`harness.plugin` only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from harness.backbones.registry import UnknownBackbone
from harness.backbones.weights import UnknownWeights
from harness.cli import compare, contract, launch, merge, report, weights
from harness.cli.common import USAGE_ERROR, Parser, UsageError
from harness.results.runs import RunError

# The verbs in the order --help lists them.
VERBS = {"compare": compare, "contract": contract, "report": report, "launch": launch, "weights": weights, "merge": merge}


def parser() -> argparse.ArgumentParser:
    """The whole command line: one subparser per verb."""
    top = Parser(prog="python -m harness", description="Compare, report and merge backbone-bench runs.")
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    for verb in VERBS.values():
        verb.add_parser(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code (0 ok, 1 regressions, 2 usage error)."""
    try:
        args = parser().parse_args(argv)
        return VERBS[args.command].run(args)
    except (UsageError, RunError, OSError, UnknownWeights, UnknownBackbone) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
