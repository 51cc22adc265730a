"""Instructions per forward under callgrind: the dump reader, which cases are counted, the preflight,
the gate's verdict on a count, and one real session that counts (valgrind needed: CI installs it)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from harness.config.options import default_settings
from harness.config.preflight import check_available
from harness.errors import SettingError
from harness.kinds.inference import case_instructions
from harness.matrix.cases import CaseSpec
from harness.measure.instructions import CountError, InstructionCounter, NotCountable, summary, unsupported
from harness.results.compare import compare_runs
from harness.results.runs import Run
from harness.results.tolerances import parse_tolerances
from tests.data import synth
from tests.projects import write_project

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
part: 2
desc: Trigger: Client Request
events: Ir
summary: 51730956
totals: 103461912
"""


def test_summary_is_the_parts_own_count_not_the_running_total(tmp_path: Path) -> None:
    assert summary(DUMP.splitlines(), tmp_path / "dump") == 51_730_956
    with pytest.raises(CountError, match="dump has no summary line: not a callgrind dump"):
        summary(["events: Ir"], tmp_path / "dump")


@pytest.mark.parametrize(("device", "runtime", "precision", "reason"), [
    ("cpu", "eager", "fp32", None),
    ("cuda", "eager", "fp32", "instructions are counted on the CPU only, not on cuda"),
    ("cpu", "onnxruntime", "fp32", "instructions are counted for the eager runtime only, not onnxruntime"),
    ("cpu", "eager", "bf16", "instructions are counted at fp32 only, not bf16"),
])
def test_only_eager_fp32_cpu_work_is_counted(device: str, runtime: str, precision: str, reason: str | None) -> None:
    assert unsupported(device, runtime, precision) == reason


class _Fixed(InstructionCounter):
    def count(self, model: nn.Module, example: torch.Tensor) -> tuple[int, dict[str, int]]:
        return 1234, {"gelu": 1000, "conv": 234}


def _spec(**changes: Any) -> CaseSpec:
    return CaseSpec(**{"kind": "inference", "backbone": "resnet18", "family": "cnn", "edge": True, "device": "cpu",
                       "batch_size": 1, "img_size": 32, "precision": "fp32", **changes})


def test_a_case_records_its_count_or_says_why_it_has_none() -> None:
    model, example = nn.Linear(3, 2), torch.zeros(1, 3)
    assert case_instructions(_Fixed(), _spec(), model, example) == {"instructions": 1234, "instructions_by_function": {"gelu": 1000, "conv": 234}}
    assert case_instructions(_Fixed(), _spec(runtime="compile"), model, example) == {
        "instructions": None, "instructions_unavailable": "instructions are counted for the eager runtime only, not compile"}


def test_a_model_that_cannot_be_saved_whole_is_not_countable_and_starts_no_process() -> None:
    model = nn.Linear(3, 2)
    model.hook = lambda x: x  # type: ignore[assignment]  # a lambda: pickle refuses it
    counter = InstructionCounter()
    try:
        with pytest.raises(NotCountable, match=r"^its model cannot be saved whole for the counting process \("):
            counter.count(model, torch.zeros(1, 3))
        assert counter._proc is None
        record = case_instructions(counter, _spec(), model, torch.zeros(1, 3))
        assert record["instructions"] is None and str(record["instructions_unavailable"]).startswith("its model cannot be saved whole")
    finally:
        counter.close()


def test_preflight_names_the_install_and_refuses_gpu_devices(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if shutil.which("valgrind") is not None:
        with pytest.raises(SettingError) as info:
            check_available(default_settings(backbones=["resnet18"], devices=["cpu", "cuda"], count_instructions=True))
        assert str(info.value) == ("--count-instructions counts CPU instructions; --devices cuda runs GPU kernels callgrind cannot see: "
                                   "count in a session of its own with --devices cpu")
    monkeypatch.setenv("PATH", str(tmp_path))  # no valgrind on it
    with pytest.raises(SettingError) as info:
        check_available(default_settings(backbones=["resnet18"], devices=["cpu"], count_instructions=True))
    assert str(info.value) == ("--count-instructions runs the cases' models under valgrind's callgrind, and valgrind is not on PATH: "
                               "apt-get install valgrind (Debian/Ubuntu), dnf install valgrind, or brew install valgrind")
    check_available(default_settings(backbones=["resnet18"], devices=["cpu"]))  # without the flag nothing is asked of PATH


def _with_instructions(bench: dict[str, Any], count: float) -> Run:
    changed = copy.deepcopy(bench)
    changed["extra_info"]["instructions"] = count
    return Run.from_json(synth.make_run([changed]))


def test_the_gate_judges_a_count_against_its_one_percent() -> None:
    bench = synth.inference_case("resnet18", [2.0] * 10)
    base = _with_instructions(bench, 25_836_376)
    rows = {r.metric: r.verdict for r in compare_runs(base, _with_instructions(bench, 25_836_376 * 1.011), parse_tolerances(None)).rows}
    assert rows["instructions"] == "regression"
    rows = {r.metric: r.verdict for r in compare_runs(base, _with_instructions(bench, 25_836_376 * 1.009), parse_tolerances(None)).rows}
    assert rows["instructions"] == "within noise"


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (apt-get install valgrind)")
def test_a_session_records_each_cpu_cases_count(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    write_project(pytester.path)
    args = ("-m", "inference", "--backbones", "resnet10t,resnet18", "--batch-sizes", "1", "--devices", "cpu",
            "--bench-time", "0.05", "-p", "no:cacheprovider", "--count-instructions", "--benchmark-json=run.json")
    pytester.runpytest(*args).assert_outcomes(passed=2)
    counts = {b["extra_info"]["backbone"]: b["extra_info"]["instructions"] for b in json.loads((pytester.path / "run.json").read_text())["benchmarks"]}
    # resnet18 at 32 px, batch 1, one thread: 25.8 M instructions a forward with torch 2.14's AVX2 kernels
    # (resnet10t: 15.8 M). The bounds hold other capabilities and releases; the ratio is the architecture's.
    assert 15e6 < counts["resnet18"] < 40e6 and isinstance(counts["resnet18"], int)
    assert 1.3 < counts["resnet18"] / counts["resnet10t"] < 2.0


HOST = {"schema": 1, "capability": "AVX512", "cpu_flags": ["avx2", "avx512f", "fma"], "cpus": 2, "gpu": None,
        "calibration": {"score_ms": 1.0}}


def _counted(count: float, host: dict[str, Any], functions: dict[str, int]) -> Run:
    bench = copy.deepcopy(synth.inference_case("resnet18", [2.0] * 10))
    bench["extra_info"].update(instructions=count, instructions_by_function=functions)
    doc = synth.make_run([bench])
    doc["machine_info"]["host"] = host
    return Run.from_json(doc)


def test_counts_compare_only_within_one_capability_and_a_regression_names_its_functions() -> None:
    base = _counted(25_000_000, HOST, {"at::native::GeluKernelImpl": 300_000, "mkl_sgemm": 20_000_000})
    head = _counted(27_000_000, HOST, {"at::native::tanh_kernel": 1_500_000, "at::native::mul_kernel": 800_000, "mkl_sgemm": 20_000_000})
    [row] = [r for r in compare_runs(base, head, parse_tolerances(None)).rows if r.metric == "instructions"]
    assert row.verdict == "regression"
    assert row.note == "most in: at::native::tanh_kernel +1.50 M, at::native::mul_kernel +800.00 k, at::native::GeluKernelImpl -300.00 k"
    other = _counted(27_000_000, {**HOST, "capability": "AVX2", "cpu_flags": ["avx2", "fma"]}, {})
    [row] = [r for r in compare_runs(base, other, parse_tolerances(None)).rows if r.metric == "instructions"]
    assert (row.verdict, row.note) == ("not comparable", "kernels differ (capability AVX512 → AVX2; cpu flags -avx512f)")


def test_jit_code_is_one_bucket_and_small_functions_are_dropped() -> None:
    from harness.measure.instructions import JIT_CODE, top_functions

    costs = {"0x00000000e0f53000": 600, "0x00000000E0F46000": 300, "mkl_sgemm": 9_000, "tiny": 5}
    assert top_functions(costs, 3) == {"mkl_sgemm": 3_000, JIT_CODE: 300}  # tiny: under 0.1 % of 9,905
