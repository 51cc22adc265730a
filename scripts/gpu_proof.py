"""Prove the suite's CUDA paths on a real GPU in one command; on a machine without CUDA, a dry run.

Runs every step of ``gpu_proof_steps.STEPS`` in order (latency honesty, the inference matrix,
training, xdist on one GPU, ``--power`` with NVML, batch planning), each in its own process
with its own time cap: a step that hangs is killed at its cap and the next one starts. It
writes one folder:

    OUT/summary.json        environment, every step's status, figures and checks, what could not be proven
    OUT/<step>.log          the step's whole output (its pytest sessions' too)
    OUT/raw/<step>/         result.json and the raw files: pytest JSON and JUnit, worker probes

and prints a summary table. Without CUDA every step builds its commands and paths (the suite's
option parsers check them), says ``skipped: no CUDA device``, and the script exits 0. Exit 1
when a step failed a check, raised or timed out.

    python scripts/gpu_proof.py --out /tmp/proof                          # every step
    python scripts/gpu_proof.py --out /tmp/proof --steps latency,plan --cap-scale 0.8
    python scripts/gpu_proof.py --out /tmp/proof --cap matrix=240         # one step's cap
    python scripts/gpu_proof.py --out /tmp/proof --rehearse-on-cpu        # the code paths on the CPU, toy sizes
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from gpu_proof_steps import STEP_NAMES, STEPS, StepInfo  # noqa: E402
from gpu_proof_steps.common import kill_tree  # noqa: E402

# One device call runs 600 s at most; the caps of a whole run must stay under this.
CALL_LIMIT_S = 570.0
FAILED = ("failed", "error", "timed out")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created; default: none, required)")
    parser.add_argument("--steps", default=",".join(STEP_NAMES), metavar="NAMES", help=f"steps to run, in this order: {', '.join(STEP_NAMES)} (default: all)")
    parser.add_argument("--cap-scale", type=float, default=1.0, metavar="X", help="multiply every step's time cap (default: 1.0)")
    parser.add_argument("--cap", action="append", default=[], metavar="STEP=SECONDS", help="one step's cap in seconds, repeatable (default: the step's own)")
    parser.add_argument("--rehearse-on-cpu", action="store_true", help="run the steps on the CPU at toy sizes: checks the code, proves nothing (default: off)")
    parser.add_argument("--run-step", metavar="NAME", help=argparse.SUPPRESS)  # internal: one step, in its own process
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.steps.split(",") if n.strip()]
    unknown = [n for n in names if n not in STEP_NAMES]
    if unknown or not names:
        parser.error(f"--steps: unknown step(s) {unknown}; choose from {', '.join(STEP_NAMES)}")
    args.selected = [s for s in STEPS if s.name in names]
    if args.cap_scale <= 0:
        parser.error("--cap-scale must be > 0")
    args.caps = {s.name: s.cap_s * args.cap_scale for s in args.selected}
    for item in args.cap:
        name, _, seconds = item.partition("=")
        if name not in STEP_NAMES or not seconds.replace(".", "", 1).isdigit() or float(seconds) <= 0:
            parser.error(f"--cap {item!r}: write STEP=SECONDS with STEP one of {', '.join(STEP_NAMES)}")
        args.caps[name] = float(seconds)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_step:
        return run_one(args)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    caps: dict[str, float] = {s.name: args.caps[s.name] for s in args.selected}
    total = sum(caps.values())
    from gpu_proof_steps.env import environment

    env = environment(ROOT)
    print(f"gpu_proof: {len(caps)} step(s), caps {total:.0f} s in all, output {out}")
    print(f"  python {platform.python_version()}, GPU: {env['gpu'] or 'none found by nvidia-smi'}; missing suite dependencies: {env['missing'] or 'none'}")
    if env["missing"]:
        print("  the steps that import them will fail: carry them as wheels (scripts/gpu_proof.sh wheels, README)")
    if total > CALL_LIMIT_S:
        print(f"  warning: the caps add up to {total:.0f} s, more than one 10-minute device call leaves ({CALL_LIMIT_S:.0f} s)")
    started = time.time()
    results = []
    for index, step in enumerate(args.selected, 1):
        print(f"[{index}/{len(caps)}] {step.name}: {step.title} (cap {caps[step.name]:.0f} s)", flush=True)
        result = run_step(step, caps[step.name], args, out)
        results.append(result)
        print(f"[{index}/{len(caps)}] {step.name}: {status_line(result)} ({result['seconds']:.1f} s; log {result['log']})", flush=True)
    summary = {
        "script": "scripts/gpu_proof.py", "started": started, "seconds": round(time.time() - started, 1), "rehearsal": args.rehearse_on_cpu,
        "caps_s": caps, "total_cap_s": total, "environment": env, "steps": results, "could_not_be_proven": could_not_prove(results),
    }
    summary["exit_code"] = 1 if any(r["status"] in FAILED for r in results) else 0
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    tmp.replace(out / "summary.json")
    print_summary(summary)
    return int(summary["exit_code"])


def run_step(step: StepInfo, cap_s: float, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Run one step in its own process group, killed at ``cap_s``; its result, or why there is none."""
    raw = out / "raw" / step.name
    raw.mkdir(parents=True, exist_ok=True)
    result_path = raw / "result.json"
    result_path.unlink(missing_ok=True)
    log = out / f"{step.name}.log"
    deadline = time.time() + cap_s
    command = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--run-step", step.name, "--steps", step.name,
               "--deadline", f"{deadline:.3f}", "--scale", f"{cap_s / step.cap_s:.4f}"]
    if args.rehearse_on_cpu:
        command.append("--rehearse-on-cpu")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), str(HERE), os.environ.get("PYTHONPATH")]))}
    start = time.monotonic()
    timed_out = False
    returncode: int | None = None
    with log.open("w", encoding="utf-8") as sink, subprocess.Popen(command, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True) as proc:
        try:
            returncode = proc.wait(timeout=cap_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = kill_tree(proc, group=True)
    seconds = round(time.monotonic() - start, 1)
    # Training checkpoints serve --resume only; at ~45 MB each they would swamp the folder.
    shutil.rmtree(raw / "checkpoints", ignore_errors=True)
    result: dict[str, Any] = {"name": step.name, "status": "error", "reason": "", "checks": [], "not_proven": [], "figures": {}, "planned": {}}
    if result_path.is_file():
        result.update(json.loads(result_path.read_text(encoding="utf-8")))
    if timed_out:
        result.update(status="timed out", reason=f"killed at its cap of {cap_s:.0f} s")
    elif result["status"] in ("error", "running") and not result["reason"]:
        result.update(status="error", reason=f"the step's process exited {returncode} without a result; see {log.name}")
    result.update(title=step.title, cap_s=cap_s, seconds=seconds, log=log.name, returncode=returncode)
    return result


def run_one(args: argparse.Namespace) -> int:
    """The step process: set up, stop at ``require_cuda`` without a GPU, else measure; always write a result."""
    from gpu_proof_steps.common import NO_CUDA, NoCuda, StepContext

    [step] = args.selected
    ctx = StepContext(step.name, args.out.resolve() / "raw" / step.name, deadline=args.deadline or time.time() + step.cap_s,
                      scale=args.scale, rehearse=args.rehearse_on_cpu)
    print(f"step {step.name}: {step.title}" + (" [REHEARSAL on the CPU: not a proof]" if ctx.rehearse else ""), flush=True)
    try:
        importlib.import_module(f"gpu_proof_steps.{step.name}").run(ctx)
    except NoCuda:
        print(f"skipped: {NO_CUDA}", flush=True)
        ctx.save("skipped", NO_CUDA)
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure of a step is its result, with the traceback in its log
        traceback.print_exc()
        ctx.save("error", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:400])
        return 0
    failed = [c for c in ctx.checks if not c["ok"]]
    status = "failed" if failed else ("partial" if ctx.not_proven or not ctx.checks else "passed")
    if not ctx.checks and not ctx.not_proven:
        ctx.not_proven.append("no check ran")
    ctx.save(status, f"{len(failed)} of {len(ctx.checks)} check(s) failed" if failed else "")
    print(f"{step.name}: {status}", flush=True)
    return 0


def status_line(result: dict[str, Any]) -> str:
    checks = result.get("checks", [])
    passed = sum(1 for c in checks if c["ok"])
    reason = f": {result['reason']}" if result.get("reason") else ""
    return f"{result['status']}{reason}" + (f" [{passed}/{len(checks)} checks passed]" if checks else "")


def could_not_prove(results: list[dict[str, Any]]) -> list[str]:
    """Everything a reader must not take as proven: skipped, timed-out or broken steps, failed checks, gaps."""
    items = []
    for r in results:
        if r["status"] in ("skipped", "timed out", "error"):
            items.append(f"{r['name']}: {r['status']}: {r['reason']}")
        items += [f"{r['name']}: check failed: {c['what']}: {c['value']} (target {c['target']})" for c in r.get("checks", []) if not c["ok"]]
        items += [f"{r['name']}: {text}" for text in r.get("not_proven", [])]
    return items


def print_summary(summary: dict[str, Any]) -> None:
    rows = [(r["name"], status_line(r), f"{r['seconds']:.0f}/{r['cap_s']:.0f} s") for r in summary["steps"]]
    width = max(len(row[1]) for row in rows)
    print(f"\n{'step':<9} {'status':<{width}} {'time/cap':>11}")
    for name, status, times in rows:
        print(f"{name:<9} {status:<{width}} {times:>11}")
    checks = [(r["name"], c) for r in summary["steps"] for c in r.get("checks", [])]
    if checks:
        print(f"\nChecks ({sum(c['ok'] for _, c in checks)}/{len(checks)} passed):")
        for name, c in checks:
            print(f"  {'PASS' if c['ok'] else 'FAIL'} {name}: {c['what']}: {c['value']} (target {c['target']})")
    if summary["rehearsal"]:
        print("\nREHEARSAL on the CPU at toy sizes: the code paths ran, nothing about CUDA is proven.")
    print(f"\nCould not be proven ({len(summary['could_not_be_proven'])}):")
    for item in summary["could_not_be_proven"] or ["nothing: every step passed every check"]:
        print(f"  - {item}")
    print(f"\nsummary: {summary['seconds']:.0f} s, exit {summary['exit_code']}; figures in summary.json")


if __name__ == "__main__":
    raise SystemExit(main())
