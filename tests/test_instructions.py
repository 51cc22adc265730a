"""Instructions per forward under callgrind: the dump reader, which cases are counted, the preflight,
the gate's verdict on a count, and one real session that counts (valgrind needed: CI installs it)."""

from __future__ import annotations

import copy
import json
import shutil
import sys
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
        assert counter._workers == []
        record = case_instructions(counter, _spec(), model, torch.zeros(1, 3))
        assert record["instructions"] is None and str(record["instructions_unavailable"]).startswith("its model cannot be saved whole")
    finally:
        counter.close()


# A stand-in for the callgrind worker, speaking its protocol without valgrind: it answers "ready", then
# for each request writes a dump whose count is the model file's size in bytes (so each answer can be
# told apart and checked) and answers with the dump's part. A model file over LIMIT bytes ends it
# mid-request, as a crash would; "NOSTART" in its environment ends it before it is ready, and "GATED" holds
# it back from being ready until a file "go" appears beside its dumps.
FAKE_WORKER = r"""
import json, os, sys, time
answers = os.fdopen(int(sys.argv[2]), "w")
out, limit = sys.argv[1], int(sys.argv[3])
if os.environ.get("NOSTART"):
    sys.stderr.write("valgrind: the 'impossible' happened\n")
    sys.exit(1)
while os.environ.get("GATED") and not os.path.exists(os.path.join(out, "go")):
    time.sleep(0.01)
answers.write(json.dumps({"ready": True}) + "\n"); answers.flush()
part = 0
for line in sys.stdin:
    size = os.path.getsize(json.loads(line)["model"])
    if size > limit:
        sys.stderr.write(f"==1== Process terminating with default action of signal 11 (SIGSEGV) at {size}\n")
        os._exit(139)
    part += 1
    with open(f"{out}/callgrind.out.{os.getpid()}.{part}", "w") as dump:
        dump.write(f"events: Ir\nfn=(1) work_{os.getpid()}\n0 {size}\nsummary: {size}\n")
    answers.write(json.dumps({"part": part}) + "\n"); answers.flush()
"""


class _FakeCounter(InstructionCounter):
    limit = 10**9

    def worker_command(self, out: Path, answers_fd: int) -> list[str]:
        return [sys.executable, "-c", FAKE_WORKER, str(out), str(answers_fd), str(self.limit)]


def test_the_processes_share_the_work_and_each_answer_reaches_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # Weights of 256 n bytes (a multiple of the archive's 64-byte alignment), files job1..job7 named alike:
    # each saved file is one size plus 256 n bytes.
    models = {f"case{n}": nn.Linear(64 * n, 1, bias=False) for n in range(1, 8)}
    monkeypatch.setenv("GATED", "1")  # no worker is ready before the "go" file: the first three jobs start three
    counter = _FakeCounter(processes=3)
    try:
        for n, (key, model) in enumerate(models.items()):
            if n == 3:
                assert len(counter._workers) == 3 and len(counter._queue) == 3
                assert counter._dir is not None
                (Path(counter._dir.name) / "go").touch()
            counter.wait_for_room()
            assert len(counter._queue) < 3  # at most one waiting job per process on disk
            counter.submit(key, model, torch.zeros(1, 1))
        assert len(counter._workers) == 3 and counter.pending("case7")
        counter.wait_all()
        answers = {key: counter.result(key) for key in models}
        workers = {next(iter(functions)) for _, functions in answers.values()}
    finally:
        counter.close()
    assert len({count - 256 * n for n, (count, _) in enumerate(answers.values(), start=1)}) == 1
    assert 1 <= len(workers) <= 3  # "work_<pid>" names the process; which ones answered is the scheduler's business
    assert not counter.pending("case1")
    with pytest.raises(KeyError, match="nothing was submitted under 'case1'"):
        counter.result("case1")


def test_a_worker_that_dies_fails_its_own_case_only_and_one_that_cannot_start_fails_all(monkeypatch: pytest.MonkeyPatch) -> None:
    small, large = nn.Linear(1, 1), nn.Linear(200, 200)
    counter = _FakeCounter(processes=1)
    counter.limit = 10_000  # the small model's file is ~1.5 KB, the large one's ~160 KB
    try:
        counter.submit("large", large, torch.zeros(1, 200))
        counter.submit("small", small, torch.zeros(1, 1))
        with pytest.raises(CountError, match=r"^the callgrind process ended: ==1== Process terminating with default action of signal 11"):
            counter.result("large")
        assert counter.result("small")[0] < counter.limit  # by a new process, started for it
    finally:
        counter.close()
    monkeypatch.setenv("NOSTART", "1")
    counter = _FakeCounter(processes=2)
    try:
        counter.submit("a", small, torch.zeros(1, 1))
        counter.submit("b", small, torch.zeros(1, 1))
        for key in ("a", "b"):
            with pytest.raises(CountError, match=r"^the callgrind process ended: valgrind: the 'impossible' happened$"):
                counter.result(key)
        started = len(counter._workers)
        counter.submit("c", small, torch.zeros(1, 1))  # no new process: it would end the same way
        assert len(counter._workers) == started <= 1  # the second one may still be on its way out
        with pytest.raises(CountError, match="the 'impossible' happened"):
            counter.result("c")
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
