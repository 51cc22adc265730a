"""Launching the matrix as N shards on submitit: the job folder, each shard's pytest command, waiting.

The pieces ``python -m harness launch`` (:mod:`harness.cli.launch`) puts together: a
:class:`LaunchPlan` written to ``launch.json`` in the job folder, one :class:`ShardTask` per
shard (``python -m pytest ... --shard=K/N`` in the launch's working directory), the storage's
runs snapshot every shard splits by (``costs/``), and :func:`run_shards`, which submits them,
polls, and reports each shard's :class:`ShardOutcome`. submitit is imported only when a launch
starts (the ``launch`` extra).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from harness.runtime.progress import task as progress_task

EXECUTORS = ("local", "slurm")


LAUNCH_FILE = "launch.json"


MERGED_FILE = "merged.json"




# A shard's wall-clock limit: SLURM's partitions need one (submitit's own default is 5 minutes,
# too short for a shard), and locally it bounds a hung shard. An hour covers the smoke matrix many times.
DEFAULT_TIME_MIN = 60


USAGE_ERROR = 2


# pytest's exit codes that leave a usable run: 0 every case passed, 1 some case failed (recorded).
USABLE_EXITS = (0, 1)


_EXIT_MEANING = {2: "interrupted", 3: "an internal error", 4: "a usage error", 5: "no tests collected"}


# Polling reads a file (SLURM) or polls a child process (local): cheap. A line every minute
# while nothing finishes, so a long queue never looks like a hang.
POLL_S = 1.0


HEARTBEAT_S = 60.0


MISSING_SUBMITIT = "python -m harness launch needs submitit: pip install -e '.[launch]'"


# Options launch sets for each shard, or does itself for the merged run: refused after --.
_OWNED = {
    "--shard": "launch gives each shard its own --shard K/N; choose the count with launch --shards N",
    "--benchmark-save": "shards write into the job folder and launch saves the merged run: use launch --save NAME",
    "--benchmark-autosave": "shards write into the job folder and launch saves the merged run: use launch --save NAME",
    "--benchmark-json": "each shard writes its run into the job folder: use launch --json FILE for the merged run",
    "--gate": "a shard holds part of the cases: gate the merged run with launch --gate BASELINE",
    "--benchmark-storage": "shards split by the durations of launch's own storage: use launch --storage DIR",
}


COSTS_DIR = "costs"


SLURM_ONLY = ("partition", "cpus_per_task", "account", "qos")


class LaunchError(Exception):
    """A launch that cannot start or go on; the message is one line with the fix."""


def check_pytest_args(pytest_args: Sequence[str], nproc_per_node: int | None = None) -> None:
    """Refuse the pytest options launch owns (``--shard``, saving, ``--gate``), and xdist's
    ``-n`` under ``--nproc-per-node``; :class:`LaunchError` names the launch option to use."""
    for arg in pytest_args:
        name = arg.split("=", 1)[0]
        if name in _OWNED:
            raise LaunchError(f"{name} after --: {_OWNED[name]}")
        if nproc_per_node is not None and (name == "--numprocesses" or (arg.startswith("-n") and not arg.startswith("--"))):
            raise LaunchError(
                f"{arg} after --: pytest-xdist workers cannot run under --nproc-per-node {nproc_per_node} "
                "(torchrun starts the processes); drop -n/--numprocesses or --nproc-per-node"
            )


def run_file(folder: Path, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` writes its run."""
    return folder / f"shard-{index}-of-{count}.json"


def has_run_file(path: Path) -> bool:
    """Whether a shard left a run at ``path``. pytest-benchmark before 5.3 creates the
    ``--benchmark-json`` file when it parses the option: a session that died leaves it empty."""
    return path.is_file() and path.stat().st_size > 0


def shard_command(pytest_args: Sequence[str], index: int, count: int, run_path: Path, *,
                  nproc_per_node: int | None = None, python: str = sys.executable) -> list[str]:
    """The command of shard ``index`` of ``count``: pytest, or torchrun running pytest on
    ``nproc_per_node`` processes (``--standalone`` picks a free port, so shards on one node do not collide)."""
    runner = [python, "-m", "pytest"]
    if nproc_per_node is not None:
        runner = [python, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc_per_node), "-m", "pytest"]
    return [*runner, *pytest_args, f"--shard={index}/{count}", f"--benchmark-json={run_path}", "-p", "no:cacheprovider"]


@dataclass(frozen=True)
class ShardTask:
    """One array task: a shard's command, where it runs, and the environment it changes
    (a ``None`` value removes the variable)."""

    index: int
    count: int
    command: tuple[str, ...]
    cwd: str
    run_file: str
    env: tuple[tuple[str, str | None], ...] = ()


def run_shard(task: ShardTask) -> tuple[int, float]:
    """Run a shard's pytest (in the submitit task; its output goes to the task's log):
    ``(exit code, seconds)``."""
    env = dict(os.environ)
    for key, value in task.env:
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    print(f"backbone-bench launch: shard {task.index}/{task.count} in {task.cwd}: {shlex.join(task.command)}", flush=True)
    start = time.monotonic()
    code = subprocess.call(list(task.command), cwd=task.cwd, env=env)
    return code, time.monotonic() - start


@dataclass(frozen=True)
class LaunchPlan:
    """What ``launch.json`` records, so ``--rerun`` runs a shard exactly as the launch did."""

    pytest_args: tuple[str, ...]
    shards: int
    executor: str
    nproc_per_node: int | None
    cwd: str
    python: str
    created: str

    def task(self, folder: Path, index: int, env: tuple[tuple[str, str | None], ...] = ()) -> ShardTask:
        path = run_file(folder, index, self.shards)
        # Every shard, a re-run one too, splits by the storage as it was at launch (snapshot_costs).
        args = (*self.pytest_args, f"--benchmark-storage=file://{folder / COSTS_DIR}")
        command = shard_command(args, index, self.shards, path, nproc_per_node=self.nproc_per_node, python=self.python)
        return ShardTask(index, self.shards, tuple(command), self.cwd, str(path), env)

    def write(self, folder: Path) -> None:
        from harness.results.storage import write_new

        write_new(folder / LAUNCH_FILE, json.dumps({**asdict(self), "pytest_args": list(self.pytest_args)}, indent=2) + "\n")

    @classmethod
    def read(cls, folder: Path) -> LaunchPlan:
        path = folder / LAUNCH_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{**data, "pytest_args": tuple(data["pytest_args"])})
        except FileNotFoundError:
            raise LaunchError(f"--rerun: {path} does not exist; --folder must name the job folder of an earlier launch") from None
        except (ValueError, TypeError, KeyError) as exc:
            raise LaunchError(f"--rerun: {path} is not a launch record ({exc})") from None


def snapshot_costs(storage: Path, target: Path) -> int:
    """Copy the storage's run files into the job folder; the number copied.

    A shard splits the selection by the durations stored in its ``--benchmark-storage``
    (:mod:`harness.scale.shards`). A run saved there between the launch and a ``--rerun`` would change
    the split, and the merge would refuse the re-run shard; the snapshot keeps every shard of a
    launch on the same costs.
    """
    copied = 0
    for path in sorted(storage.glob("*/[0-9][0-9][0-9][0-9]_*.json")) if storage.is_dir() else []:
        destination = target / path.parent.name / path.name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)
        copied += 1
    target.mkdir(parents=True, exist_ok=True)
    return copied


@dataclass(frozen=True)
class ShardOutcome:
    """How a shard ended: pytest's exit code (``None``: the task died without one) and its run file."""

    index: int
    count: int
    exit_code: int | None
    seconds: float
    has_run: bool
    stdout: Path
    stderr: Path
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code in USABLE_EXITS and self.has_run

    def reason(self) -> str:
        """Why the shard failed, e.g. ``exit 3, an internal error``."""
        if self.exit_code is None:
            return self.error
        if self.exit_code < 0:
            return f"pytest killed by signal {-self.exit_code}"
        if self.exit_code not in USABLE_EXITS:
            meaning = _EXIT_MEANING.get(self.exit_code)
            return f"exit {self.exit_code}" + (f", {meaning}" if meaning else "")
        return f"exit {self.exit_code} but no run file"

    def line(self) -> str:
        """The progress line, e.g. ``shard 2/3 done (exit 0, 41 s)``."""
        where = f"shard {self.index}/{self.count}"
        if self.ok:
            note = ", some cases failed" if self.exit_code == 1 else ""
            return f"{where} done (exit {self.exit_code}{note}, {self.seconds:.0f} s)"
        return f"{where} failed ({self.reason()}; {self.seconds:.0f} s)"


def run_shards(tasks: Sequence[ShardTask], submit: Callable[[Sequence[ShardTask]], Sequence[Any]], *,
               window: int | None = None, out: TextIO | None = None, cancel: bool = True,
               poll_s: float = POLL_S, heartbeat_s: float = HEARTBEAT_S) -> list[ShardOutcome]:
    """Submit ``tasks`` (all at once, or ``window`` at a time as earlier ones finish), print a
    line as each finishes and one a minute while none does, and return their outcomes in order.

    ``submit`` returns one submitit job per task. On Ctrl-C the running jobs are cancelled when
    ``cancel`` (local processes), else named (cluster jobs outlive the launcher).
    """
    out = out or sys.stdout
    queue = list(tasks)
    running: dict[int, tuple[ShardTask, Any, float]] = {}
    done: dict[int, ShardOutcome] = {}
    start = last_line = time.monotonic()
    with progress_task("shards", total=len(tasks), unit="shard") as advance:
        try:
            while queue or running:
                free = len(queue) if window is None else window - len(running)
                if queue and free > 0:
                    batch, queue = queue[:free], queue[free:]
                    jobs = submit(batch)
                    now = time.monotonic()
                    running.update({task.index: (task, job, now) for task, job in zip(batch, jobs, strict=True)})
                    ids = ", ".join(f"{task.index} as job {job.job_id}" for task, job in zip(batch, jobs, strict=True))
                    _say(out, f"submitted shard {ids}")
                for index, (task, job, since) in list(running.items()):
                    if job.done():
                        del running[index]
                        done[index] = _outcome(task, job, time.monotonic() - since)
                        _say(out, done[index].line())
                        advance(1)
                        last_line = time.monotonic()
                if running and time.monotonic() - last_line >= heartbeat_s:
                    states = ", ".join(f"shard {i} {_state(job)}" for i, (_, job, _) in sorted(running.items()))
                    _say(out, f"waiting: {states}; {len(done)} of {len(tasks)} done, {(time.monotonic() - start) / 60:.0f} min")
                    last_line = time.monotonic()
                if running:
                    time.sleep(poll_s)
        except KeyboardInterrupt:
            jobs_left = [job for _, job, _ in running.values()]
            if cancel:
                for job in jobs_left:
                    job.cancel(check=False)
                raise LaunchError(f"interrupted; cancelled shard(s) {shard_list(running)}") from None
            ids = " ".join(sorted({str(job.job_id).split("_")[0] for job in jobs_left}))
            raise LaunchError(f"interrupted; shard(s) {shard_list(running)} still run as job(s) {ids} (scancel {ids} to stop them)") from None
        return [done[task.index] for task in tasks]


def _outcome(task: ShardTask, job: Any, waited: float) -> ShardOutcome:
    from submitit.core.utils import FailedJobError, UncompletedJobError

    has_run = has_run_file(Path(task.run_file))
    try:
        code, seconds = job.result()
    except (FailedJobError, UncompletedJobError):
        # The task died without a result: killed, out of time or memory, a lost node.
        return ShardOutcome(task.index, task.count, None, waited, has_run, job.paths.stdout, job.paths.stderr,
                       f"the task ended without an exit code (state {_state(job)})")
    return ShardOutcome(task.index, task.count, int(code), float(seconds), has_run, job.paths.stdout, job.paths.stderr)


def _state(job: Any) -> str:
    try:
        return str(job.state)
    except Exception:  # the scheduler's status command failed; the next poll retries
        return "UNKNOWN"


def _say(out: TextIO, line: str) -> None:
    print(line, file=out, flush=True)


def shard_list(indices: Any) -> str:
    return ", ".join(str(i) for i in sorted(indices))


def log_tail(path: Path, lines: int = 3) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    # submitit's own INFO lines close every log; the shard's last words come before them.
    return [line for line in text.splitlines() if line.strip() and not line.startswith("submitit ")][-lines:]
