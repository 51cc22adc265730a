"""A/B through the whole path: run the real case, inject a change, run again with ``--gate``.

The injections wrap the backbone's forward (``harness.backbones.factory.create_backbone``), so the change
goes through the same timing, memory probe, JSON writer, storage and gate a real regression
would. The latency injection makes every call sleep for twice as long as its own forward took plus
20 ms, so the slowdown is at least 3x whatever else the machine is doing, and 20 ms more: the
baseline is timed in an earlier session, and on a 2-core machine running other tests beside it
the load moves by tens of percent between two sessions, and at times doubles (a 2x injection
once read "within noise" under such load), so a smaller injection could hide in that drift.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.projects import CONFTEST

ROOT = Path(__file__).resolve().parents[1]
INJECT = CONFTEST + '''
import os, time, torch, pytest
import harness.kinds.inference, harness.backbones.factory

_create = harness.backbones.factory.create_backbone

def _injected(name, **kw):
    model = _create(name, **kw)
    forward = model.forward
    if os.environ.get("BB_SLOWER"):
        def slower(x):
            start = time.perf_counter()
            out = forward(x)
            time.sleep(2 * (time.perf_counter() - start) + 0.02)
            return out
        model.forward = slower
    if os.environ.get("BB_BIGGER"):
        def bigger(x):
            ballast = torch.ones(4 * 2**20, dtype=torch.uint8)  # 4 MiB alive across the forward
            out = forward(x)
            return out + 0 * ballast[0]
        model.forward = bigger
    return model

harness.kinds.inference.create_backbone = _injected
'''
ARGS = ("--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cpu", "--bench-time", "0.5", "-p", "no:cacheprovider", "test_inference.py")


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    pytester.makeconftest(INJECT)
    pytester.makeini("[pytest]\naddopts = --benchmark-storage=file://baselines\n")
    pytester.makepyfile(test_inference=(ROOT / "benchmarks" / "test_inference.py").read_text())
    pytester.runpytest(*ARGS, "--benchmark-save=base").assert_outcomes(passed=1)
    return pytester


def _verdicts(result: pytest.RunResult) -> dict[str, str]:
    rows = {}
    for line in result.outlines:
        if line.startswith("inference/resnet18-cpu-bs1-32px-fp32"):
            parts = line.split()
            rows[parts[1]] = next(v for v in ("regression", "improvement", "within noise", "failed") if v in line)
    return rows


def test_a_doubled_latency_fails_the_gate(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_SLOWER", "1")
    result = suite.runpytest(*ARGS, "--gate", "base")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    verdicts = _verdicts(result)
    assert verdicts["latency_p50_ms"] == "regression"
    assert verdicts["params"] == verdicts["gmacs"] == verdicts["peak_mem_bytes"] == "within noise"
    result.stdout.fnmatch_lines(["*FAIL: 1 failing*"])


def test_a_memory_increase_fails_the_gate(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_BIGGER", "1")
    result = suite.runpytest(*ARGS, "--gate", "base", "--fail-on", "latency_p50_ms:off")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert _verdicts(result)["peak_mem_bytes"] == "regression"
    # resnet18 at 32 px holds 42.8 MiB at its peak; 4 MiB of ballast is +9.3%, over the 5% tolerance.
    [saved] = sorted((suite.path / "baselines").glob("*/0001_base.json"))
    base = json.loads(saved.read_text())["benchmarks"][0]["extra_info"]["peak_mem_bytes"]
    assert base == 44_908_488


def test_an_unchanged_run_passes_the_gate_and_the_baseline_is_untouched(suite: pytest.Pytester) -> None:
    [saved] = sorted((suite.path / "baselines").glob("*/0001_base.json"))
    before = saved.read_bytes()
    result = suite.runpytest(*ARGS, "--gate", "base", "--fail-on", "latency_p50_ms:off", "--benchmark-save=again")
    assert result.ret == pytest.ExitCode.OK
    assert set(_verdicts(result).values()) == {"within noise"}
    assert saved.read_bytes() == before


def test_a_missing_baseline_is_a_usage_error_before_any_case_runs(suite: pytest.Pytester) -> None:
    result = suite.runpytest(*ARGS, "--gate", "nosuchrun")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--gate: no run matches 'nosuchrun'" in result.stderr.str()
    result.stdout.no_fnmatch_line("*passed*")
