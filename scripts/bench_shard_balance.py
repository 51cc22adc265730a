"""Shard balance: one selection run serially and as N shards, with and without stored durations.

1. Runs the selection serially, saving it into a scratch storage (its cases record ``duration_s``).
2. Runs it as N shard sessions, one after another, costed from that storage (stored durations).
3. Runs it as N shard sessions costed from an empty storage (the GMACs × images estimate only).
4. Merges each set of shards with ``python -m harness merge`` and checks that the merged run has
   exactly the serial run's case ids, and every case the same record keys.

It prints each shard's cases, expected and measured wall seconds, and the max/min ratio of the
shards' wall times. Sessions run one at a time so that each shard's wall time is its own.

    python scripts/bench_shard_balance.py -m smoke --shards 3
    python scripts/bench_shard_balance.py -m "inference and jetson" --shards 3 -- --backbones edge
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def pytest_session(args: list[str], storage: Path, out: Path) -> float:
    """Run one pytest session of the benchmarks; its wall seconds."""
    command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-p", "no:cacheprovider",
               f"--benchmark-storage=file://{storage}", *args]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode not in (0, 1) or not (out.exists() or any(a.startswith("--benchmark-save") for a in args)):
        sys.exit(f"pytest failed (exit {done.returncode}): {' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds


def cases(doc: dict[str, Any]) -> dict[str, list[str]]:
    """case id → sorted record keys, failed cases included."""
    entries = [*doc["benchmarks"], *doc["backbone_bench"].get("failed", [])]
    return {e["extra_info"]["case_id"]: sorted(e["extra_info"]) for e in entries}


def run_shards(selection: list[str], count: int, storage: Path, folder: Path, label: str, serial: dict[str, list[str]]) -> None:
    rows = []
    for k in range(1, count + 1):
        out = folder / f"{label}-{k}.json"
        seconds = pytest_session([*selection, "--shard", f"{k}/{count}", f"--benchmark-json={out}"], storage, out)
        shard = json.loads(out.read_text())["backbone_bench"]["shard"]
        rows.append((k, shard["cases"], shard["expected_s"], shard["costs_from_stored_runs"], seconds))
    merged = folder / f"{label}-merged.json"
    subprocess.run([sys.executable, "-m", "harness", "merge", *(str(folder / f"{label}-{k}.json") for k in range(1, count + 1)),
                    "--json", str(merged), "--storage", str(storage)], cwd=ROOT, check=True)
    got = cases(json.loads(merged.read_text()))
    same_ids = sorted(got) == sorted(serial)
    same_keys = same_ids and all(got[c] == serial[c] for c in serial)
    print(f"\n{label}: case ids identical to the serial run: {same_ids}; record keys identical: {same_keys}")
    print("| shard | cases | costed from stored runs | expected s | wall s |\n|---|---|---|---|---|")
    for k, n, expected, stored, seconds in rows:
        print(f"| {k}/{count} | {n} | {stored} | {expected:.1f} | {seconds:.1f} |")
    walls = [row[-1] for row in rows]
    print(f"max/min wall: {max(walls) / min(walls):.2f}  (sum {sum(walls):.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-m", dest="marker", default="smoke", help="pytest -m expression (default: smoke)")
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more pytest arguments, after --")
    args = parser.parse_args()
    selection = ["-m", args.marker, *args.extra]
    with tempfile.TemporaryDirectory(prefix="shard-balance-") as tmp:
        folder = Path(tmp)
        stored, empty = folder / "stored", folder / "empty"
        empty.mkdir()
        seconds = pytest_session([*selection, "--benchmark-save=serial"], stored, stored)
        serial_file = next(stored.glob("*/0001_serial.json"))
        serial = cases(json.loads(serial_file.read_text()))
        print(f"serial: {len(serial)} cases in {seconds:.1f} s")
        run_shards(selection, args.shards, stored, folder, "stored-durations", serial)
        run_shards(selection, args.shards, empty, folder, "estimates-only", serial)


if __name__ == "__main__":
    main()
