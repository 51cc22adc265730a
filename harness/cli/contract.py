"""``python -m harness contract``: the run contract (kinds, metrics, options) as the README's Markdown tables."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.config.options import markdown_table
from harness.contract import markdown_tables


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``contract`` verb to ``python -m harness``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "contract", help="print the run contract (kinds, metrics, options) as the README's Markdown tables")
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the tables; always 0."""
    sys.stdout.write(markdown_tables() + "\n" + markdown_table())
    return 0
