"""``python -m harness weights NAME...``: where each name's pretrained weights are, or how to fetch them."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``weights`` verb to ``python -m harness``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "weights", help="show where pretrained weights are cached (fetch them with --download)",
        description="One line per NAME: where its weights file is and its sha256, or where it was looked for and how to fetch it.")
    parser.add_argument("names", nargs="+", metavar="NAME", help="ARCH.TAG (a timm pretrained tag) or ARCH@PATH (own checkpoint)")
    parser.add_argument("--download", action="store_true", help="fetch tags that are not cached (default: look offline only)")
    return parser


def run(args: argparse.Namespace) -> int:
    """One line per name; 0 when every file is here (or was downloaded), 1 when some is not. Bad names raise ValueError."""
    # torch: imported when the verb runs, not by --help
    from harness.backbones.factory import check_fits
    from harness.backbones.weights import FILE_SEP, UnknownWeights, WeightsUnavailable, locate, parse_backbone

    refs = [parse_backbone(name) for name in args.names]  # every name is checked before any is looked up
    for ref in refs:
        if not ref.pretrained:
            raise UnknownWeights(f"{ref.name} names no weights: write {ref.arch}.TAG (see timm.list_pretrained('{ref.arch}.*')) "
                                 f"or {ref.arch}{FILE_SEP}PATH")
    for ref in refs:
        # An own file is read as pytest reads it (check_fits): a file that is no checkpoint, or one of
        # another architecture, is the same refusal here (exit 2) as in a session.
        check_fits(ref)
    missing = 0
    for ref in refs:
        try:
            found = locate(ref, download=args.download)
            print(f"{ref.name}: {found.source} {found.path} sha256 {found.sha256[:12]}…")  # 12 hex tell files apart by eye
        except WeightsUnavailable as exc:
            print(exc)
            missing += 1
    return 1 if missing else 0
