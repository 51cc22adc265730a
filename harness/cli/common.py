"""What every ``python -m harness`` verb shares: one-line usage errors, and the flags built once.

:func:`add_storage` is the ``--benchmark-storage`` flag of every verb that reads saved runs;
:func:`add_gate_options` turns the option table's gate rows (:data:`~harness.config.options.GATE_OPTIONS`)
into flags with the same names and parsers as pytest's ``--gate``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from harness.config.options import GATE_OPTIONS
from harness.config.parsers import argtype

USAGE_ERROR = 2


class UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit so every usage error is one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_storage(parser: argparse.ArgumentParser) -> None:
    """The saved-runs folder flag, as pytest's ``--benchmark-storage`` (``--storage`` for short)."""
    parser.add_argument("--benchmark-storage", "--storage", dest="storage", type=_storage_path, default=Path("baselines"),
                        help="saved runs folder, as pytest's --benchmark-storage (file:// optional; default: baselines)")


def _storage_path(text: str) -> Path:
    return Path(text.removeprefix("file://"))


def add_gate_options(parser: argparse.ArgumentParser) -> None:
    """The gate's options (``--fail-on``, ``--force``, …), parsed at parse time."""
    for option in GATE_OPTIONS:  # the same options, names and parsers as pytest's --gate
        default = option.parse(option.default) if option.default is not None else None
        if option.flag:
            parser.add_argument(f"--{option.name}", dest=option.field, action="store_true", help=option.help_text())
        else:
            parser.add_argument(f"--{option.name}", dest=option.field, metavar=option.metavar, type=argtype(option.parse), default=default,
                                help=option.help_text())
