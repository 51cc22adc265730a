"""Kill ``python -m harness site`` builds with SIGKILL at random points and check that nothing half-written is left.

A storage of the committed runs is built into a site once (the reference: every file's sha256). Each
round starts the same build, sleeps a random time within one build's duration, and kills it with
SIGKILL. After each kill ``--out`` must be the whole reference site byte for byte (a kill before the
swap leaves the previous site, one after it the new one, which is the same), or absent only when the
kill fell between the swap's two renames; what the kill left beside ``--out`` (hidden temporary
folders) is counted. The next round's build removes those leftovers. At the end a build runs to
completion, then: no hidden folder is left beside ``--out``, the site is the reference byte for byte,
and the storage's run files are byte-identical to what they were before the first kill.

    python scripts/kill_site.py --kills 20 --folder /tmp/kill-site
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def build(out: Path, storage: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "harness", "site", "--out", str(out), "--benchmark-storage", str(storage)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/kill-site"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    shutil.rmtree(args.folder, ignore_errors=True)
    storage, out = args.folder / "baselines", args.folder / "site"
    shutil.copytree(ROOT / "baselines", storage)
    runs_before = digests(storage)
    start = time.perf_counter()
    first = build(out, storage)
    output = first.communicate()[0].decode()
    duration = time.perf_counter() - start
    if first.returncode != 0:
        print(output)
        return 1
    reference = digests(out)
    print(f"reference site: {len(reference)} files, one build {duration:.2f} s")
    outcomes: Counter[str] = Counter()
    failures = []
    for round_ in range(args.kills):
        process = build(out, storage)
        time.sleep(rng.uniform(0.0, duration))
        finished = process.poll() is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        left = leftovers(out)
        if not out.exists():
            state = "out absent (killed mid-swap)"
        elif digests(out) == reference:
            state = "out whole"
        else:
            state = "out DIFFERS"
            failures.append(f"round {round_}: {out} is not the reference site")
        outcomes[f"{state}, {'finished before the kill' if finished else f'{len(left)} leftover(s)'}"] += 1
    final = build(out, storage)
    text = final.communicate()[0].decode()
    print(f"kills: {args.kills}")
    for what, count in sorted(outcomes.items()):
        print(f"  {count:3d} x {what}")
    print("final build:", " | ".join(line for line in text.splitlines() if line.startswith(("removed", "wrote"))))
    if final.returncode != 0:
        failures.append(f"the final build failed: {text}")
    if leftovers(out):
        failures.append(f"leftovers beside {out} after the final build: {leftovers(out)}")
    if not out.exists() or digests(out) != reference:
        failures.append(f"{out} after the final build is not the reference site")
    if digests(storage) != runs_before:
        failures.append("the storage's run files changed")
    print(f"hidden folders beside {out.name} after the final build: {len(leftovers(out))}")
    print(f"site files identical to the reference: {out.exists() and digests(out) == reference}")
    print(f"storage run files byte-identical ({len(runs_before)} files, sha256): {digests(storage) == runs_before}")
    for failure in failures:
        print("FAIL:", failure)
    print("OK" if not failures else "FAILED")
    os.sync()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
