"""Loading run files and resolving run ids: every bad input gets one clear RunError."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.results.runs import Run, RunError, load_run, read_run_file, resolve_run_id

DATA = Path(__file__).parent / "data"
CPU = "Linux-CPython-3.11-64bit-cpu-intel-xeon-platinum-8481c"
CUDA = "Linux-CPython-3.11-64bit-cuda-nvidia-h100-80gb-hbm3"


def _doc(name: str = "run_cpu_base.json") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DATA / name).read_text())
    return doc


@pytest.fixture()
def storage(tmp_path: Path) -> Path:
    """Two machine folders the way --benchmark-save lays them out."""
    for key, files in {CPU: ["0001_main", "0002_pr-42", "0003_main"], CUDA: ["0001_main", "0004_nightly"]}.items():
        (tmp_path / key).mkdir()
        for stem in files:
            doc = _doc("run_cpu_base.json" if key == CPU else "run_cuda.json")
            doc["commit_info"]["branch"] = stem  # to tell the files apart after loading
            (tmp_path / key / f"{stem}.json").write_text(json.dumps(doc))
    (tmp_path / CPU / "notes.json").write_text("{}")  # not NNNN_NAME.json: never a run id
    return tmp_path


def test_reads_a_run_file_into_cases() -> None:
    run = read_run_file(DATA / "run_cpu_base.json")
    assert run.baseline_key == CPU and len(run.cases) == 20
    case = run.cases["inference/resnet18-cpu-bs1-32px-fp32"]
    assert case.kind == "inference" and case.status == "ok" and case.value("params") == 11_181_642
    assert case.samples("latency_samples_ms") and len(case.samples("latency_samples_ms") or []) == 30
    assert case.value("top1") is None and case.samples("top1_per_seed") is None


@pytest.mark.parametrize(
    ("ref", "machine", "expected"),
    [
        ("0002", None, f"{CPU}/0002_pr-42.json"),
        ("0002_pr-42", None, f"{CPU}/0002_pr-42.json"),
        ("pr-42", None, f"{CPU}/0002_pr-42.json"),
        ("nightly", None, f"{CUDA}/0004_nightly.json"),
        ("latest", None, f"{CUDA}/0004_nightly.json"),  # highest id over all machines, like pytest-benchmark
        ("latest", CPU, f"{CPU}/0003_main.json"),
        (f"{CPU}/latest", None, f"{CPU}/0003_main.json"),
        (f"{CUDA}/0001", None, f"{CUDA}/0001_main.json"),
        ("0001", CUDA, f"{CUDA}/0001_main.json"),
        ("main", CPU, f"{CPU}/0003_main.json"),  # a name saved twice on one machine: its newest save
        (f"{CPU}/main", None, f"{CPU}/0003_main.json"),
    ],
)
def test_run_ids_resolve_like_pytest_benchmark(storage: Path, ref: str, machine: str | None, expected: str) -> None:
    assert resolve_run_id(ref, storage, machine=machine) == storage / expected


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("0001", "run id '0001' is ambiguous"),  # in both machine folders
        ("main", "run id 'main' is ambiguous"),  # saved on two machines
        ("0009", "no run matches '0009'"),
        ("notes", "no run matches 'notes'"),
        ("nosuchmachine/0001", "no saved runs in"),
    ],
)
def test_bad_run_ids_list_what_exists(storage: Path, ref: str, message: str) -> None:
    with pytest.raises(RunError, match=message) as info:
        load_run(ref, storage)
    if "no run matches" in message:
        assert f"{CPU}/0002_pr-42" in str(info.value) and f"{CUDA}/0004_nightly" in str(info.value)


def test_load_run_by_path_and_id(storage: Path) -> None:
    run = load_run(str(storage / CPU / "0002_pr-42.json"), Path("does-not-matter"))
    assert run.commit_info["branch"] == "0002_pr-42"
    assert load_run("0002", storage).source == f"{CPU}/0002_pr-42"
    with pytest.raises(RunError, match="missing.json: no such file"):
        load_run("missing.json", storage)
    with pytest.raises(RunError, match="storage directory .* does not exist"):
        load_run("0001", storage / "nope")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("  \n\n", "the file is empty"),
        ('{"benchmarks": [1, 2,', "corrupt JSON at line 1 column 22"),
        ('{\n "machine_info": {},\n "benchmarks": [}\n', "corrupt JSON at line 3 column 17"),
        ("[1, 2, 3]", "not a pytest-benchmark run"),
        ('{"machine_info": {}}', "not a pytest-benchmark run"),
        ('{"benchmarks": []}', "contains no benchmarks"),
    ],
)
def test_bad_files_give_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RunError, match=message):
        read_run_file(_write(tmp_path, text))


def test_other_tools_run_is_named_as_such() -> None:
    with pytest.raises(RunError, match=r"1 of 1 benchmarks lack extra_info 'case_id'/'kind' \(e.g. 'test_parse_small'\)"):
        read_run_file(DATA / "other_tool.json")


def _broken(change: Any) -> dict[str, Any]:
    doc = _doc()
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["machine_info"].pop("baseline_key"), "machine_info has no 'baseline_key'"),
        (lambda d: d["benchmarks"].append(copy.deepcopy(d["benchmarks"][0])), "appears twice"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(kind="training"), "kind 'training' is not one of"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(status="skipped"), "status 'skipped' is not one of"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(latency_p50_ms="2.1ms"), "latency_p50_ms must be a number"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(latency_samples_ms=[1.0, "x"]), "latency_samples_ms must be a list"),
        (lambda d: d["benchmarks"][3]["extra_info"].pop("case_id"), "1 of 20 benchmarks lack"),
    ],
)
def test_contract_violations(change: Any, message: str) -> None:
    with pytest.raises(RunError, match=message):
        Run.from_json(_broken(change), source="current session")


def test_failed_cases_are_read_from_backbone_bench_failed() -> None:
    doc = _doc()
    entry = doc["benchmarks"].pop(0)
    doc["backbone_bench"]["failed"] = [{"name": entry["name"], "fullname": entry["fullname"],
                                        "extra_info": {**entry["extra_info"], "status": "failed", "error": "CUDA out of memory"}}]
    case = Run.from_json(doc).cases["inference/resnet18-cpu-bs1-32px-fp32"]
    assert case.status == "failed" and case.extra["error"] == "CUDA out of memory" and not case.stats
    no_rounds = copy.deepcopy(doc)
    no_rounds["backbone_bench"]["failed"][0]["extra_info"]["status"] = "ok"  # ok record without timed rounds
    assert Run.from_json(no_rounds).cases["inference/resnet18-cpu-bs1-32px-fp32"].status == "failed"
    doc["benchmarks"] = []  # every case failed: still a run to compare
    assert [c.status for c in Run.from_json(doc).cases.values()] == ["failed"]
    doc["backbone_bench"]["schema"] = 2
    with pytest.raises(RunError, match="newer backbone-bench"):
        Run.from_json(doc)


def test_from_json_accepts_the_plugins_in_memory_dict() -> None:
    doc = _doc()
    run = Run.from_json(doc)
    assert run.source == "current session" and list(run.cases) == [b["extra_info"]["case_id"] for b in doc["benchmarks"]]
    numpy_values = _broken(lambda d: d["benchmarks"][0]["extra_info"].update(params=np.int64(7), gmacs=np.float32(0.5)))
    assert Run.from_json(numpy_values).cases["inference/resnet18-cpu-bs1-32px-fp32"].value("params") == 7.0
    missing_status = _broken(lambda d: d["benchmarks"][0]["extra_info"].pop("status"))
    assert next(iter(Run.from_json(missing_status).cases.values())).status == "ok"
    with pytest.raises(TypeError):
        run.cases["x"] = run.cases["inference/resnet18-cpu-bs1-32px-fp32"]  # type: ignore[index]  # read-only view
