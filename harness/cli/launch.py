"""``python -m harness launch``: the matrix as N shards on submitit (SLURM array tasks or local processes).

::

    python -m harness launch --executor slurm --shards 8 --partition gpu --gpus-per-task 1 \\
        --time 120 --max-parallel 4 --save main --gate main -- benchmarks -m train --devices cuda

One launch is one job folder (``--folder``, default ``.bench-launch/<UTC time>``) holding
``launch.json`` (the pytest arguments, the shard count, the executor), submitit's pickles and
logs (``jobs/NN/``), a snapshot of the storage's runs that every shard splits by (``costs/``,
so a ``--rerun`` splits as the launch did), each shard's run ``shard-K-of-N.json`` and the
merged run ``merged.json``.
The N shards are one submitit array job (``map_array``); shard K runs
``python -m pytest PYTEST_ARGS --shard=K/N --benchmark-json=<folder>/shard-K-of-N.json -p no:cacheprovider``
in the launch's working directory (under ``torch.distributed.run`` with ``--nproc-per-node``).
Nothing is written into the storage while shards run: the shards' runs stay in the job folder
and only the merged run is saved (``--save``), then gated (``--gate``).

A shard fails when pytest exits other than 0 or 1 (1: some case failed, which its run records)
or leaves no run file. Then nothing is merged: each failed shard is named with its logs and the
command that re-runs only those shards of the folder (``--rerun K``) and merges all of them.

Exit codes: 0 merged (and the gate passed), 1 the gate found regressions or some case failed,
2 a usage error, a failed shard, or runs that are not comparable. submitit is an optional
dependency (``pip install -e '.[launch]'``), imported only when a launch starts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.cli.common import DEFAULT_STORAGE, add_gate_options, add_storage, argtype
from harness.config.options import GATE_OPTIONS
from harness.config.parsers import positive_int, run_name
from harness.errors import SettingError
from harness.files import write_atomic
from harness.results.runs import Run, RunError, resolve_run_id
from harness.runtime import progress
from harness.scale.launch import (
    COSTS_DIR,
    DEFAULT_TIME_MIN,
    EXECUTORS,
    LAUNCH_FILE,
    MERGED_FILE,
    MISSING_SUBMITIT,
    SLURM_ONLY,
    USAGE_ERROR,
    LaunchError,
    LaunchPlan,
    ShardTask,
    check_pytest_args,
    has_run_file,
    log_tail,
    run_file,
    run_shard,
    run_shards,
    shard_list,
    snapshot_costs,
)
from harness.settings import Settings


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``launch`` verb to ``python -m harness``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "launch", help="run the matrix as N shards (SLURM array tasks or local processes), merge, save and gate",
        description="Run `pytest PYTEST_ARGS` as N shards through submitit, merge the shards' runs, save and gate the merged run.",
    )
    parser.add_argument("--executor", choices=EXECUTORS, required=True, help="slurm: one array task per shard; local: processes on this machine")
    parser.add_argument("--shards", type=argtype(lambda t: positive_int(t, "--shards")), metavar="N", help="number of shards (required unless --rerun)")
    parser.add_argument("--folder", type=Path, metavar="DIR", help="the job folder: logs, launch.json, shard runs (default: .bench-launch/<UTC time>)")
    parser.add_argument("--rerun", type=argtype(_shard_list), metavar="K[,K...]",
                        help="re-run only these shards of --folder with its saved pytest arguments, then merge every shard of it")
    parser.add_argument("--save", type=argtype(run_name), metavar="NAME", help="save the merged run in the storage as NNNN_NAME.json")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the merged run to FILE")
    add_storage(parser, "saved runs folder for --save and --gate")
    parser.add_argument("--gate", metavar="BASELINE", help="gate the merged run against BASELINE (a run id in the storage or a file)")
    add_gate_options(parser, keep_text=True)  # the same names and parsers as compare's and pytest's; the text kept for --rerun hints
    parser.add_argument("--time", type=argtype(lambda t: positive_int(t, "--time")), default=DEFAULT_TIME_MIN, metavar="MINUTES",
                        help=f"wall-clock limit of each shard (default: {DEFAULT_TIME_MIN})")
    parser.add_argument("--max-parallel", type=argtype(lambda t: positive_int(t, "--max-parallel")), metavar="N",
                        help="shards running at once (SLURM: the array's %%N; local: processes) (default: all)")
    parser.add_argument("--gpus-per-task", type=argtype(lambda t: positive_int(t, "--gpus-per-task")), metavar="N",
                        help="GPUs per shard (local: the first N GPUs; unset: the GPUs this process sees) (default: unset)")
    parser.add_argument("--nproc-per-node", type=argtype(lambda t: positive_int(t, "--nproc-per-node")), metavar="N",
                        help="run each shard's pytest under torchrun with N processes (DDP training cases) (default: unset)")
    slurm = parser.add_argument_group("SLURM (--executor slurm)")
    slurm.add_argument("--partition", metavar="NAME", help="SLURM partition (default: unset)")
    slurm.add_argument("--cpus-per-task", type=argtype(lambda t: positive_int(t, "--cpus-per-task")), metavar="N", help="CPUs per shard (default: unset)")
    slurm.add_argument("--account", metavar="NAME", help="SLURM account (default: unset)")
    slurm.add_argument("--qos", metavar="NAME", help="SLURM quality of service (default: unset)")
    parser.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="pytest's arguments, after --: the selection every shard splits")
    return parser


def _shard_list(text: str) -> tuple[int, ...]:
    values = tuple(positive_int(part, "--rerun") for part in text.split(",") if part.strip())
    if not values:
        raise SettingError(f"--rerun wants shard numbers such as 2 or 1,3, got {text!r}")
    return tuple(sorted(set(values)))


def run(args: argparse.Namespace) -> int:
    """Launch (or re-run shards of) a sharded session; the exit code (see the module docstring)."""
    try:
        return _launch(args)
    except (LaunchError, SettingError, RunError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def _launch(args: argparse.Namespace) -> int:
    plan, folder, indices = _plan(args)
    _check_executor(args)
    if args.gate:
        _check_gate_ref(args.gate, args.storage)
    try:
        import submitit  # noqa: F401  (optional: the launch extra)
    except ImportError:
        raise LaunchError(MISSING_SUBMITIT) from None
    if not args.rerun:
        folder.mkdir(parents=True, exist_ok=True)
        snapshot_costs(args.storage, folder / COSTS_DIR)
        plan.write(folder)
    for index in indices:  # a re-run shard's earlier run (of a failed attempt) must not be merged
        run_file(folder, index, plan.shards).unlink(missing_ok=True)
    env: tuple[tuple[str, str | None], ...] = ()
    if args.executor == "local" and args.gpus_per_task is None:
        # submitit's local executor hides every GPU unless asked for some: keep what this process sees.
        env = (("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES")),)
    tasks = [plan.task(folder, index, env) for index in indices]
    print(f"launch: shard(s) {shard_list(indices)} of {plan.shards} on {args.executor}, job folder {folder}", flush=True)
    print(f"launch: shard {tasks[0].index} runs {shlex.join(tasks[0].command)}", flush=True)
    with progress.show(progress.stderr_terminal()):  # a bar with the ETA on a terminal, nothing in CI or a log
        outcomes = run_shards(tasks, lambda batch: _submit(args, folder, batch), window=args.max_parallel if args.executor == "local" else None,
                              cancel=args.executor == "local")
    failed = [o.index for o in outcomes if not o.ok]
    if failed:
        for outcome in (o for o in outcomes if not o.ok):
            print(f"shard {outcome.index}/{outcome.count} failed: {outcome.reason()}")
            print(f"  stdout: {outcome.stdout}")
            print(f"  stderr: {outcome.stderr}")
            for line in log_tail(outcome.stderr) or log_tail(outcome.stdout):
                print(f"  | {line}")
        sys.stdout.flush()
        raise LaunchError(f"{len(failed)} of {plan.shards} shard(s) failed ({shard_list(failed)}); nothing merged. "
                          f"Re-run them and merge: {rerun_command(args, folder, sorted(failed))}")
    return collect(plan, folder, args)


def _plan(args: argparse.Namespace) -> tuple[LaunchPlan, Path, list[int]]:
    """The launch record, the job folder and the shards to run, all checked before anything runs."""
    if args.rerun:
        if args.folder is None:
            raise LaunchError("--rerun needs --folder DIR, the job folder of the launch whose shards it re-runs")
        if args.pytest_args:
            raise LaunchError(f"--rerun runs the pytest arguments saved in {args.folder / LAUNCH_FILE}; pass none after --")
        folder = args.folder.resolve()
        plan = LaunchPlan.read(folder)
        if args.shards is not None and args.shards != plan.shards:
            raise LaunchError(f"--shards {args.shards}: the launch in {folder} has {plan.shards} shards")
        if args.nproc_per_node is not None and args.nproc_per_node != plan.nproc_per_node:
            raise LaunchError(f"--nproc-per-node {args.nproc_per_node}: the launch in {folder} ran {plan.nproc_per_node or 'plain pytest'}")
        outside = [k for k in args.rerun if k > plan.shards]
        if outside:
            raise LaunchError(f"--rerun {shard_list(outside)}: the launch in {folder} has shards 1 to {plan.shards}")
        indices = list(args.rerun)
        missing = [k for k in range(1, plan.shards + 1) if k not in indices and not has_run_file(run_file(folder, k, plan.shards))]
        if missing:
            raise LaunchError(f"shard(s) {shard_list(missing)} of {folder} have no run either: re-run them too "
                              f"(--rerun {','.join(str(k) for k in sorted({*indices, *missing}))})")
        return plan, folder, indices
    if args.shards is None:
        raise LaunchError("--shards N is required (or --rerun K with the --folder of an earlier launch)")
    check_pytest_args(args.pytest_args, args.nproc_per_node)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = (args.folder or Path(".bench-launch") / stamp).resolve()
    if (folder / LAUNCH_FILE).exists():
        raise LaunchError(f"{folder} already holds a launch: re-run its shards with --rerun K, or pass another --folder")
    plan = LaunchPlan(tuple(args.pytest_args), args.shards, args.executor, args.nproc_per_node, str(Path.cwd()), sys.executable,
                      dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return plan, folder, list(range(1, args.shards + 1))


def _check_executor(args: argparse.Namespace) -> None:
    if args.executor == "local":
        given = [f"--{name.replace('_', '-')}" for name in SLURM_ONLY if getattr(args, name) is not None]
        if given:
            raise LaunchError(f"{', '.join(given)}: SLURM option(s), which --executor local would ignore; drop them or use --executor slurm")
        return
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
    if missing:
        raise LaunchError(f"--executor slurm: {' and '.join(missing)} not found on PATH; launch from a SLURM login node, or use --executor local")


def _check_gate_ref(ref: str, storage: Path) -> None:
    """Fail before any shard runs when ``--gate`` names no run (the machine is known only after the merge)."""
    if Path(ref).is_file():
        return
    if ref.endswith(".json"):
        raise LaunchError(f"--gate {ref}: no such file")
    machines: list[str | None] = [None]  # a <machine>/<id> names its machine folder itself
    if "/" not in ref:
        machines = [p.name for p in sorted(storage.iterdir()) if p.is_dir()] if storage.is_dir() else []
    for machine in machines:
        try:
            resolve_run_id(ref, storage, machine=machine)
            return
        except RunError:
            continue
    try:
        resolve_run_id(ref, storage)
    except RunError as exc:
        raise LaunchError(f"--gate: {exc}") from None


def _submit(args: argparse.Namespace, folder: Path, tasks: Sequence[ShardTask]) -> list[Any]:
    """Submit ``tasks`` as one array job; each submission gets its own submitit folder
    (local job ids are process ids, which a later submission may reuse)."""
    import submitit

    jobs_root = folder / "jobs"
    number = 1 + sum(1 for p in jobs_root.iterdir() if p.is_dir()) if jobs_root.is_dir() else 1
    executor = submitit.AutoExecutor(folder=jobs_root / f"{number:02d}", cluster=args.executor)
    parameters: dict[str, Any] = {"name": "backbone-bench", "timeout_min": args.time}
    if args.executor == "slurm":
        parameters.update(cpus_per_task=args.cpus_per_task, slurm_partition=args.partition, slurm_gpus_per_task=args.gpus_per_task,
                          slurm_account=args.account, slurm_qos=args.qos, slurm_array_parallelism=args.max_parallel)
    else:
        parameters.update(gpus_per_node=args.gpus_per_task)
    executor.update_parameters(**{key: value for key, value in parameters.items() if value is not None})
    return list(executor.map_array(run_shard, tasks))


def collect(plan: LaunchPlan, folder: Path, args: argparse.Namespace) -> int:
    """Merge every shard's run of ``folder``, write ``merged.json``, save (``--save``), write
    ``--json``, and gate (``--gate``): the gate's exit code, else 1 when a case failed (as pytest) or the
    storage refused the run (it is then in a fallback file), else 0."""
    from harness.results.merge import merge_runs
    from harness.results.publish import UnwritableRun, publish_run

    files = [run_file(folder, k, plan.shards) for k in range(1, plan.shards + 1)]
    doc = merge_runs([str(path) for path in files], args.storage)
    baseline, code = _baseline(doc, args)
    merged = folder / MERGED_FILE
    try:
        published = publish_run(doc, storage=args.storage, save=args.save, json_path=merged, baseline=baseline, gate=_gate_settings(args))
    except UnwritableRun as exc:  # a NaN or Infinity in a shard's run
        raise LaunchError(f"{exc}; re-run the shard that recorded it") from None
    cases = len(doc.get("benchmarks", [])) + len(doc.get("backbone_bench", {}).get("failed", []))
    print(f"merged {cases} case(s) from {plan.shards} shard(s) into {merged}")
    for line in published.lines:  # killed saves recovered, or where a refused run went and how to move it
        print(line)
    if published.saved is not None:
        print(f"saved the merged run to {published.saved}")
    if args.json is not None:
        write_atomic(args.json, lambda tmp: shutil.copyfile(merged, tmp))
        print(f"wrote the merged run to {args.json}")
    for line in published.gate_lines:
        print(line)
    code = code or published.code
    failed = [str(f.get("extra_info", {}).get("case_id")) for f in doc.get("backbone_bench", {}).get("failed", [])
              if f.get("extra_info", {}).get("status") == "failed"]
    if failed:  # the merged run records them; like pytest, they fail the launch
        print(f"{len(failed)} case(s) failed: {', '.join(failed)}")
    return code or (1 if failed or published.refused else 0)


def _baseline(doc: dict[str, Any], args: argparse.Namespace) -> tuple[Run | None, int]:
    """The ``--gate`` baseline on the merged run's machine, or (None, exit code) when it cannot be read."""
    from harness.results.gate import NOT_COMPARABLE, load_baseline

    if not args.gate:
        return None, 0
    try:
        return load_baseline(args.gate, args.storage, str(doc["machine_info"]["baseline_key"])), 0
    except ValueError as exc:
        print(f"backbone-bench gate: error: {exc}")
        return None, NOT_COMPARABLE


def _gate_settings(args: argparse.Namespace) -> Settings:
    """The gate's options as pytest's ``--gate`` would parse them."""
    from harness.config.options import default_settings

    return default_settings(**{o.field: getattr(args, o.field) if o.flag else o.parse(getattr(args, o.field)) for o in GATE_OPTIONS})


def rerun_command(args: argparse.Namespace, folder: Path, shards: Sequence[int]) -> str:
    """The command that re-runs ``shards`` of ``folder`` with this launch's options and merges them all."""
    words = ["python", "-m", "harness", "launch", "--executor", args.executor, "--folder", str(folder), "--rerun", ",".join(map(str, shards))]
    for flag, value in (("--save", args.save), ("--json", args.json), ("--partition", args.partition), ("--gpus-per-task", args.gpus_per_task),
                        ("--cpus-per-task", args.cpus_per_task), ("--max-parallel", args.max_parallel), ("--account", args.account),
                        ("--qos", args.qos), ("--gate", args.gate)):
        if value is not None:
            words += [flag, str(value)]
    if args.time != DEFAULT_TIME_MIN:
        words += ["--time", str(args.time)]
    if args.storage != DEFAULT_STORAGE:
        words += ["--storage", str(args.storage)]
    for option in GATE_OPTIONS if args.gate else ():
        value = getattr(args, option.field)
        if option.flag and value:
            words.append(f"--{option.name}")
        elif not option.flag and value != option.default:
            words += [f"--{option.name}", str(value)]
    return shlex.join(words)
