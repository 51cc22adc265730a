"""Instructions per forward, counted under valgrind's callgrind: a near-exact cost that a busy machine does not move.

Wall time on a shared 2-core VM moves 12-18 % from process to process; callgrind counts the instructions
the CPU executes, which repeat to well under 1 % whatever else the machine runs (CodSpeed's and PyTorch's
own CI gates count them for that reason). What they cannot see: GPU kernels, memory stalls, cache misses,
frequency and SIMD width (an AVX-512 kernel executes fewer, wider instructions than its AVX2 twin, so
counts compare only within one CPU capability).

One :class:`InstructionCounter` per session starts worker processes under valgrind
(:mod:`harness.measure.callgrind_worker`) with instrumentation off, so importing torch is paid once per
worker at translation speed; each model is handed to a free worker over a pipe. A session counts its
cases before it times any (:func:`harness.kinds.inference.count_ahead`), one worker per core, so the
counting never runs beside a timed case and the cores count in parallel.
"""

from __future__ import annotations

import json
import os
import pickle
import selectors
import shutil
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

# Forwards collected per case, after one uncounted forward (first-call paths: oneDNN primitive creation,
# allocator growth). Two counted forwards in one process agree to 0.02 % here, and counts across
# processes to 0.22-0.53 % (docs/latency/instructions.md): a second counted forward would cost a third of a case's counting
# time and buy nothing the 1 % tolerance can see.
FORWARDS = 1

# Functions a record keeps: each at least 0.1 % of the count (below that a change cannot move the total
# past the 1 % gate by itself), at most 60 (~6 KB of JSON per case), names cut at 160 characters
# (template arguments make C++ names run to thousands).
FUNCTION_SHARE = 0.001
FUNCTIONS_KEPT = 60
NAME_CHARS = 160

INSTALL_HINT = "apt-get install valgrind (Debian/Ubuntu), dnf install valgrind, or brew install valgrind"


class CountError(RuntimeError):
    """The counting process ended or could not run the model: the case fails with this reason."""


class NotCountable(ValueError):
    """A model that cannot be handed to the counting process (``torch.save`` cannot pickle it whole)."""


def missing_tool() -> str | None:
    """Which of valgrind's commands the counter needs is not on PATH, or ``None``."""
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            return tool
    return None


def unsupported(device: str, runtime: str, precision: str) -> str | None:
    """Why a case gets no count (``None``: it does). Only eager fp32 CPU work is counted: a compiled
    graph would compile again under valgrind, an ONNX Runtime session is another program, and a
    half-precision CPU forward runs emulation paths no deployment ships."""
    if device != "cpu":
        return f"instructions are counted on the CPU only, not on {device}"
    if runtime != "eager":
        return f"instructions are counted for the eager runtime only, not {runtime}"
    if precision != "fp32":
        return f"instructions are counted at fp32 only, not {precision}"
    return None


def summary(lines: list[str], dump: Path) -> int:
    """The ``summary:`` line of a callgrind dump (its ``lines``): the instructions collected in that part."""
    for line in lines:
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise CountError(f"{dump} has no summary line: not a callgrind dump")


def by_function(lines: list[str]) -> dict[str, int]:
    """Each function's self instructions in a callgrind dump (the cost lines under its ``fn=``, less the
    inclusive costs of the calls it makes, which follow a ``calls=`` line). Names are compressed as
    ``(id) name`` on first use and ``(id)`` after, in ``fn=`` and ``cfn=`` lines alike."""
    names: dict[str, str] = {}
    costs: dict[str, int] = {}
    current: str | None = None
    after_call = False
    for line in lines:
        if line.startswith(("fn=", "cfn=")):
            name = _name(line.split("=", 1)[1], names)
            if line.startswith("fn="):
                current, after_call = name, False
        elif line.startswith("calls="):
            after_call = True
        elif line[:1].isdigit() or line[:1] in ("+", "-", "*"):
            if after_call:  # the call's inclusive cost: the callee's, not this function's
                after_call = False
                continue
            parts = line.split()
            if current is not None and len(parts) > 1:
                costs[current] = costs.get(current, 0) + int(parts[1])
    return costs


def _name(text: str, names: dict[str, str]) -> str:
    if not text.startswith("("):
        return text.strip()
    ident, _, name = text.partition(")")
    if name.strip():
        names[ident] = name.strip()
    return names.get(ident, f"{ident})")


# Code without a symbol is named by its address ("0x00000000e0f53000"): oneDNN's and MKL's JIT kernels,
# generated anew at another address in every process. One bucket, or the same kernel reads as one
# function gone and another come between two runs.
JIT_CODE = "JIT-generated code (no symbol)"


def top_functions(costs: dict[str, int], forwards: int) -> dict[str, int]:
    """Per forward, the functions with at least :data:`FUNCTION_SHARE` of the count, most first, at most
    :data:`FUNCTIONS_KEPT`: what a diff between two records needs to say where instructions went."""
    merged: dict[str, int] = {}
    for name, cost in costs.items():
        key = JIT_CODE if name.startswith("0x") and all(c in "0123456789abcdefx" for c in name.lower()) else name
        merged[key] = merged.get(key, 0) + cost
    costs = merged
    total = sum(costs.values()) or 1
    kept = sorted(((n, c) for n, c in costs.items() if c >= FUNCTION_SHARE * total), key=lambda item: -item[1])[:FUNCTIONS_KEPT]
    return {name[:NAME_CHARS]: cost // forwards for name, cost in kept}


@dataclass
class _Job:
    key: Hashable
    model: Path
    input: Path


@dataclass
class _Worker:
    """One process under callgrind: ``job`` is what it counts now (``None``: idle); ``ready`` once torch is imported."""

    proc: subprocess.Popen[str]
    answers: IO[str]
    log: Path
    ready: bool = False
    job: _Job | None = None


Result = tuple[int, dict[str, int]]


class InstructionCounter:
    """The session's counting processes: up to ``processes`` workers under callgrind, started as work
    arrives, ended by :meth:`close`.

    Work is handed over with :meth:`submit` (it returns at once; a worker counts it when one is free)
    and collected with :meth:`result`; :meth:`count` is both for one model. Counts do not depend on
    which worker made them: each request runs a forward uncounted first, and a worker keeps no state
    a forward reads from one request to the next (the A/A figures in the README are over processes).
    """

    def __init__(self, forwards: int = FORWARDS, processes: int = 1) -> None:
        if processes < 1:
            raise ValueError(f"processes must be at least 1, not {processes}")
        self.forwards, self.processes = forwards, processes
        self._workers: list[_Worker] = []
        self._queue: deque[_Job] = deque()
        self._done: dict[Hashable, Result | CountError] = {}
        self._jobs = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._broken: str | None = None

    # -- handing work over ------------------------------------------------------------------------

    def submit(self, key: Hashable, model: nn.Module, example: torch.Tensor) -> None:
        """Queue one forward of ``model`` on ``example`` (a CPU fp32 model and batch) under ``key``.
        Raises :class:`NotCountable` at once for a model that cannot be saved whole."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="bench-callgrind-")
        out = Path(self._dir.name)
        self._jobs += 1
        job = _Job(key, out / f"job{self._jobs}.model.pt", out / f"job{self._jobs}.input.pt")
        try:
            torch.save(model, job.model)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:  # a local function or lambda among its attributes
            job.model.unlink(missing_ok=True)
            raise NotCountable(f"its model cannot be saved whole for the counting process ({type(exc).__name__}: {exc})") from None
        torch.save(example, job.input)
        if self._broken is not None:
            self._finish(job, CountError(self._broken))
            return
        self._queue.append(job)
        self._dispatch()

    def pending(self, key: Hashable) -> bool:
        """Whether ``key`` was submitted and its result not yet taken."""
        return key in self._done or any(job.key == key for job in self._queue) or any(
            w.job is not None and w.job.key == key for w in self._workers)

    def result(self, key: Hashable) -> Result:
        """The count of ``key`` per forward and its functions (:func:`top_functions`), waiting for it;
        raises :class:`CountError` when its worker could not count it."""
        if not self.pending(key):
            raise KeyError(f"nothing was submitted under {key!r}")
        while key not in self._done:
            self._wait()
        answer = self._done.pop(key)
        if isinstance(answer, CountError):
            raise answer
        return answer

    def count(self, model: nn.Module, example: torch.Tensor) -> Result:
        """Instructions of one forward of ``model`` on ``example``, and the functions they ran in."""
        key = object()
        self.submit(key, model, example)
        return self.result(key)

    def wait_for_room(self) -> None:
        """Return once no more than one job per process waits unstarted: a caller that builds models to
        :meth:`submit` keeps that many on disk at most, not its whole list."""
        while len(self._queue) >= self.processes:
            self._wait()

    def wait_all(self) -> None:
        """Return once every submitted job is counted (or has failed)."""
        while self._queue or any(w.job is not None for w in self._workers):
            self._wait()

    # -- the workers --------------------------------------------------------------------------------

    def worker_command(self, out: Path, answers_fd: int) -> list[str]:
        """The command of one worker: :mod:`harness.measure.callgrind_worker` under callgrind, instrumentation
        off until it has imported torch, its dumps in ``out``, its answers on the descriptor ``answers_fd``."""
        return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
                f"--callgrind-out-file={out}/callgrind.out.%p",
                sys.executable, "-m", "harness.measure.callgrind_worker", str(answers_fd)]

    def _start(self) -> None:
        assert self._dir is not None
        out = Path(self._dir.name)
        read_fd, write_fd = os.pipe()
        log = out / f"valgrind{len(self._workers)}.log"
        # A fixed hash seed: dict and set layouts (and so the interpreter's instructions) repeat across
        # processes. This process's sys.path: a model class from the working directory (a team's own
        # module) unpickles there as it was imported here.
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        with open(log, "wb") as stderr:
            proc = subprocess.Popen(self.worker_command(out, write_fd), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr,
                                    pass_fds=(write_fd,), env=env, text=True)
        os.close(write_fd)
        self._workers.append(_Worker(proc, os.fdopen(read_fd), log))

    def _dispatch(self) -> None:
        """Hand queued jobs to ready idle workers, and start workers while jobs wait and room is left."""
        for worker in self._workers:
            if not self._queue:
                return
            if worker.ready and worker.job is None:
                self._send(worker, self._queue.popleft())
        starting = sum(1 for w in self._workers if not w.ready)
        while len(self._queue) > starting and len(self._workers) < self.processes:
            self._start()
            starting += 1

    def _send(self, worker: _Worker, job: _Job) -> None:
        assert worker.proc.stdin is not None
        worker.job = job
        request = {"model": str(job.model), "input": str(job.input), "forwards": self.forwards}
        try:
            worker.proc.stdin.write(json.dumps(request) + "\n")
            worker.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it ended: _wait reads the end and says why, from its log

    def _wait(self) -> None:
        """Wait for the next answer of any started worker and act on it."""
        busy = [w for w in self._workers if not w.ready or w.job is not None]
        if not busy:
            raise RuntimeError("waiting with no worker at work: a bug in the counter's bookkeeping")
        with selectors.DefaultSelector() as selector:
            for worker in busy:
                selector.register(worker.answers, selectors.EVENT_READ, worker)
            ready = [key.data for key, _ in selector.select()]
        for worker in ready:
            line = worker.answers.readline()  # one request at a time per worker: at most one line waits
            if not line:
                self._ended(worker)
                continue
            answer: dict[str, Any] = json.loads(line)
            if answer.get("ready"):
                worker.ready = True
            else:
                job, worker.job = worker.job, None
                assert job is not None
                self._finish(job, self._read(worker, job, answer))
        self._dispatch()

    def _read(self, worker: _Worker, job: _Job, answer: dict[str, Any]) -> Result | CountError:
        if "error" in answer:
            return CountError(f"the callgrind process could not run the model: {answer['error']}")
        dump = job.model.parent / f"callgrind.out.{worker.proc.pid}.{answer['part']}"
        lines = dump.read_text(errors="replace").splitlines()  # tens of MB for a large model: read once
        total, functions = summary(lines, dump), by_function(lines)
        dump.unlink()  # tens of MB for a large model: keep none
        return total // self.forwards, top_functions(functions, self.forwards)

    def _finish(self, job: _Job, answer: Result | CountError) -> None:
        job.model.unlink(missing_ok=True)
        job.input.unlink(missing_ok=True)
        self._done[job.key] = answer

    def _ended(self, worker: _Worker) -> None:
        """A worker's pipe closed: its job fails with the last line of its log. One that ended before it
        was ready could not start at all (valgrind or the interpreter refused): every waiting job fails
        with that reason, and so does all later work, rather than start another that ends the same way."""
        worker.proc.wait()
        worker.answers.close()
        self._workers.remove(worker)
        log = worker.log.read_text(errors="replace").strip().splitlines()
        reason = "the callgrind process ended: " + (log[-1] if log else "no output")
        if worker.job is not None:
            self._finish(worker.job, CountError(reason))
        if not worker.ready:
            self._broken = reason
            while self._queue:
                self._finish(self._queue.popleft(), CountError(reason))

    def close(self) -> None:
        """End the workers and remove their files."""
        for worker in self._workers:
            assert worker.proc.stdin is not None
            try:
                worker.proc.stdin.close()
            except BrokenPipeError:
                pass
        for worker in self._workers:
            try:
                worker.proc.wait(timeout=30)  # it exits at once (os._exit): only a worker stuck in a request is killed
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()
            worker.answers.close()
        self._workers.clear()
        self._queue.clear()
        self._done.clear()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
