"""report.md / report.csv / plots from small synthetic runs, and the Pareto front on a hand-made set."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from harness.__main__ import main
from harness.results.report import cases_frame, pareto_front, write_report
from harness.results.runs import Run, read_run_file
from tests.data import synth

DATA = Path(__file__).parent / "data"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cpu() -> Run:
    return read_run_file(DATA / "run_cpu_base.json")


@pytest.fixture(scope="module")
def cuda() -> Run:
    return read_run_file(DATA / "run_cuda.json")


def test_pareto_front_exact_on_a_hand_made_set() -> None:
    points = {
        "fast_weak": (1.0, 50.0),
        "balanced": (2.0, 65.0),
        "slow_strong": (6.0, 72.0),
        "dominated": (3.0, 60.0),  # balanced is faster and more accurate
        "same_speed_worse": (2.0, 64.0),  # tie on latency, lower accuracy: dominated by balanced
        "same_acc_slower": (7.0, 72.0),  # tie on accuracy, slower: dominated by slow_strong
        "twin_a": (4.0, 70.0),  # identical points do not dominate each other
        "twin_b": (4.0, 70.0),
    }
    assert pareto_front(points) == ["fast_weak", "balanced", "twin_a", "twin_b", "slow_strong"]
    assert pareto_front({}) == []
    assert pareto_front({"only": (5.0, 1.0)}) == ["only"]


def test_report_writes_tables_csv_and_plots(cpu: Run, cuda: Run, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "report"
    result = write_report([cpu, cuda], out)
    names = sorted(p.name for p in result.files)
    assert names == ["accuracy_vs_subset_cifar10.png", "deployment.csv", "latency.png", "pareto_cifar10.png", "peak_memory.png", "report.csv", "report.md"]
    assert result.skipped == [] and sorted(p.name for p in out.iterdir()) == names  # no temp files left
    for png in ("accuracy_vs_subset_cifar10.png", "pareto_cifar10.png", "peak_memory.png", "latency.png"):
        data = (out / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000  # a drawn figure, not an empty canvas
    md = (out / "report.md").read_text()
    assert "| Model | Params (M) | GMACs | Latency p50 (ms) [M1] | Throughput (img/s) [M1] | Peak memory (MiB) [M1] |" in md
    assert "### inference · cuda · batch 1 · 32 px · fp32 · eager" in md and "Latency p50 (ms) [M2]" in md
    assert f"- [M2] `{cuda.baseline_key}`" in md
    resnet = cpu.cases["inference/resnet18-cpu-bs1-32px-fp32"].extra
    assert f"| resnet18 | 11.18 | 0.0371 | {resnet['latency_p50_ms']:.2f} | {resnet['throughput_ips']:.0f} | 96.0 |" in md
    top1 = cpu.cases["train/resnet18-cifar10_5k-cpu-bs64-32px-fp32"].extra
    assert "| Model | Protocol | 1k | 5k | 10k |" in md and f"{top1['top1']:.1f} ± {top1['top1_std']:.1f}" in md
    assert "Latency and memory of each architecture: cpu · batch 1 · fp32 · eager on [M1]" in md  # most cases; cpu first on a tie
    csv = pd.read_csv(out / "report.csv")
    assert len(csv) == len(cpu.cases) + len(cuda.cases)
    assert {"case_id", "machine", "latency_p50_ms", "top1", "train_size"} <= set(csv.columns)
    assert not {"latency_samples_ms", "class_counts", "top1_per_seed", "curve"} & set(csv.columns)  # scalars only


def test_plot_without_data_is_skipped_with_the_reason(cuda: Run, tmp_path: Path) -> None:
    result = write_report([cuda], tmp_path)
    assert result.skipped == [
        "accuracy_vs_subset_<dataset>.png skipped: no successful train cases in these runs",
        "pareto_<dataset>.png skipped: no successful train cases in these runs",
        "deployment.csv skipped: no successful train cases in these runs",
    ]
    # A profiled-only run still gets its latency and memory pictures.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png", "peak_memory.png", "report.csv", "report.md"]
    assert "No successful train cases." in (tmp_path / "report.md").read_text()


def test_failed_cases_are_listed_not_tabulated(cpu: Run, tmp_path: Path) -> None:
    doc = json.loads((DATA / "run_cpu_base.json").read_text())
    extra = doc["benchmarks"][0]["extra_info"]
    extra.update(status="failed", error="RuntimeError: out of memory\n  at ...", latency_p50_ms=None)
    doc["benchmarks"][1]["extra_info"]["status"] = "failed"  # no error message recorded
    write_report([Run.from_json(doc)], tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Failed cases" in md and "`inference/resnet18-cpu-bs1-32px-fp32` on [M1]: RuntimeError: out of memory\n" in md
    assert "`inference/mobilenetv3_small_100-cpu-bs1-32px-fp32` on [M1]: failed (no error message)" in md
    assert "| resnet18 |" not in md.split("## Accuracy")[0]


def test_later_run_replaces_a_case_of_the_same_machine(cpu: Run) -> None:
    doc = json.loads((DATA / "run_cpu_base.json").read_text())
    newer = copy.deepcopy(doc)
    newer["benchmarks"][0]["extra_info"]["latency_p50_ms"] = 9.99
    frame = cases_frame([cpu, Run.from_json(newer, source="newer")])
    row = frame[frame["case_id"] == "inference/resnet18-cpu-bs1-32px-fp32"]
    assert len(row) == 1 and row["latency_p50_ms"].iloc[0] == 9.99 and row["run"].iloc[0] == "newer"


def test_cli_report_leaves_storage_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "baselines" / "Linux-CPython-3.11-64bit-cpu-intel-xeon-platinum-8481c"
    storage.mkdir(parents=True)
    saved = storage / "0001_main.json"
    saved.write_bytes((DATA / "run_cpu_base.json").read_bytes())
    before = (saved.stat().st_mtime_ns, saved.read_bytes())
    code = main(["report", "0001", str(DATA / "run_cuda.json"), "--storage", str(tmp_path / "baselines"), "--out", str(tmp_path / "out")])
    assert code == 0 and "wrote " in capsys.readouterr().out
    assert (tmp_path / "out" / "report.md").exists()
    assert (saved.stat().st_mtime_ns, saved.read_bytes()) == before and list(storage.iterdir()) == [saved]


def _plan_run() -> dict[str, object]:
    cases = [synth.plan_case("resnet18", (37, 40), (12, 13)), synth.plan_case("mobilenetv3_small_100", (180, 192), (51, 50)),
             synth.plan_case("resnet18", (9, 10), (3, 3), budget=128 * 2**20)]
    cases[2]["extra_info"]["case_id"] += "-128mib"  # a second budget of the same backbone
    return synth.make_run(cases, schema=2)


def test_a_plan_only_run_gets_a_real_report(tmp_path: Path) -> None:
    result = write_report([Run.from_json(_plan_run())], tmp_path)
    md = (tmp_path / "report.md").read_text()
    head = ("| Model | Inference max batch, estimated [M1] | Inference max batch, searched [M1] | "
            "Train max batch, estimated [M1] | Train max batch, searched [M1] |")
    assert "## Batch plans" in md and md.count(head) == 2
    budget512 = md.split("### plan · cpu · 32 px · fp32 · budget 512 MiB\n", 1)[1].split("###", 1)[0]
    assert "| mobilenetv3_small_100 | 180 | 192 | 51 | 50 |" in budget512 and "| resnet18 | 37 | 40 | 12 | 13 |" in budget512
    assert "### plan · cpu · 32 px · fp32 · budget 128 MiB" in md and "| resnet18 | 9 | 10 | 3 | 3 |" in md
    assert "No successful inference cases." in md and "No successful train cases." in md
    assert len(result.skipped) == 5 and result.skipped[3] == "latency.png skipped: no successful inference case recorded latency_p50_ms" and [p.name for p in result.files] == ["report.md", "report.csv"]
    csv = pd.read_csv(tmp_path / "report.csv")
    assert list(csv["plan_inference_searched_max_batch"]) == [40, 192, 10] and csv["settings_digest"].notna().all()


def test_cli_report_on_a_plan_only_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "plan.json"
    run.write_text(json.dumps(_plan_run()))
    assert main(["report", str(run), "--storage", str(tmp_path / "baselines"), "--out", str(tmp_path / "out")]) == 0
    assert "wrote " in capsys.readouterr().out and "## Batch plans" in (tmp_path / "out" / "report.md").read_text()


def test_runs_without_plan_cases_say_so(cuda: Run, tmp_path: Path) -> None:
    write_report([cuda], tmp_path)
    assert "## Batch plans" in (md := (tmp_path / "report.md").read_text()) and "No successful plan cases." in md


def test_the_report_shows_each_schedule_and_each_search(tmp_path: Path) -> None:
    bench = synth.train_case("resnet18", "1k", 1000, [61.0, 63.0])
    search = {"param": "l2", "grid": [1e-5, 1e-3], "val_top1": [80.0, 85.0], "val_loss": [0.6, 0.5], "chosen": 1e-3,
              "fit_images": 800, "val_images": 200}
    bench["extra_info"].update(steps=500, warmup_steps=100, epochs_equivalent=32.0, schedule_rule="hyperrule: < 20000 images -> 500 steps",
                               tuning=[search, {"head_l2": search, "lr": {**search, "param": "lr_at_batch_128", "grid": [1e-4, 3e-4],
                                                                           "chosen": 1e-4}}],
                               feature_map_px=1, feature_map_note="resnet18 leaves a 1×1 feature map at 32 px")
    run = Run.from_json(synth.make_run([bench], schema=3))
    write_report([run], tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    cid = "train/resnet18-cifar10_1k-cpu-bs64-32px-fp32"
    assert f"| `{cid}` | 500 | 100 | 32 | hyperrule: < 20000 images -> 500 steps |" in text
    assert f"| `{cid}` | 0 | l2 | 1e-05 → 80.0, 0.001 → 85.0 | **0.001** | 800 / 200 |" in text
    assert f"| `{cid}` | 1 | head_l2: l2 | 1e-05 → 80.0, 0.001 → 85.0 | **0.001** | 800 / 200 |" in text
    assert f"| `{cid}` | 1 | lr: lr_at_batch_128 | 0.0001 → 80.0, 0.0003 → 85.0 | **0.0001** | 800 / 200 |" in text
    assert f"- `{cid}`: resnet18 leaves a 1×1 feature map at 32 px" in text
