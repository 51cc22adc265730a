"""Instructions per forward, counted under valgrind's callgrind: a near-exact cost that a busy machine does not move.

Wall time on a shared 2-core VM moves 12-18 % from process to process; callgrind counts the instructions
the CPU executes, which repeat to well under 1 % whatever else the machine runs (CodSpeed's and PyTorch's
own CI gates count them for that reason). What they cannot see: GPU kernels, memory stalls, cache misses,
frequency and SIMD width (an AVX-512 kernel executes fewer, wider instructions than its AVX2 twin, so
counts compare only within one CPU capability).

One :class:`InstructionCounter` per session starts one worker process under valgrind
(:mod:`harness.measure.callgrind_worker`) with instrumentation off, so importing torch is paid once at
translation speed; each case asks it for its count over a pipe.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

# Forwards collected per case: two counts of one forward in one process agree to 0.02 % here, and
# across processes to 0.22-0.53 % (docs/latency/instructions.md); two average away a first-call path torch may still take.
FORWARDS = 2

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


class InstructionCounter:
    """The session's counting process: started at the first :meth:`count`, ended by :meth:`close`."""

    def __init__(self, forwards: int = FORWARDS) -> None:
        self.forwards = forwards
        self._proc: subprocess.Popen[str] | None = None
        self._answers: IO[str] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._stderr: IO[bytes] | None = None

    def _start(self, out: Path) -> None:
        read_fd, write_fd = os.pipe()
        self._stderr = open(out / "valgrind.log", "wb")  # noqa: SIM115 - kept open for the worker's life
        # A fixed hash seed: dict and set layouts (and so the interpreter's instructions) repeat across
        # processes. This process's sys.path: a model class from the working directory (a team's own
        # module) unpickles there as it was imported here.
        env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
                   f"--callgrind-out-file={out}/callgrind.out.%p",
                   sys.executable, "-m", "harness.measure.callgrind_worker", str(write_fd)]
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                                      pass_fds=(write_fd,), env=env, text=True)
        os.close(write_fd)
        self._answers = os.fdopen(read_fd)
        self._read()  # {"ready": true} once torch and timm are imported and instrumentation is on

    def _read(self) -> dict[str, Any]:
        assert self._answers is not None and self._dir is not None
        line = self._answers.readline()
        if not line:
            log = (Path(self._dir.name) / "valgrind.log").read_text(errors="replace").strip().splitlines()
            raise CountError("the callgrind process ended: " + (log[-1] if log else "no output"))
        answer: dict[str, Any] = json.loads(line)
        return answer

    def count(self, model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int]]:
        """Instructions of one forward of ``model`` on ``example`` (a CPU fp32 model and batch), and the
        functions they ran in (:func:`top_functions`)."""
        if self._dir is None:
            self._dir = tempfile.TemporaryDirectory(prefix="bench-callgrind-")
        out = Path(self._dir.name)
        try:
            torch.save(model, out / "model.pt")
        except (pickle.PicklingError, AttributeError, TypeError) as exc:  # a local function or lambda among its attributes
            raise NotCountable(f"its model cannot be saved whole for the counting process ({type(exc).__name__}: {exc})") from None
        torch.save(example, out / "input.pt")
        if self._proc is None:
            self._start(out)
        assert self._proc is not None and self._proc.stdin is not None
        request = {"model": str(out / "model.pt"), "input": str(out / "input.pt"), "forwards": self.forwards}
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except BrokenPipeError:
            pass  # it ended: _read says why, from its log
        answer = self._read()
        if "error" in answer:
            raise CountError(f"the callgrind process could not run the model: {answer['error']}")
        dump = out / f"callgrind.out.{self._proc.pid}.{answer['part']}"
        lines = dump.read_text(errors="replace").splitlines()  # tens of MB for a large model: read once
        total, functions = summary(lines, dump), by_function(lines)
        dump.unlink()  # tens of MB for a large model: keep one at a time
        return total // self.forwards, top_functions(functions, self.forwards)

    def close(self) -> None:
        """End the worker and remove its dumps."""
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)  # it exits at once (os._exit): only a worker stuck in a request is killed
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        for handle in (self._answers, self._stderr):
            if handle is not None:
                handle.close()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

