"""``python -m harness report RUN... --out DIR``: report.md, report.csv, deployment.csv and plots of runs.

The deployment options (:class:`~harness.results.transfer.ReportOptions`) are parsed here, so a
bad value is a usage error before any run is read; :func:`harness.results.report.write_report`
does the writing.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.cli.common import UsageError, add_storage, argtype
from harness.config.parsers import byte_size, positive_float, positive_int
from harness.errors import SettingError

if TYPE_CHECKING:
    from harness.results.transfer import ReportOptions


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``report`` verb to ``python -m harness``'s subparsers."""
    rep: argparse.ArgumentParser = subparsers.add_parser("report", help="write report.md, report.csv and plots for one or more runs")
    rep.add_argument("runs", nargs="+", metavar="RUN", help="run files or ids in the storage")
    add_storage(rep)
    rep.add_argument("--out", type=Path, required=True, help="folder to write into (created)")
    add_report_arguments(rep)
    return rep


def run(args: argparse.Namespace) -> int:
    """Write the report and name each file; 0."""
    from harness.results.report import write_report  # pandas and plots: imported by the verb that runs
    from harness.results.runs import load_run

    runs = [load_run(ref, args.storage) for ref in args.runs]
    if args.out.resolve() == args.storage.resolve() or args.storage.resolve() in args.out.resolve().parents:
        raise UsageError(f"--out {args.out} is inside the storage {args.storage}; write reports elsewhere")
    result = write_report(runs, args.out, report_options(args))
    for path in result.files:
        print(f"wrote {path}")
    for reason in result.skipped:
        print(reason)
    return 0


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the deployment options (:class:`ReportOptions`) to the ``report`` command; bad values are
    usage errors at parse time."""
    group = parser.add_argument_group("deployment", "the inference configuration joined to the trained models, and the constraints")
    group.add_argument("--device", metavar="DEVICE", help="inference device whose latency and memory are joined (default: the device with most inference cases)")
    group.add_argument("--batch-size", metavar="N", type=argtype(lambda t: positive_int(t, "--batch-size")),
                       help="inference batch size joined (default: the smallest measured on that device)")
    group.add_argument("--img-size", metavar="PX", type=argtype(lambda t: positive_int(t, "--img-size")),
                       help="inference resolution joined where a model's training resolution was not measured (default: the measured one nearest to it)")
    group.add_argument("--max-latency-ms", metavar="MS", type=argtype(positive_float("--max-latency-ms")), help="largest latency p50 in ms (default: no limit)")
    group.add_argument("--max-memory", dest="max_memory_bytes", metavar="SIZE", type=argtype(_memory),
                       help="largest peak inference memory: 512MiB, 2GiB or bytes (default: no limit)")
    group.add_argument("--min-top1", metavar="PCT", type=argtype(_percent), help="smallest top-1 in %%, in (0, 100] (default: none)")
    # --- dense (segmentation) constraint ---
    group.add_argument("--min-miou", metavar="PCT", type=argtype(_percent), help="smallest mIoU in %% of a dense case, in (0, 100] (default: none)")
    # --- robustness (issue 29 A) ---
    group.add_argument("--max-mce", metavar="PCT", type=argtype(positive_float("--max-mce")),
                       help="largest mCE in %% against the reference backbone (runs with --robustness; default: no limit)")
    group.add_argument("--robust-reference", metavar="BACKBONE",
                       help="the backbone name mCE is relative to (default: the first backbone of each dataset/subset/protocol group, the matrix's order)")
    group.add_argument("--target-top1", metavar="PCT", type=argtype(_percent),
                       help="top-1 in %% that the data-efficiency table asks each curve to reach (default: 90%% of the curve's own best)")


def report_options(args: argparse.Namespace) -> ReportOptions:
    """The :class:`ReportOptions` of parsed arguments; options the namespace lacks take their defaults."""
    from harness.results.transfer import ReportOptions

    return ReportOptions(**{f.name: getattr(args, f.name, None) for f in fields(ReportOptions)})


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 100:  # NaN fails too
        raise SettingError(f"must be a percentage in (0, 100], got {text!r}")
    return value


def _memory(text: str) -> int:
    value = int(text) if text.strip().isdigit() else byte_size(text)  # a bare number is bytes
    if value <= 0:
        raise SettingError(f"must be a size above zero (512MiB, 2GiB or bytes), got {text!r}")
    return value

