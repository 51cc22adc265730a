"""``python -m harness site --out DIR``: the static site of the stored runs (:mod:`harness.results.site`).

Needs the optional extra ``site`` (plotly for the browser's plots, ruptures for the change
points): without it, one usage error naming the install command, exit 2. A storage without a
readable run is exit 2 too, as every verb that reads runs; a corrupt run file is skipped and
named, in stdout and on the index.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from harness.cli.common import UsageError, add_storage

# The optional extra's packages: (import name, what the site uses it for).
EXTRA = (("plotly", "the plots"), ("ruptures", "the change points"))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``site`` verb to ``python -m harness``'s subparsers."""
    site: argparse.ArgumentParser = subparsers.add_parser(
        "site", help="write a static HTML site of the stored runs: trends with change points, the last gate, training curves")
    site.add_argument("--out", type=Path, required=True, metavar="DIR",
                      help="folder to write the site into (created; a previous site there is replaced at once)")
    add_storage(site)
    return site


def run(args: argparse.Namespace) -> int:
    """Build the site and say what it holds; 0."""
    missing = [f"{name} ({use})" for name, use in EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"python -m harness site needs the 'site' extra, missing: {', '.join(missing)}; install it with pip install -e '.[site]'")
    out, storage = args.out.resolve(), args.storage.resolve()
    if out == storage or storage in out.parents:
        raise UsageError(f"--out {args.out} is inside the storage {args.storage}; write the site elsewhere")
    from harness.results.site import build_site  # ruptures, pandas: imported by the verb that runs

    result = build_site(args.storage, args.out)
    for name in result.cleaned:
        print(f"removed {name}, the temporary folder of a killed site build")
    for reason in result.skipped:
        print(f"skipped: {reason}")
    for machine, gate in result.gates.items():
        print(f"{machine}: last gate: {gate}")
    print(f"wrote {len(result.pages)} pages to {result.out} (open {result.out / 'index.html'})")
    return 0
