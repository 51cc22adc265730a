"""What every ``python -m harness`` verb shares: one-line usage errors, and the flags built once.

:func:`add_storage` is the ``--benchmark-storage`` flag of every verb that reads saved runs;
:func:`add_gate_options` turns the option table's gate rows (:data:`~harness.config.options.GATE_OPTIONS`)
into flags with the same names and parsers as pytest's ``--gate``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from harness.config.options import GATE_OPTIONS
from harness.errors import SettingError

USAGE_ERROR = 2


def argtype(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse ``type=``: a :class:`SettingError` becomes argparse's usage error."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


class UsageError(Exception):
    """Raised instead of argparse's print-usage-and-exit so every usage error is one line."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


DEFAULT_STORAGE = Path("baselines")


def add_storage(parser: argparse.ArgumentParser, what: str = "saved runs folder, as pytest's --benchmark-storage") -> None:
    """The saved-runs folder flag, as pytest's ``--benchmark-storage`` (``--storage`` for short)."""
    parser.add_argument("--benchmark-storage", "--storage", dest="storage", type=_storage_path, default=DEFAULT_STORAGE,
                        help=f"{what} (file:// optional; default: baselines)")


def _storage_path(text: str) -> Path:
    return Path(text.removeprefix("file://"))


def add_gate_options(parser: argparse.ArgumentParser, *, keep_text: bool = False) -> None:
    """The gate's options (``--fail-on``, ``--force``, …), validated at parse time. With ``keep_text``
    each value stays the text given (``launch`` repeats it in its ``--rerun`` hint); otherwise the parsed value."""
    for option in GATE_OPTIONS:  # the same options, names and parsers as pytest's --gate
        if option.flag:
            parser.add_argument(f"--{option.name}", dest=option.field, action="store_true", help=option.help_text())
        elif keep_text:
            parser.add_argument(f"--{option.name}", dest=option.field, metavar=option.metavar, type=argtype(checked_text(option.parse)),
                                default=option.default, help=option.help_text())
        else:
            # The default stays text: argparse parses it with ``type`` when the verb runs without the
            # option, so building the parser (--help) imports no parser's modules (scipy for --fail-on).
            parser.add_argument(f"--{option.name}", dest=option.field, metavar=option.metavar, type=argtype(option.parse), default=option.default,
                                help=option.help_text())


def checked_text(parse: Callable[[str], Any]) -> Callable[[str], str]:
    """Validate at parse time but keep the text, so the re-run command can repeat it."""

    def check(text: str) -> str:
        parse(text)
        return text

    return check
