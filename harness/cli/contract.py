"""``python -m harness contract``: the run contract (kinds, metrics, protocols, runtimes, families,
datasets, options) as the manual's Markdown tables (docs/reference/contract.md and options.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from harness.config.options import markdown_table
from harness.contract import FAMILY_SPECS, KINDS, METRICS, PROTOCOL_SPECS, RUNTIME_SPECS, TRACKER_SPECS
from harness.data.registry import markdown_table as datasets_table


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``contract`` verb to ``python -m harness``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "contract", help="print the run contract (kinds, metrics, protocols, runtimes, families, datasets, options) as the manual's tables")
    return parser


def markdown_tables() -> str:
    """The contract as the manual shows it: kinds, metrics, protocols, runtimes, families and trackers, a table each."""
    lines = ["| kind | what it measures | metrics | headline (the run's summary) | settings (digested) | rounds | shard cost |",
             "|---|---|---|---|---|---|---|"]
    for kind in KINDS.values():
        lines.append(f"| `{kind.name}` | {kind.meaning} | {', '.join(f'`{m}`' for m in kind.metrics)} | "
                     f"{', '.join(f'`{m}`' for m in kind.headline)} | {', '.join(kind.settings)} | "
                     f"{kind.rounds} | {kind.cost}, {kind.seconds_per_unit:g} s/unit |")
    lines += ["", "| metric | unit | better | noise | default gate | meaning |", "|---|---|---|---|---|---|"]
    for m in METRICS.values():
        lines.append(f"| `{m.key}` | {m.unit} | {m.better} | {m.noise} | {m.tolerance or 'not gated'} | {m.meaning} |")
    lines += ["", "| protocol | what it does | reads frozen features | needs a text tower | pretrained weights | recipe | warm-up |",
              "|---|---|---|---|---|---|---|"]
    for p in PROTOCOL_SPECS.values():
        warmup = f"{p.warmup:.0%} of the steps" if p.warmup is not None else "–"
        lines.append(f"| `{p.name}` | {p.meaning} | {'yes' if p.features else 'no'} | {'yes' if p.text else 'no'} | {p.weights} | "
                     f"{p.recipe or '–'} | {warmup} |")
    lines += ["", "| runtime | what runs | devices | peak memory on the CPU | parity with eager |", "|---|---|---|---|---|"]
    for r in RUNTIME_SPECS.values():
        memory = "not recorded (its own arena)" if r.cpu_arena else "recorded"
        lines.append(f"| `{r.name}` | {r.meaning} | {', '.join(r.devices)} | {memory} | {'enforced' if r.parity else 'recorded'} |")
    lines += ["", "| family | meaning | from-scratch recipe | fine-tune keeps BatchNorm statistics |", "|---|---|---|---|"]
    for f in FAMILY_SPECS.values():
        lines.append(f"| `{f.name}` | {f.meaning} | {f.scratch} | {'yes' if f.freeze_norm_stats else 'no'} |")
    lines += ["", "| tracker (`--track`) | what it writes | under `--track-dir` | install |", "|---|---|---|---|"]
    for tr in TRACKER_SPECS.values():
        lines.append(f"| `{tr.name}` | {tr.meaning} | `{tr.where}` | `pip install -e '.[{tr.name}]'` |")
    return "\n".join(lines) + "\n"


def contract_tables() -> str:
    """The tables of docs/reference/contract.md: kinds, metrics, protocols, runtimes, families, trackers, datasets."""
    return markdown_tables() + "\n" + datasets_table()


def document() -> str:
    """Every table: the contract's (docs/reference/contract.md), then the options' (docs/reference/options.md)."""
    return contract_tables() + "\n" + markdown_table()


def run(args: argparse.Namespace) -> int:
    """Print the tables; always 0."""
    sys.stdout.write(document())
    return 0
