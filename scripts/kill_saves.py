"""Kill saves with SIGKILL at random points and check that the storage loses nothing and keeps no leftovers.

Each round starts ``python -m harness storage adopt RUN --name killme`` (a real save through
``harness.results.storage``) of a large run, so that the write itself takes a while, sleeps a
random time within one save's duration, and kills it with SIGKILL. What the kill left (a saved run,
a complete or cut-short temporary file, nothing) is counted before the next round, whose save
recovers it. At the end ``python -m harness storage check --repair`` runs, then:
no temporary file is left, every run that was complete (saved, or whole in a temporary file) is
in place byte for byte, and the runs saved before the first kill are byte-identical (sha256).

    python scripts/kill_saves.py --kills 30 --folder /tmp/kill-saves
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.results.storage import dumps, find_orphans, save_run  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def big_run(copies: int) -> dict[str, Any]:
    """The test data's run with its cases repeated: a file of some megabytes, whose write takes a measurable time."""
    run: dict[str, Any] = json.loads((ROOT / "tests" / "data" / "run_cpu_base.json").read_text())
    cases = run["benchmarks"]
    run["benchmarks"] = []
    for k in range(copies):
        for case in cases:
            clone = copy.deepcopy(case)
            clone["fullname"] = f"{case['fullname']}#{k}"
            clone["extra_info"]["case_id"] = f"{case['extra_info']['case_id']}-copy{k}"
            run["benchmarks"].append(clone)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/kill-saves"))
    parser.add_argument("--copies", type=int, default=400, help="repetitions of the test run's cases (the run's size)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    storage = args.folder / "baselines"
    if args.folder.exists():
        raise SystemExit(f"{args.folder} exists; pass a new --folder")
    args.folder.mkdir(parents=True)
    run = big_run(args.copies)
    source = args.folder / "killme-run.json"
    source.write_text(dumps(run))
    key = str(run["machine_info"]["baseline_key"])
    earlier = [save_run(storage, key, name, run) for name in ("before-1", "before-2")]
    hashes = {p: sha256(p) for p in earlier}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "harness", "storage", "adopt", str(source), "--name", "killme", "--benchmark-storage", str(storage)]
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)  # one whole save: its duration bounds the kill times
    duration = time.perf_counter() - start
    saved_before = 1
    left: Counter[str] = Counter()
    folder = storage / key
    for _ in range(args.kills):
        runs_before = len(list(folder.glob("*_killme.json")))
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, duration))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = len(list(folder.glob("*_killme.json"))) - runs_before
        orphans = find_orphans(folder)
        left.update(o.state for o in orphans)
        left["saved"] += saved
        left["nothing"] += not saved and not orphans
    repair = subprocess.run([sys.executable, "-m", "harness", "storage", "check", "--repair", "--benchmark-storage", str(storage)],
                            env=env, capture_output=True, text=True)
    temporaries = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    kept = sorted(folder.glob("*_killme.json"))
    complete = saved_before + left["saved"] + left["complete"]
    identical = all(p.read_bytes() == source.read_bytes() for p in kept)
    unchanged = all(sha256(p) == h for p, h in hashes.items())
    print(f"one save takes {duration:.2f} s; {args.kills} kills at random points within it (seed {args.seed})")
    print(f"what each kill left: {left['saved']} saved run(s), {left['complete']} complete temporary run(s), "
          f"{left['incomplete']} cut-short temporary file(s), {left['duplicate']} temporary copy(ies) of a saved run, "
          f"{left['nothing']} nothing")
    print(f"storage check --repair: exit {repair.returncode}; {repair.stdout.strip().splitlines()[-1]}")
    print(f"after: {len(temporaries)} temporary file(s) left; {len(kept)} killme run(s) kept of {complete} complete "
          f"({'all' if identical else 'NOT all'} byte-identical to the source); earlier runs {'byte-identical' if unchanged else 'CHANGED'} (sha256)")
    ok = not temporaries and len(kept) == complete and identical and unchanged and repair.returncode == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
