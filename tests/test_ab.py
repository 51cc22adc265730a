"""``python -m harness ab``: the paired verdicts (A/A and A/B over many synthetic jobs), the arms of a git
repository (worktree, dirty tree, bad REF, outside a repository), the alternating rounds, and the verb's
usage errors. The real job over pytest processes is shown in the README (minutes per round)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.__main__ import main
from harness.results.attribution import attribute, describe
from harness.results.paired import judge, paired_rows
from harness.results.runs import Run
from harness.results.tolerances import parse_tolerances
from harness.scale import ab
from tests.data import synth


def test_a_clear_slowdown_is_a_regression_and_a_wobble_is_not() -> None:
    row = judge("c", "latency_p50_ms", [10.0, 10.2, 9.9, 10.1], [12.0, 12.3, 11.8, 12.1], 10.0)
    assert row.verdict == "regression" and row.p is not None and row.p < 0.001 and 1.18 < row.ratio < 1.21
    assert row.low > 1.1 and row.rounds == 4
    row = judge("c", "latency_p50_ms", [10.0, 10.2, 9.9, 10.1], [10.1, 10.1, 10.0, 10.0], 10.0)
    assert row.verdict == "within noise" and row.detectable == pytest.approx(1.10)  # tight rounds: the tolerance is the limit
    assert judge("c", "latency_p50_ms", [10.0, 10.2, 9.9], [8.0, 8.1, 8.0], 10.0).verdict == "improvement"
    assert judge("c", "throughput_ips", [100.0, 101.0, 99.0], [80.0, 81.0, 80.0], 10.0).verdict == "regression"  # higher is better


def test_an_exact_count_is_judged_against_its_tolerance_from_one_round() -> None:
    assert judge("c", "instructions", [25_836_376.0], [25_836_376 * 1.011], 1.0).verdict == "regression"
    row = judge("c", "instructions", [25_836_376.0], [25_836_376 * 1.009], 1.0)
    assert row.verdict == "within noise" and row.p is None and row.detectable == pytest.approx(1.01)


def test_one_round_of_a_timed_metric_can_see_nothing() -> None:
    row = judge("c", "latency_p50_ms", [10.0], [30.0], 10.0)
    assert row.verdict == "within noise" and math.isinf(row.detectable)


def _job(rng: np.random.Generator, rounds: int, factor: float, sigma: float = 0.15) -> tuple[list[float], list[float]]:
    # Each process of a shared VM moves by itself (log-normal, sd 15 %); a round's two processes share its drift.
    drift = rng.normal(0, 0.1, rounds)
    base = np.exp(np.log(5.0) + drift + rng.normal(0, sigma, rounds))
    head = np.exp(np.log(5.0 * factor) + drift + rng.normal(0, sigma, rounds))
    return list(base), list(head)


def test_aa_jobs_rarely_alarm_and_a_doubling_is_always_caught() -> None:
    rng = np.random.default_rng(7)
    alarms = sum(judge("c", "latency_p50_ms", *_job(rng, 8, 1.0), 10.0).verdict == "regression" for _ in range(500))
    assert alarms <= 10  # alpha 1 %: 5 expected in 500
    caught = [judge("c", "latency_p50_ms", *_job(rng, 8, 2.0), 10.0) for _ in range(100)]
    assert all(row.verdict == "regression" for row in caught)
    # With 8 rounds at this noise the job can see about +25 %; it says so.
    assert 1.15 < float(np.median([row.detectable for row in caught])) < 1.45


def _run(instructions: float | None, latency: float, functions: dict[str, int] | None = None) -> Run:
    bench = synth.inference_case("resnet18", [latency] * 10)
    bench["extra_info"]["latency_p50_ms"] = latency
    bench["extra_info"]["instructions"] = instructions
    if functions:
        bench["extra_info"]["instructions_by_function"] = functions
    return Run.from_json(synth.make_run([bench]))


def test_paired_rows_use_the_rounds_that_counted() -> None:
    # Instructions counted in the first round only: null in the others.
    base = [_run(100.0, 2.0), _run(None, 2.1), _run(None, 2.0)]
    head = [_run(110.0, 2.0), _run(None, 2.1), _run(None, 2.0)]
    rows = {r.metric: r for r in paired_rows(base, head, parse_tolerances(None), ("latency_p50_ms", "instructions"))}
    assert rows["instructions"].rounds == 1 and rows["instructions"].verdict == "regression"
    assert rows["latency_p50_ms"].rounds == 3 and rows["latency_p50_ms"].verdict == "within noise"


def test_attribution_names_what_replaced_what() -> None:
    base = {"at::native::GeluKernelImpl": 300_000, "mkl_sgemm": 9_000_000, "_PyEval_EvalFrameDefault": 500_000}
    head = {"at::native::tanh_kernel": 700_000, "at::native::mul_kernel": 450_000, "at::native::add_kernel": 300_000,
            "mkl_sgemm": 9_000_000, "_PyEval_EvalFrameDefault": 620_000}
    moved = attribute(base, head)
    assert [m.name for m in moved] == ["at::native::tanh_kernel", "at::native::mul_kernel", "at::native::add_kernel", "at::native::GeluKernelImpl"]
    assert describe(moved[:1], 9_800_000, "instructions") == ["+700.00 k instructions (+7.1% of the whole) at::native::tanh_kernel: 0 → 700.00 k"]


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "team"
    root.mkdir()
    _git(root, "init", "-q")
    (root / "model.py").write_text("ACT = 'gelu'\n")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "one")
    return root


def test_arms_check_out_the_base_and_say_what_the_head_holds(repo: Path) -> None:
    (repo / "model.py").write_text("ACT = 'tanh'\n")
    with ab.arms(repo, "HEAD") as job:
        assert (job.base_dir / "model.py").read_text() == "ACT = 'gelu'\n" and job.head_dir == repo
        assert job.dirty == ["model.py"] and job.base_sha == job.head_sha
        assert "+ 1 uncommitted change(s) (model.py)" in job.describe("HEAD")
        tree = job.base_dir
    assert not tree.exists()
    assert "base" not in subprocess.run(["git", "worktree", "list"], cwd=repo, capture_output=True, text=True).stdout.split()[-1:]


def test_arms_refuse_outside_a_repository_and_an_unknown_ref(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    with pytest.raises(ab.ABError, match=r"is not inside one: run it from your repository \(git init to make one\)$"), ab.arms(outside, "HEAD"):
        pass
    with pytest.raises(ab.ABError, match=r"^--base nosuch: no such commit in .*team \(a branch, tag or sha: git log --oneline lists them\)$"), ab.arms(repo, "nosuch"):
        pass


@pytest.mark.parametrize("arg", ["--benchmark-json=x.json", "--benchmark-save", "--gate", "-n"])
def test_options_ab_owns_are_refused(arg: str) -> None:
    with pytest.raises(ab.ABError, match=f"^{arg.split('=')[0]}: ab writes each round's JSON"):
        ab.check_pytest_args(["benchmarks", arg])


FAKE = """import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.data import synth
arm = Path.cwd().name
out = Path(sys.argv[1])
counting = "--count-instructions" in sys.argv
with open({log!r}, "a") as log:
    log.write(arm + ("+count" if counting else "") + "\\n")
bench = synth.inference_case("resnet18", [2.0 * (1.5 if arm == "team" else 1.0)] * 10)
if counting:
    bench["extra_info"]["instructions"] = 1000 if arm == "base" else 1005
out.write_text(json.dumps(synth.make_run([bench])))
"""


def test_rounds_alternate_the_order_and_stop_when_enough(repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "order.log"
    script = tmp_path / "fake.py"
    script.write_text(FAKE.format(root=str(Path(__file__).resolve().parents[1]), log=str(log)))

    def command(arm_dir: Path, args: Any, json_path: Path) -> list[str]:
        return [sys.executable, str(script), str(json_path), *args]

    monkeypatch.setattr(ab, "arm_command", command)
    work = tmp_path / "work"
    work.mkdir()
    with ab.arms(repo, "HEAD") as job:
        done = ab.run_rounds(job, [], work=work, rounds=None, budget_s=600, enough=lambda d: True, say=lambda _: None)
    assert len(done.base) == ab.MIN_ROUNDS and not done.counted  # enough from the start: the least number of rounds
    assert log.read_text().split() == ["base", "team", "team", "base", "base", "team"]  # the head arm runs in the repository itself
    rows = paired_rows(done.base, done.head, parse_tolerances(None), ("latency_p50_ms",))
    assert [r.verdict for r in rows] == ["regression"] and rows[0].ratio == pytest.approx(1.5)
    log.unlink()
    with ab.arms(repo, "HEAD") as job:
        done = ab.run_rounds(job, [], work=work, count_args=["--count-instructions"], rounds=2, budget_s=600, enough=lambda d: False, say=lambda _: None)
    # One counting run per arm first, its figures kept apart; then the timed rounds, which count nothing.
    assert log.read_text().split() == ["base+count", "team+count", "base", "team", "team", "base"]
    rows = paired_rows([done.counted["base"]], [done.counted["head"]], parse_tolerances(None), ("instructions",))
    assert [(r.verdict, r.ratio) for r in rows] == [("within noise", pytest.approx(1.005))]


def test_the_verb_outside_a_repository_is_one_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ab", "--base", "HEAD", "--", "benchmarks"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ab measures two commits of a git repository, and ")
    assert main(["ab", "--base", "HEAD", "--save", "x" * 300]) == 2
    assert json.dumps(capsys.readouterr().err).count("error:") == 1


def test_a_latency_regression_names_its_ops() -> None:
    from harness.results.compare import compare_runs

    def run(ops: dict[str, float], modules: dict[str, float], ms: float) -> Run:
        bench = synth.inference_case("resnet18", [ms * (1 + 0.001 * i) for i in range(30)])
        bench["extra_info"].update(op_self_ms=ops, module_self_ms=modules)
        return Run.from_json(synth.make_run([bench]))

    base = run({"aten::_slow_conv2d_forward": 2.6, "aten::gelu": 0.21},
               {"stages.* (Stage)": 2.6, "stages.*.act (GELU)": 0.21}, 3.0)
    head = run({"aten::_slow_conv2d_forward": 2.6, "aten::mul": 0.26, "aten::tanh": 0.14, "aten::add": 0.06},
               {"stages.* (Stage)": 2.61, "stages.*.act (TanhGELU)": 0.45}, 4.0)
    [row] = [r for r in compare_runs(base, head, parse_tolerances(None), history=[]).rows if r.metric == "latency_p50_ms"]
    assert row.verdict == "regression"
    # mul and tanh explain 80 % of the added time; gelu, which they replaced, is named beside them. The
    # modules say where in the network: the activation module, renamed with its new class.
    assert row.note.startswith("most in: aten::mul +0.26 ms, aten::tanh +0.14 ms, aten::gelu -0.21 ms; "
                               "by module: stages.*.act (TanhGELU) +0.45 ms, stages.*.act (GELU) -0.21 ms; ")
