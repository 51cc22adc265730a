"""``python -m harness contract``: the run contract (kinds, metrics, protocols, runtimes, families,
datasets, options) as the README's Markdown tables."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.config.options import markdown_table
from harness.contract import markdown_tables
from harness.data.registry import markdown_table as datasets_table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``contract`` verb to ``python -m harness``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "contract", help="print the run contract (kinds, metrics, protocols, runtimes, families, datasets, options) as the README's tables")
    return parser


def document() -> str:
    """Every table, in the README's order."""
    return markdown_tables() + "\n" + datasets_table() + "\n" + markdown_table()


def run(args: argparse.Namespace) -> int:
    """Print the tables; always 0."""
    sys.stdout.write(document())
    return 0
