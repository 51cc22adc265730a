"""``python -m harness ab --base REF [-- PYTEST_ARGS]``: base and head of this repository on this machine, in one job.

The base's code from a worktree at REF, the head from the working tree, alternating processes (A B, B A, …)
until the rounds' spread can show ``--effect`` or ``--budget`` runs out (or exactly ``--rounds``). Each
case's latency is judged on the per-round ratios (paired t-test, the ratio's interval), instruction counts
(``--count-instructions``, counted once per arm) against their tolerance; a flagged case names the functions
its instructions moved to. Both arms are saved as ordinary runs (``--save``). Exit codes as the gate's:
0 nothing regressed, 1 a regression, 2 a usage error.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.cli.common import add_storage, argtype
from harness.config import parsers as p
from harness.config.options import GATE_OPTIONS

# What the job judges: the median latency on the timed rounds (noisy across processes: paired), and
# the instruction count on the counting runs (exact); params, GMACs and memory do not move between
# processes of one commit, so the gate judges them.
TIMED, COUNTED = ("latency_p50_ms",), ("instructions",)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``ab`` verb to ``python -m harness``'s subparsers."""
    fail_on = next(o for o in GATE_OPTIONS if o.name == "fail-on")
    ab: argparse.ArgumentParser = subparsers.add_parser(
        "ab", help="measure REF (a worktree) against the working tree on this machine in alternating processes; exit 1 on regressions",
        description="Runs the pytest arguments after -- in both arms, alternating, and judges the per-round ratios.")
    ab.add_argument("--base", required=True, metavar="REF", help="the commit to compare with: a branch, tag or sha (the merge base in a pull request)")
    ab.add_argument("--rounds", type=argtype(lambda t: p.positive_int(t, "rounds")), default=None, metavar="K",
                    help="exactly K rounds (default: until every case can show --effect, within --budget; at least 3, at most 30)")
    ab.add_argument("--budget", type=argtype(p.positive_float("budget")), default=600.0, metavar="SECONDS",
                    help="no round starts that would end past this many seconds of the job (default: 600)")
    ab.add_argument("--effect", type=argtype(p.positive_float("effect")), default=10.0, metavar="PCT",
                    help="the latency change the job should be able to see before it stops early, in percent (default: 10)")
    ab.add_argument("--count-instructions", action="store_true", help="count each CPU case's instructions in the first round of each arm (valgrind)")
    ab.add_argument("--save", default="ab", metavar="NAME", help="save the arms' last rounds as NAME-base and NAME-head in the storage (default: ab)")
    add_storage(ab)
    ab.add_argument(f"--{fail_on.name}", dest=fail_on.field, metavar=fail_on.metavar, type=argtype(fail_on.parse), default=fail_on.default,
                    help=fail_on.help_text())
    ab.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS", help="the cases: pytest's arguments, the suite's options included")
    return ab


def run(args: argparse.Namespace) -> int:
    """Run the job and print its verdicts; 1 when a case regressed."""
    from harness.cli.common import UsageError
    from harness.results.paired import paired_rows
    from harness.results.storage import check_run_name, save_run
    from harness.results.tolerances import parse_tolerances
    from harness.scale.ab import ABError, arms, check_pytest_args, run_rounds

    began = time.monotonic()
    tolerances = parse_tolerances(args.fail_on)
    pytest_args = list(args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args)
    try:
        check_run_name(f"{args.save}-base")
        check_pytest_args(pytest_args)
        if args.count_instructions:
            from harness.measure.instructions import INSTALL_HINT, missing_tool

            tool = missing_tool()
            if tool is not None:
                raise ABError(f"--count-instructions runs the cases under valgrind's callgrind, and {tool} is not on PATH: {INSTALL_HINT}")
        limit = 1 + args.effect / 100
        with arms(Path.cwd(), args.base) as job, tempfile.TemporaryDirectory(prefix="bench-ab-runs-") as work:
            print(f"ab: {job.describe(args.base)}; rounds alternate the order (A B, B A, …)", flush=True)

            def enough(done: Any) -> bool:
                rows = paired_rows(done.base, done.head, tolerances, TIMED)
                return all(row.detectable <= limit for row in rows)

            done = run_rounds(job, pytest_args, work=Path(work), count_args=["--count-instructions"] if args.count_instructions else [],
                              rounds=args.rounds, budget_s=args.budget, enough=enough)
            rows = paired_rows(done.base, done.head, tolerances, TIMED)
            if done.counted:
                rows += paired_rows([done.counted["base"]], [done.counted["head"]], tolerances, COUNTED)
            saved = [save_run(args.storage, done.base[-1].baseline_key, f"{args.save}-{arm}", _with_counts(path, done.counted.get(arm)))
                     for arm, path in (("base", done.base_files[-1]), ("head", done.head_files[-1]))]
    except ABError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.write(render(rows, done, time.monotonic() - began))
    for path in saved:
        print(f"ab: saved {path}")
    return 1 if any(row.verdict == "regression" for row in rows) else 0


# What an arm's counting run adds to the run ab saves for it.
_COUNT_KEYS = ("instructions", "instructions_by_function", "instructions_unavailable")


def _with_counts(path: Path, counted: Any) -> dict[str, Any]:
    """The arm's last timed round as written, each case with the arm's instruction count (its counting
    run's keys) when it was counted: one ordinary run holding both."""
    import json

    data: dict[str, Any] = json.loads(path.read_text())
    if counted is not None:
        for bench in data.get("benchmarks", []):
            case = counted.cases.get(bench.get("extra_info", {}).get("case_id"))
            if case is not None:
                bench["extra_info"].update({k: case.extra[k] for k in _COUNT_KEYS if k in case.extra})
    return data


def render(rows: list[Any], done: Any, seconds: float) -> str:
    """The verdict table, what each flagged case's instructions moved to, and the smallest change the job could see."""
    from harness.contract import METRICS as CONTRACT
    from harness.results.attribution import attribute, describe
    from harness.results.compare import BREAKDOWNS
    from harness.results.paired import smallest_detectable

    width = max([len(r.case_id) for r in rows] + [4])
    lines = [f"{'case':<{width}}  {'metric':<15} {'base':>12} {'head':>12} {'change':>9}  {'98% interval':>19} {'p':>7} {'detectable':>10}  verdict"]
    for r in rows:
        interval = f"{(r.low - 1) * 100:+.1f}%..{(r.high - 1) * 100:+.1f}%" if math.isfinite(r.high) and r.p is not None else "-"
        p_text = f"{r.p:.4f}" if r.p is not None else "exact"
        detectable = f"+{(r.detectable - 1) * 100:.1f}%" if math.isfinite(r.detectable) else "none"
        lines.append(f"{r.case_id:<{width}}  {r.metric:<15} {r.base:>12.6g} {r.head:>12.6g} {r.change():>9}  {interval:>19} {p_text:>7} {detectable:>10}  {r.verdict}")
        if r.verdict == "regression" and r.metric in BREAKDOWNS:
            # The counting runs hold the counts' functions; the last timed round of each arm its ops and modules.
            runs = (done.counted["base"], done.counted["head"]) if r.metric == "instructions" else (done.base[-1], done.head[-1])
            for key, entry in BREAKDOWNS[r.metric]:
                base_map, head_map = (run.cases[r.case_id].extra.get(key) for run in runs)
                if isinstance(base_map, dict) and isinstance(head_map, dict) and base_map and head_map:
                    moved = attribute(base_map, head_map, lower_is_better=CONTRACT[r.metric].better == "lower")
                    unit = "instructions" if r.metric == "instructions" else CONTRACT[r.metric].unit
                    whole = r.base if r.metric == "instructions" else sum(base_map.values())  # the count, or the profiled forward
                    lines += [f"    where ({entry}): {line}" for line in describe(moved, whole, unit)]
    regressions = sum(r.verdict == "regression" for r in rows)
    smallest = ", ".join(f"{metric} +{(ratio - 1) * 100:.1f}%" if math.isfinite(ratio) else f"{metric}: none (too few rounds)"
                         for metric, ratio in smallest_detectable(rows).items())
    lines.append(f"ab: {len(done.base)} timed rounds, {seconds:.0f} s in all; {'FAIL' if regressions else 'OK'}: {regressions} regression(s) in {len(rows)} verdicts; "
                 f"the smallest change this job could have seen in every case: {smallest or 'nothing judged'}")
    return "\n".join(lines) + "\n"
