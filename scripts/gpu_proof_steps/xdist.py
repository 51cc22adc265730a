"""Step 4, xdist on one GPU: the same small selection serially and with ``-n 2``; the records compared.

The selection holds inference cases (timed by ``time_rounds`` in the workers, where
pytest-benchmark disables itself) and digits trainings. Each process reports where it ran
through ``gpu_proof_steps.worker_probe``: with one GPU both workers should be on ``cuda:0``
(the plugin assigns ``gw<N>`` to ``cuda:<N>`` only when there are several). Compared case by
case: the same case ids and statuses, every ``exact`` metric of the contract equal, the seeded
top-1 equal (the trainings are deterministic), and the settings digests (what decides whether
``python -m harness compare`` compares two cases at all).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpu_proof_steps.common import MIN_SESSION_S, PytestRun, StepContext, pytest_session

SHARES = {"serial": 30.0, "xdist": 32.0}  # of the 70 s cap; each session starts torch, timm and the plugin (~10 s)
SEEDED = ("top1", "top1_per_seed")


def run(ctx: StepContext) -> None:
    img = "32" if ctx.rehearse else "224"
    values: dict[str, str | bool | None] = {
        "backbones": "resnet18,mobilenetv3_large_100", "img-sizes": img, "batch-sizes": "1,32", "precisions": "fp32",
        "devices": ctx.device, "bench-time": "0.2", "dataset": "digits", "subsets": "full", "train-img-sizes": "32",
        "epochs": "1", "seeds": "1", "checkpoint-dir": str(ctx.raw / "checkpoints"),
    }
    selection = ["-m", "inference or train", "-p", "gpu_proof_steps.worker_probe"]
    runs = {
        "serial": pytest_session(ctx, "serial", selection, values, env={"GPU_PROOF_PROBE_DIR": str(ctx.raw / "workers-serial")}),
        "xdist": pytest_session(ctx, "xdist", [*selection, "-n", "2"], values, env={"GPU_PROOF_PROBE_DIR": str(ctx.raw / "workers-xdist")}),
    }
    ctx.require_cuda()

    done: dict[str, PytestRun] = {}
    for label, session in runs.items():
        budget = ctx.budget(SHARES[label])
        if budget < MIN_SESSION_S:
            ctx.unproven(f"session {label!r} not run: {ctx.remaining():.0f} s left of the step's cap")
            continue
        done[label] = session.run(budget)
        if session.problem():
            ctx.unproven(str(session.problem()))
    ctx.figures["sessions"] = {label: r.summary() for label, r in done.items()}
    ctx.figures["wall_s"] = {label: r.seconds for label, r in done.items()}
    workers = _probes(ctx.raw / "workers-xdist")
    ctx.figures["workers"] = workers
    ctx.figures["serial_process"] = _probes(ctx.raw / "workers-serial")
    if "xdist" in done:
        devices = sorted({str(w.get("cuda_device")) for w in workers})
        ctx.check("two xdist workers ran cases", len({w["pid"] for w in workers}) == 2, f"{len(workers)} worker(s), CUDA device(s) {devices}", "2 workers")
        if not ctx.rehearse:
            ctx.check("both workers on the one GPU (cuda:0)", bool(workers) and devices == ["0"], devices, "['0'] on a 1-GPU machine")
    if "serial" in done and "xdist" in done:
        result = compare_records(done["serial"].cases, done["xdist"].cases)
        ctx.figures["comparison"] = result
        ctx.check("same cases and statuses", not result["only_serial"] and not result["only_xdist"] and not result["status"],
                  f"{result['compared']} compared; only serial {result['only_serial']}, only xdist {result['only_xdist']}", "identical")
        ctx.check("exact and seeded metrics equal", not result["metrics"], result["metrics"][:6] or "all equal", "all equal")
        ctx.check("settings digests equal (else compare says 'not comparable')", not result["settings"], result["settings"][:6] or "all equal", "all equal")


def compare_records(serial: Mapping[str, Mapping[str, Any]], parallel: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What differs between two runs' records of the same selection, case by case.

    ``metrics`` lists every ``exact`` metric of the contract and the seeded top-1 that differ;
    ``settings`` each case whose settings differ, as compare names the difference.
    """
    from harness.contract import METRICS, settings_differences

    exact = [key for key, metric in METRICS.items() if metric.noise == "exact"]
    common = sorted(set(serial) & set(parallel))
    out: dict[str, Any] = {
        "compared": len(common), "only_serial": sorted(set(serial) - set(parallel)), "only_xdist": sorted(set(parallel) - set(serial)),
        "status": [], "metrics": [], "settings": [],
    }
    for case_id in common:
        a, b = serial[case_id], parallel[case_id]
        if a.get("status") != b.get("status"):
            out["status"].append(f"{case_id}: {a.get('status')} vs {b.get('status')}")
        for key in (*exact, *SEEDED):
            if key in a or key in b:
                if a.get(key) != b.get(key):
                    out["metrics"].append(f"{case_id} {key}: {a.get(key)} vs {b.get(key)}")
        differences = settings_differences(a.get("settings") or {}, b.get("settings") or {})
        if differences:
            out["settings"].append(f"{case_id}: {', '.join(differences)}")
    return out


def _probes(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
