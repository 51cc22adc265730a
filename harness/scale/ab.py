"""Base and head of a git repository measured on one machine in one job, in alternating processes.

The base's code is checked out at REF in a temporary worktree; the head is the working tree as it is
(uncommitted changes included, and said so). Each round starts one pytest process per arm, the order
turned every round (A B, B A, …), so what the machine does over the job lands on both arms alike.
:mod:`harness.results.paired` judges the rounds. Nothing in the repository changes: the worktree is
removed at the end, whatever happens, and each arm's rounds write into a temporary folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from harness.results.runs import Run, RunError, read_run_file

# Rounds before the job may stop early: the paired t-test has one degree of freedom per round after
# the first, and at 2 its one-sided 1 % critical value (6.96) makes every verdict "within noise".
MIN_ROUNDS = 3
# Rounds an open-ended job stops at whatever its spread: 30 pairs resolve a 5 % latency change at the
# 12-18 % per-process noise of a shared VM; more only buy what instruction counts give at once.
MAX_ROUNDS = 30
# pytest-benchmark's and the suite's own options that write or gate a run: ab writes each round's JSON
# itself and saves the arms with --save.
_OWNED = ("--benchmark-json", "--benchmark-save", "--benchmark-autosave", "--gate", "--shard", "-n", "--numprocesses")


class ABError(ValueError):
    """A job that cannot start or go on; one line naming the fix."""


@dataclass(frozen=True)
class Arms:
    """Where the two arms run: the repository's root and the folder the job was started in, per arm."""

    root: Path
    base_sha: str
    head_sha: str
    dirty: list[str]  # uncommitted changes of tracked files: the head arm measures them
    base_dir: Path
    head_dir: Path

    def describe(self, ref: str) -> str:
        head = f"{self.head_sha[:10]} + {len(self.dirty)} uncommitted change(s) ({', '.join(self.dirty[:3])}{', …' if len(self.dirty) > 3 else ''})" \
            if self.dirty else self.head_sha[:10]
        return f"base {self.base_sha[:10]} ({ref}, a worktree), head {head} (the working tree)"


@dataclass
class Rounds:
    """The runs of each arm, one per timed round, how long the rounds took, and each arm's counting run
    (``counted``: the round with ``count_args``, kept apart so its extra work times no round)."""

    base: list[Run] = field(default_factory=list)
    head: list[Run] = field(default_factory=list)
    base_files: list[Path] = field(default_factory=list)
    head_files: list[Path] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    counted: dict[str, Run] = field(default_factory=dict)


def _git(cwd: Path, *args: str, strip: bool = True) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise ABError("ab needs git on PATH (apt-get install git)") from None
    if done.returncode:
        raise ABError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"git {' '.join(args)} failed")
    return done.stdout.strip() if strip else done.stdout


def check_pytest_args(args: Sequence[str]) -> None:
    """Refuse the options ab owns, naming what to use instead."""
    for arg in args:
        name = arg.split("=", 1)[0]
        if name in _OWNED:
            raise ABError(f"{name}: ab writes each round's JSON and saves both arms itself (--save NAME); drop it from the pytest arguments")


@contextmanager
def arms(cwd: Path, ref: str) -> Iterator[Arms]:
    """The two arms of a job started in ``cwd``: the base checked out at ``ref`` in a temporary worktree
    (removed on exit), the head the working tree. :class:`ABError` outside a git repository or for an unknown REF."""
    if shutil.which("git") is None:
        raise ABError("ab needs git on PATH (apt-get install git)")
    probe = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, check=False)
    if probe.returncode:
        raise ABError(f"ab measures two commits of a git repository, and {cwd} is not inside one: run it from your repository (git init to make one)")
    root = Path(probe.stdout.strip())
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=root, capture_output=True, text=True, check=False)
    if found.returncode:
        raise ABError(f"--base {ref}: no such commit in {root} (a branch, tag or sha: git log --oneline lists them)")
    base_sha = found.stdout.strip()
    head_sha = _git(root, "rev-parse", "HEAD")
    # "XY path": two status columns and a space; the output is not stripped, or the first path loses a letter.
    dirty = [line[3:] for line in _git(root, "status", "--porcelain", "--untracked-files=no", strip=False).splitlines() if line.strip()]
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    tree = work / "base"
    _git(root, "worktree", "add", "--detach", "--quiet", str(tree), base_sha)
    try:
        relative = cwd.resolve().relative_to(root.resolve())
        yield Arms(root, base_sha, head_sha, dirty, tree / relative, cwd)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=root, capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def arm_command(arm_dir: Path, pytest_args: Sequence[str], json_path: Path) -> list[str]:
    """The pytest command of one arm's round. The suite's own checkout runs its own cases with its own code
    (its conftest loads its plugin and fixtures); any other repository runs the installed cases through
    ``python -m harness bench``, its own modules imported from the arm's folder."""
    own_suite = (arm_dir / "harness" / "__init__.py").is_file() and (arm_dir / "conftest.py").is_file()
    runner = ["-m", "pytest"] if own_suite else ["-m", "harness", "bench", "--"]
    return [sys.executable, *runner, *pytest_args, f"--benchmark-json={json_path}", "-p", "no:cacheprovider"]


def _run_arm(arm: str, arm_dir: Path, pytest_args: Sequence[str], json_path: Path, log: Path) -> Run:
    with open(log, "w") as out:
        done = subprocess.run(arm_command(arm_dir, pytest_args, json_path), cwd=arm_dir, stdout=out, stderr=subprocess.STDOUT, check=False)
    # pytest: 0 all passed, 1 some failed (a failed case is still a verdict: its record says so).
    if done.returncode not in (0, 1) or not json_path.is_file():
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-3:]
        what = {4: "a usage error", 5: "no case selected"}.get(done.returncode, f"exit {done.returncode}")
        raise ABError(f"the {arm} arm's pytest (in {arm_dir}) ended with {what}: {' | '.join(tail)}")
    try:
        return read_run_file(json_path)
    except RunError as exc:
        raise ABError(str(exc)) from None


def run_rounds(job: Arms, pytest_args: Sequence[str], *, work: Path, count_args: Sequence[str] = (), rounds: int | None,
               budget_s: float, enough: Callable[[Rounds], bool], say: Callable[[str], object] = print) -> Rounds:
    """With ``count_args``, first one counting run per arm (instruction counts repeat: one per arm is
    enough, and counting is no work to time beside); then timed rounds until ``rounds`` are done, or
    (``rounds=None``) until ``enough`` says the spread is small enough or the next round would pass
    ``budget_s``; at least :data:`MIN_ROUNDS`, at most :data:`MAX_ROUNDS`."""
    done = Rounds()
    start = time.monotonic()
    order = [("base", job.base_dir), ("head", job.head_dir)]
    if count_args:
        for arm, folder in order:
            done.counted[arm] = _run_arm(arm, folder, [*pytest_args, *count_args], work / f"{arm}-counted.json", work / f"{arm}-counted.log")
        say(f"ab: instructions counted in {time.monotonic() - start:.0f} s")
    index = 0
    while True:
        began = time.monotonic()
        for arm, folder in order if index % 2 == 0 else reversed(order):
            path = work / f"{arm}-{index + 1:03d}.json"
            run = _run_arm(arm, folder, pytest_args, path, work / f"{arm}-{index + 1:03d}.log")
            (done.base if arm == "base" else done.head).append(run)
            (done.base_files if arm == "base" else done.head_files).append(path)
        done.seconds.append(time.monotonic() - began)
        index += 1
        say(f"ab: round {index} done in {done.seconds[-1]:.0f} s")
        if rounds is not None:
            if index >= rounds:
                return done
            continue
        if index < MIN_ROUNDS:
            continue
        spent, next_round = time.monotonic() - start, max(done.seconds)
        if enough(done) or spent + next_round > budget_s or index >= MAX_ROUNDS:
            return done
