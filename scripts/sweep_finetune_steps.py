"""The fine-tune step-budget sweep behind ``HYPERRULE`` (harness/measure/schedule.py), rerunnable.

Runs ``scripts/peer_transfer.py`` (the plain-torch peer that shares no code with the suite) once per
(transfer, protocol, steps, lr), each a separate single-threaded process, ``--jobs`` at a time, and
prints the tables of docs/finetune-steps.md from their JSON files: top-1 mean ± sample std over the
seeds, and the wall of the seeds. A cell whose JSON is complete is read, not rerun, so an interrupted
sweep resumes.

    python scripts/sweep_finetune_steps.py --out /tmp/sweep \\
        --transfer "digits=/tmp/ft-dg/digits59@test_resnet@/tmp/ft-dg/weights/test_resnet_digits04.safetensors" \\
        --transfer "fashion=/tmp/ft-fm/fmnist59@test_resnet@/tmp/ft-fm/weights/test_resnet_fmnist04.safetensors" \\
        --subsets 10pc,20pc,100pc --steps 100,250,500,1000 --protocols finetune,finetune-zero --lrs 3e-4

The transfers come from ``scripts/fashion_transfer.py``. ``--lrs`` holds lrs at batch 128, one cell
each: a fixed lr (so the step count, or the lr, is the only thing that moves) or a grid the peer
searches on its validation split like the suite (``1e-4/3e-4/1e-3``); ``--table lr`` prints the lr
columns at one step count instead of the step columns at one lr.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

PEER = Path(__file__).with_name("peer_transfer.py")


@dataclass(frozen=True)
class Cell:
    transfer: str
    data: str
    weights: str
    protocol: str
    steps: int
    lr: str

    def json(self, out: Path) -> Path:
        if self.protocol == "linear":
            return out / f"{self.transfer}-linear.json"
        return out / f"{self.transfer}-{self.protocol}-{self.steps}-{self.lr.replace('/', '+')}.json"


def complete(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def run(cell: Cell, opts: argparse.Namespace) -> str:
    target = cell.json(opts.out)
    if complete(target):
        return f"{target.name}: done before"
    command = [sys.executable, str(PEER), "--data", cell.data, "--weights", cell.weights, "--subsets", opts.subsets,
               "--seeds", str(opts.seeds), "--protocols", cell.protocol, "--steps", str(cell.steps), "--lr-grid", cell.lr.replace("/", ","),
               "--threads", "1", "--json", str(target)]
    with target.with_suffix(".log").open("w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    return f"{target.name}: exit {code}"


def summary(path: Path) -> dict[str, dict[str, float]]:
    """Each subset's summary row, with ``images``: the subset's size as the peer recorded it (``n_subset``)."""
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    sizes = {rec["subset"]: rec["n_subset"] for rec in data["records"]}
    return {row["subset"]: {**row, "images": sizes[row["subset"]]} for row in data["summary"]}


def cellfmt(row: dict[str, float] | None) -> str:
    return f"{row['top1_mean']:.2f} ± {row['top1_std']:.2f} ({row['wall_s']:.0f} s)" if row else "–"


def tables(cells: list[Cell], opts: argparse.Namespace) -> None:
    transfers = dict.fromkeys((c.transfer, c.data, c.weights) for c in cells)
    protocols = [p for p in opts.protocols.split(",") if p != "linear"]
    if opts.table == "steps":
        columns = [(s, opts.lrs.split(",")[0]) for s in opts.steps.split(",")]
        header = [f"{s} steps" for s, _ in columns]
    else:
        columns = [(opts.steps.split(",")[0], lr) for lr in opts.lrs.split(",")]
        header = [f"lr {lr}" for _, lr in columns]
    print("| transfer | images | protocol | linear probe | " + " | ".join(header) + " |")
    print("|---" * (4 + len(columns)) + "|")
    for transfer, data, weights in transfers:
        probe = summary(Cell(transfer, data, weights, "linear", 0, "").json(opts.out))
        for subset in opts.subsets.split(","):
            for protocol in protocols:
                rows = [summary(Cell(transfer, data, weights, protocol, int(s), lr).json(opts.out)).get(subset) for s, lr in columns]
                images = next((int(r["images"]) for r in (probe.get(subset), *rows) if r), "–")
                print(f"| {transfer} | {images} | {protocol} | {cellfmt(probe.get(subset))} | " + " | ".join(map(cellfmt, rows)) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--transfer", action="append", required=True, metavar="NAME=DATA@ARCH@WEIGHTS")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--subsets", default="10pc,20pc,100pc")
    parser.add_argument("--steps", default="100,250,500,1000")
    parser.add_argument("--protocols", default="linear,finetune,finetune-zero")
    parser.add_argument("--lrs", default="3e-4", help="lrs at batch 128, one cell each: a fixed lr, or a grid searched on validation (1e-4/3e-4/1e-3)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--table", choices=("steps", "lr"), default="steps")
    parser.add_argument("--print-only", action="store_true", help="print the tables from the JSON files already there")
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    cells: list[Cell] = []
    for spec in opts.transfer:
        name, _, rest = spec.partition("=")
        data, _, weights = rest.partition("@")
        if not (name and data and "@" in weights):
            parser.error(f"--transfer {spec!r}: expected NAME=DATA@ARCH@WEIGHTS")
        for protocol in opts.protocols.split(","):
            if protocol == "linear":
                cells.append(Cell(name, data, weights, protocol, 0, "3e-4"))
                continue
            cells.extend(Cell(name, data, weights, protocol, int(s), lr) for s in opts.steps.split(",") for lr in opts.lrs.split(","))
    if not opts.print_only:
        todo = sorted(dict.fromkeys(cells), key=lambda c: -c.steps)  # longest first: the pool ends together
        with ThreadPoolExecutor(opts.jobs) as pool:
            for line in pool.map(lambda c: run(c, opts), todo):
                print(line, flush=True)
    tables(list(dict.fromkeys(cells)), opts)


if __name__ == "__main__":
    main()
