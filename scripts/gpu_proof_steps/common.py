"""What every proof step shares: its context (time left, figures, checks), the suite's pytest
entry point as a subprocess with its own timeout, and the run's records read back.

A step never parses pytest's options itself: :func:`suite_args` turns option names and values
into arguments through the suite's own option table (``harness.config.options.OPTIONS``), so a
renamed option or a bad value fails the step's dry run on a CPU, before any GPU time is spent.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
# Seconds a step keeps back from its cap to write its result after the last sub-run.
RESERVE_S = 5.0
# The least time worth starting a pytest session with: its start-up alone (torch, timm, fvcore,
# the plugin) takes ~10 s on a 16-core machine.
MIN_SESSION_S = 15.0
NO_CUDA = "no CUDA device"


class NoCuda(Exception):
    """Raised by :meth:`StepContext.require_cuda` on a machine without CUDA: the dry run ends there."""


@dataclass
class StepContext:
    """One step's run: where it writes, how long it has, and what it found.

    ``deadline`` is the wall-clock time (``time.time()``) at which the orchestrator kills the
    step. ``scale`` is the step's cap over its default cap (``--cap-scale`` or ``--cap``): the
    steps size their sub-runs' time shares with it. ``rehearse`` runs the step on the CPU at toy
    sizes (a developer's check of the code path, never a proof).
    """

    name: str
    raw: Path
    deadline: float
    scale: float = 1.0
    rehearse: bool = False
    started: float = field(default_factory=time.time)
    planned: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    not_proven: list[str] = field(default_factory=list)

    @property
    def device(self) -> str:
        return "cpu" if self.rehearse else "cuda"

    def remaining(self) -> float:
        """Seconds left for work: to the deadline, less what writing the result needs."""
        return self.deadline - time.time() - RESERVE_S

    def budget(self, share_s: float) -> float:
        """Seconds a sub-run may take: its share of the step (scaled), within what is left."""
        return max(0.0, min(share_s * self.scale, self.remaining()))

    def log(self, text: str) -> None:
        print(text, flush=True)

    def plan(self, key: str, value: Any) -> None:
        """Record something the step set up before it needed the GPU (a command, a path, a size)."""
        self.planned[key] = value

    def check(self, what: str, ok: bool, value: Any, target: str) -> None:
        """One pass/fail figure of the proof (saved at once: a step killed later keeps it)."""
        self.checks.append({"what": what, "ok": bool(ok), "value": value, "target": target})
        self.log(f"  check {'PASS' if ok else 'FAIL'}: {what}: {value} (target {target})")
        self.save("running")

    def unproven(self, text: str) -> None:
        self.not_proven.append(text)
        self.log(f"  not proven: {text}")
        self.save("running")

    def require_cuda(self) -> None:
        """End the dry run here on a machine without CUDA (unless rehearsing on the CPU)."""
        self.save("running")
        if self.rehearse:
            return
        import torch

        if not torch.cuda.is_available():
            raise NoCuda(NO_CUDA)

    def save(self, status: str, reason: str = "") -> Path:
        """Write ``result.json`` (atomically): what the orchestrator reads, also after a kill."""
        path = self.raw / "result.json"
        data = {
            "name": self.name, "status": status, "reason": reason, "seconds": round(time.time() - self.started, 1),
            "rehearsal": self.rehearse, "planned": self.planned, "figures": self.figures, "checks": self.checks,
            "not_proven": self.not_proven,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
        tmp.replace(path)
        return path


def suite_args(values: Mapping[str, str | bool | None]) -> list[str]:
    """``--name value`` (or ``--name`` for a flag) for each suite option, each value parsed by the
    option's own parser, the combination checked as the plugin checks it.

    Raises ``KeyError`` for an option the suite does not have and ``SettingError`` for a value it
    refuses; ``None`` and ``False`` leave an option out.
    """
    args, _ = _parsed(values)
    return args


def suite_settings(values: Mapping[str, str | bool | None]) -> Any:
    """The :class:`harness.settings.Settings` a session given ``values`` runs with (the
    repository's pytest.ini aside: pass every matrix key so it cannot leak in)."""
    _, settings = _parsed(values)
    return settings


def _parsed(values: Mapping[str, str | bool | None]) -> tuple[list[str], Any]:
    from harness.config.options import OPTIONS, settings_from

    by_name = {option.name: option for option in OPTIONS}
    args: list[str] = []
    texts: dict[str, str] = {}
    for name, value in values.items():
        option = by_name.get(name)
        if option is None:
            raise KeyError(f"--{name} is not a backbone-bench option (harness/config/options.py)")
        if value is None or value is False:
            continue
        if option.flag:
            args.append(f"--{name}")
            texts[option.ini] = "true"
        else:
            option.parse(str(value))
            args += [f"--{name}", str(value)]
            texts[option.ini] = str(value)
    return args, settings_from(lambda field: None, lambda ini: texts.get(ini), env={})


@dataclass
class PytestRun:
    """One session of the suite's real entry point, ``python -m pytest benchmarks``, and what it wrote."""

    label: str
    command: list[str]
    json_path: Path
    junit_path: Path
    env: dict[str, str]
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    skips: list[str] = field(default_factory=list)
    cases: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def shell(self) -> str:
        return shlex.join(self.command)

    def run(self, timeout_s: float) -> PytestRun:
        """Run the session (output into this step's log) and read back its JSON and JUnit files.

        On a timeout pytest and every process under it (xdist workers, compile workers) are
        killed; what was written before is still read. The session stays in the step's process
        group, so the orchestrator's kill at the step's cap reaches it too.
        """
        print(f"$ {self.shell}   # timeout {timeout_s:.0f} s", flush=True)
        start = time.monotonic()
        env = {**os.environ, **self.env}
        with subprocess.Popen(self.command, cwd=ROOT, env=env) as proc:
            try:
                self.returncode = proc.wait(timeout=max(1.0, timeout_s))
            except subprocess.TimeoutExpired:
                self.timed_out = True
                kill_tree(proc)
        self.seconds = round(time.monotonic() - start, 1)
        self._read_back()
        return self

    def _read_back(self) -> None:
        if self.junit_path.is_file():
            try:
                suite = ET.parse(self.junit_path).getroot()
                inner = suite.find("testsuite") if suite.tag != "testsuite" else None
                suite = inner if inner is not None else suite
                self.counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
                for case in suite.iter("testcase"):
                    skipped = case.find("skipped")
                    if skipped is not None:
                        self.skips.append(f"{case.get('name')}: {skipped.get('message', '')}"[:300])
            except ET.ParseError:
                pass  # a session killed while writing it
        if self.json_path.is_file():
            from harness.results.runs import RunError, read_run_file

            try:
                run = read_run_file(self.json_path)
            except RunError as exc:
                print(f"  could not read {self.json_path}: {exc}", flush=True)
                return
            self.cases = {
                case_id: {**case.extra, "status": case.status, "settings": dict(case.settings), "settings_digest": case.settings_digest}
                for case_id, case in run.cases.items()
            }

    def summary(self) -> dict[str, Any]:
        """What the step's result keeps of the session."""
        return {
            "command": self.shell, "returncode": self.returncode, "timed_out": self.timed_out, "seconds": self.seconds,
            "counts": self.counts, "cases_recorded": len(self.cases), "skips": self.skips[:20],
            "json": str(self.json_path),
        }

    def problem(self) -> str | None:
        """Why the session cannot count as proof (timed out, crashed, recorded nothing), or ``None``."""
        if self.timed_out:
            return f"pytest session {self.label!r} timed out after {self.seconds:.0f} s"
        if self.returncode not in (0, 1):  # 1: some case failed, which its record says
            return f"pytest session {self.label!r} exited {self.returncode} (usage error or crash; see the log)"
        if not self.cases:
            return f"pytest session {self.label!r} recorded no case"
        return None


def pytest_session(ctx: StepContext, label: str, selection: list[str], values: Mapping[str, str | bool | None],
                   env: Mapping[str, str] | None = None) -> PytestRun:
    """The command of one suite session, built and validated but not started."""
    json_path, junit_path = ctx.raw / f"{label}.json", ctx.raw / f"{label}.junit.xml"
    command = [sys.executable, "-m", "pytest", "benchmarks", "-q", "-rs", *selection, *suite_args(values),
               f"--benchmark-json={json_path}", f"--junitxml={junit_path}"]
    full_env = {
        # The source tree, not an install (the lent machine runs it as it was copied), and this
        # folder for the steps' own pytest plugin (gpu_proof_steps.worker_probe).
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(SCRIPTS), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "BACKBONE_BENCH_CHECKPOINTS": str(ctx.raw / "checkpoints"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    run = PytestRun(label, command, json_path, junit_path, full_env)
    ctx.plan(f"pytest {label}", run.shell)
    return run


def kill_tree(proc: subprocess.Popen[bytes], *, group: bool = False) -> int | None:
    """SIGTERM, then SIGKILL after 5 s, to ``proc`` and every process under it (found with psutil,
    a suite dependency), and to its whole process group when ``group``; its exit status."""
    try:
        import psutil

        below = psutil.Process(proc.pid).children(recursive=True)
    except Exception:  # noqa: BLE001 - no psutil, or the process is gone: the group kill remains
        below = []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in [proc.pid, *(p.pid for p in below)]:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if group:
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            return proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def gpu_facts() -> dict[str, Any]:
    """The GPU, driver-side versions and the math settings that decide which peak applies."""
    import torch

    if not torch.cuda.is_available():
        return {"cuda": False, "torch": torch.__version__}
    props = torch.cuda.get_device_properties(0)
    return {
        "cuda": True, "torch": torch.__version__, "cuda_runtime": torch.version.cuda, "gpu": torch.cuda.get_device_name(0),
        "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 2**30, 1), "device_count": torch.cuda.device_count(),
        "cudnn": torch.backends.cudnn.version(), **_tf32(torch),
    }


def _tf32(torch: Any) -> dict[str, bool | None]:
    """Whether fp32 convolutions and matmuls may run as TF32 (the legacy flags; ``None`` where a
    torch refuses them, e.g. after the new ``fp32_precision`` API was used)."""
    out: dict[str, bool | None] = {}
    for key, read in (("cudnn_allow_tf32", lambda: torch.backends.cudnn.allow_tf32), ("matmul_allow_tf32", lambda: torch.backends.cuda.matmul.allow_tf32)):
        try:
            out[key] = bool(read())
        except (AttributeError, RuntimeError):
            out[key] = None
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def ratio_band(value: float, low: float, high: float) -> bool:
    return low <= value <= high
