"""The command line put together: every verb's subparser, and the one place that turns errors into exit 2.

Exit codes: 0 nothing regressed (or the verb's work done), 1 regressions found (or a file
missing), 2 a usage error (bad arguments, unreadable runs, bad tolerance spec: one
``error: ...`` line on stderr) or runs that are not comparable. The verbs and what each does:
``compare`` (:mod:`harness.cli.compare`), ``contract``, ``report``, ``launch``, ``weights``,
``merge``, ``storage`` (:mod:`harness.cli.storage`), ``data`` (:mod:`harness.cli.data`: image folders or CSVs as WebDataset shards),
``site`` (:mod:`harness.cli.site`), ``bench`` (:mod:`harness.cli.bench`: the installed cases, run from a team's repository), ``ab`` (:mod:`harness.cli.ab`: base and head in alternating processes). argparse lives in :mod:`harness.cli` and :mod:`harness.plugin` only.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from harness.cli import ab, bench, compare, contract, data, launch, merge, report, site, storage, weights
from harness.cli.common import USAGE_ERROR, Parser, UsageError


class Verb(Protocol):
    """What each verb module provides (modules satisfy protocols for mypy)."""

    def add_parser(self, subparsers: Any) -> argparse.ArgumentParser: ...

    def run(self, args: argparse.Namespace) -> int: ...


# The verbs in the order --help lists them.
VERBS: dict[str, Verb] = {"bench": bench, "compare": compare, "ab": ab, "contract": contract, "report": report, "launch": launch, "weights": weights, "merge": merge,
                          "storage": storage, "data": data, "site": site}


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
        code: int = VERBS[args.command].run(args)
        return code
    except Exception as exc:
        if not isinstance(exc, usage_errors()):
            raise
        print(f"error: {os_error_line(exc) if isinstance(exc, OSError) else exc}", file=sys.stderr)
        return USAGE_ERROR


# The fix for the file system's refusals that reach the command line bare ("[Errno 17] File exists").
_OS_FIXES = {
    errno.EEXIST: "something is already there; pass a new path or remove it",
    errno.ENOTDIR: "a file stands where a folder is needed on this path; pass another path",
    errno.EISDIR: "a folder is there, not a file; pass a file path",
    errno.ENOSPC: "the disk is full; free some space or pass a path on another disk",
    errno.EDQUOT: "the disk quota is used up; free some space or pass a path on another disk",
    errno.EACCES: "no permission; pass a path you can write, or fix its permissions",
    errno.EROFS: "the file system is read-only; pass a path on a writable one",
    errno.ENAMETOOLONG: "a name on this path is too long for the file system; pass a shorter path",
}


def os_error_line(exc: OSError) -> str:
    """``PATH: what went wrong; the fix`` for a bare ``OSError`` of the file system; any other message as it is."""
    if exc.errno not in _OS_FIXES or not exc.filename or exc.strerror is None or str(exc) != str(OSError(exc.errno, exc.strerror, exc.filename)):
        return str(exc)  # a message of the suite's own (StorageError and the like) already names the thing and the fix
    return f"{exc.filename}: {exc.strerror.lower()} (errno {exc.errno}); {_OS_FIXES[exc.errno]}"


# The verbs' own usage errors: (module, class). Their modules load torch, timm or scipy, so each
# verb imports what it needs when it runs and --help or a typo imports none of them; an error of
# a module that was never imported cannot have been raised.
_VERB_ERRORS = (("harness.results.runs", "RunError"), ("harness.backbones.weights", "UnknownWeights"),
                ("harness.backbones.weights", "WeightsMismatch"), ("harness.backbones.registry", "UnknownBackbone"),
                ("harness.data.errors", "DatasetError"))


def usage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions :func:`main` prints as one ``error:`` line with exit 2, of the modules imported so far."""
    loaded = [getattr(sys.modules[module], name) for module, name in _VERB_ERRORS if module in sys.modules]
    return (UsageError, OSError, *loaded)
