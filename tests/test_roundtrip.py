"""Every kind the suite can write is saved and read back by every reader; changed settings are
"not comparable", never a verdict; bad input is refused before any case runs.

One pytester project runs the real benchmark files. Module-scoped: the saved runs are shared by
the tests below, which only read them (or write new ones beside them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.contract import KIND_NAMES, RUNTIMES
from tests.projects import write_project
from tests.segscenes import SCENE_CLASSES, compose, digit_objects, write_voc

# One worker builds the project once: with `pytest -n 2 --dist loadgroup` (pytest.ini) the whole
# module runs in the same xdist worker instead of each worker re-running the minute-long setup.
pytestmark = pytest.mark.xdist_group("roundtrip")
ROOT = Path(__file__).resolve().parents[1]
# resnet10t at 32 px is the smallest registry-shaped CNN timm has: every runtime, a training
# case on 500 digits and a 64 MiB batch plan run in about a minute on 2 cores.
MATRIX = (
    "--backbones", "resnet10t", "--batch-sizes", "1", "--devices", "cpu", "--bench-time", "0.05",
    "--runtimes", ",".join(RUNTIMES), "--subsets", "500", "--train-batch-sizes", "64", "--plan-budget", "64MiB",
    "--seg-datasets", "voc:scenes", "--seg-steps", "4", "-p", "no:cacheprovider",
)


class Project:
    """A folder with the real benchmarks and the plugin; commands run in it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pytest(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([sys.executable, "-m", "pytest", "-q", *args])

    def harness(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([sys.executable, "-m", "harness", *args])

    def _run(self, command: list[str]) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PYTEST_XDIST")}
        env["PYTHONPATH"] = str(ROOT)
        env["BACKBONE_BENCH_CHECKPOINTS"] = str(self.path / "checkpoints")
        env["BACKBONE_BENCH_DATA"] = str(self.path)  # where voc:scenes is (digits is embedded)
        return subprocess.run(command, cwd=self.path, capture_output=True, text=True, env=env, timeout=900)

    def runs(self) -> list[Path]:
        return sorted((self.path / "baselines").glob("*/*.json"))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    path = write_project(tmp_path_factory.mktemp("roundtrip"))
    objects, labels = digit_objects()  # the dense kind's case: a segmentation probe on scenes of real digits
    write_voc(path / "scenes", {split: compose(objects, labels, SCENE_CLASSES, tuple(map(str, range(10))), n, side=32, seed=n, max_objects=2)
                                for split, n in (("train", 6), ("val", 4))})
    project = Project(path)
    first = project.pytest(*MATRIX, "--benchmark-save=every", "--benchmark-json=every.json")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    yield project


def _cases(run: Path) -> dict[str, dict[str, object]]:
    return {b["extra_info"]["case_id"]: b["extra_info"] for b in json.loads(run.read_text())["benchmarks"]}


def test_every_kind_and_runtime_is_saved_with_its_settings(project: Project) -> None:
    [saved] = project.runs()
    cases = _cases(saved)
    assert {str(c["kind"]) for c in cases.values()} == set(KIND_NAMES)
    assert {str(c["runtime"]) for c in cases.values() if c["kind"] == "inference"} == set(RUNTIMES)
    assert len(cases) == len(RUNTIMES) + 3  # and one train, one plan, one dense case
    for case in cases.values():
        assert case["status"] == "ok" and isinstance(case["settings"], dict) and case["settings_digest"]
    # --benchmark-json wrote the same run, whichever pytest-benchmark (file before 5.3, path from 5.3).
    assert _cases(project.path / "every.json").keys() == cases.keys()


def test_compare_reads_every_kind_back(project: Project) -> None:
    same = project.harness("compare", "every", str(project.runs()[0]), "--fail-on", "latency_p50_ms:off")
    assert same.returncode == 0, same.stderr
    for kind in KIND_NAMES:
        assert f"{kind}/resnet10t" in same.stdout


def test_report_reads_every_kind_back(project: Project, tmp_path: Path) -> None:
    result = project.harness("report", "every", "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "resnet10t" in text and "onnxruntime-int8" in text and "plan" in text.lower()


def test_pytest_benchmark_compare_reads_every_kind_back(project: Project) -> None:
    result = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", "file://baselines", "compare", "0001", "--columns=median,rounds"],
                            cwd=project.path, capture_output=True, text=True, check=True)
    for name in ("test_inference[resnet10t-cpu-bs1-32px-fp32-compile]", "test_train[resnet10t-digits_500-cpu-bs64-32px-fp32]", "test_batch_plan[resnet10t-cpu-32px-fp32]"):
        assert name in result.stdout


def test_gate_reads_every_kind_back_and_saves_a_new_run(project: Project) -> None:
    before = {p: p.read_bytes() for p in project.runs()}
    # Latency on a shared 2-core machine is not this test's subject (tests/test_gate_e2e.py is).
    gated = project.pytest(*MATRIX, "--gate", "every", "--fail-on", "latency_p50_ms:off", "--benchmark-save=again")
    assert gated.returncode == 0, gated.stdout[-3000:]
    assert "backbone-bench gate" in gated.stdout and "OK:" in gated.stdout
    for kind in KIND_NAMES:
        assert f"{kind}/resnet10t" in gated.stdout
    assert all(p.read_bytes() == data for p, data in before.items())  # the baseline is untouched
    assert [p.name for p in project.runs()] == ["0001_every.json", "0002_again.json"]


def test_other_threads_are_not_comparable_with_the_default_inference_baseline(project: Project) -> None:
    result = project.pytest(*MATRIX, "-m", "inference", "--runtimes", "eager", "--threads", "2", "--gate", "every")
    assert result.returncode == 2, result.stdout[-3000:]
    assert "not comparable" in result.stdout and "threads 1 → 2" in result.stdout
    assert "regression" not in result.stdout.replace("0 regression", "") and "improvement" not in result.stdout


def test_other_epochs_are_not_comparable_with_the_default_training_baseline(project: Project) -> None:
    result = project.pytest(*MATRIX, "-m", "train", "--epochs", "2", "--benchmark-save=two-epochs")
    assert result.returncode == 0, result.stdout[-3000:]
    compared = project.harness("compare", "every", "two-epochs")
    assert compared.returncode == 2, compared.stdout + compared.stderr
    assert "not comparable" in compared.stdout and "schedule steps 100, warmup 20 steps → steps 14, warmup 3 steps" in compared.stdout
    forced = project.harness("compare", "every", "two-epochs", "--force")
    assert forced.returncode in (0, 1) and "top1" in forced.stdout


BAD_INPUT = [
    (("--fail-on", "latency:banana"), "unknown metric 'latency'"),
    (("--benchmark-save", "my run"), "invalid run name 'my run'"),
    (("--augment", "mixup,bogus"), "unknown augmentation 'bogus'"),
    (("--benchmark-min-rounds", "0"), "Value for --benchmark-rounds must be at least 1"),
    (("--benchmark-min-rounds", "50"), "--benchmark-min-rounds is pytest-benchmark's timing control"),
    (("--benchmark-max-time", "5"), "use --bench-time SECONDS"),
    # An edge profile is part of the machine's baseline key: 'every' was saved without one.
    (("--gate", "every", "--edge-profile", "threads=1,mem=1GiB"), "no run 'every' among the runs of this machine"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_is_refused_before_any_case_runs(project: Project, args: tuple[str, ...], message: str) -> None:
    result = project.pytest(*MATRIX, *args)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr
    assert "passed" not in result.stdout and "failed" not in result.stdout
