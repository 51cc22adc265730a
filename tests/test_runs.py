"""Loading run files and resolving run ids: every bad input gets one clear RunError; schema 2 runs
carry their settings, schema 1 runs are read with the settings version 1 ran with."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.contract import KIND_NAMES, KINDS, SCHEMA_VERSION, settings_digest
from harness.results.gate import load_baseline
from harness.results.records import CaseResult, build_run
from harness.results.runs import Run, RunError, load_run, read_run_file, resolve_run_id
from harness.results.schema import V1_SETTINGS
from harness.results.storage import save_run
from tests.data import synth

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).resolve().parents[1]
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


@pytest.mark.parametrize(
    ("ref", "machine", "expected"),
    [
        ("main", CPU, f"{CPU}/0003_main"),
        ("0001", CUDA, f"{CUDA}/0001_main"),
        ("latest", CPU, f"{CPU}/0003_main"),
        (f"{CUDA}/nightly", CPU, f"{CUDA}/0004_nightly"),  # named with its machine: loaded (compare refuses it unless forced)
        ("nightly", None, f"{CUDA}/0004_nightly"),  # no machine to scope to: every folder
    ],
)
def test_the_gate_looks_a_bare_id_up_among_this_machines_runs(storage: Path, ref: str, machine: str | None, expected: str) -> None:
    assert load_baseline(ref, storage, machine).source == expected


@pytest.mark.parametrize(
    ("ref", "machine", "message"),
    [
        ("nightly", CPU, f"no run 'nightly' among the runs of this machine ({CPU}); {CUDA}/0004_nightly was saved on other hardware"),
        ("main", "Linux-other", f"no run 'main' among the runs of this machine (Linux-other); {CPU}/0003_main, {CUDA}/0001_main was saved"),
        ("nosuch", CPU, f"no run matches 'nosuch' in {{storage}}; available: {CPU}/0001_main"),
        ("nosuch.json", CPU, "nosuch.json: no such file"),
    ],
)
def test_a_gate_baseline_that_is_not_this_machines_is_refused(storage: Path, ref: str, machine: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        load_baseline(ref, storage, machine)
    assert message.format(storage=storage) in str(info.value)


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
        (lambda d: d["benchmarks"][0]["extra_info"].update(kind="training"), "unknown kind 'training' (did you mean train?); valid: inference, train, plan"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(kind="export"), "unknown kind 'export'"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(status="skipped"), "unknown status 'skipped'; valid: ok, failed"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(peak_mem_bytes=True), "peak_mem_bytes must be a number"),
        (lambda d: d["benchmarks"][5]["extra_info"].update(top1_per_seed=[63.5, None]), "top1_per_seed must be a list"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(plan_train_searched_max_batch="64"), "plan_train_searched_max_batch must be a number"),
        (lambda d: d["backbone_bench"].update(schema=SCHEMA_VERSION + 1), "newer backbone-bench (run schema 6, this one reads up to 5)"),
        (lambda d: d["backbone_bench"].update(schema="2"), "backbone_bench.schema '2' is not a schema version"),
        (lambda d: d["backbone_bench"].update(schema=0), "backbone_bench.schema 0 is not a schema version"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(latency_p50_ms="2.1ms"), "latency_p50_ms must be a number"),
        (lambda d: d["benchmarks"][0]["extra_info"].update(latency_samples_ms=[1.0, "x"]), "latency_samples_ms must be a list"),
        (lambda d: d["benchmarks"][3]["extra_info"].pop("case_id"), "1 of 20 benchmarks lack"),
    ],
)
def test_contract_violations(change: Any, message: str) -> None:
    with pytest.raises(RunError, match=re.escape(message)):
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
    assert dict(Run.from_json(doc).cases["inference/resnet18-cpu-bs1-32px-fp32"].settings)["bench_time_s"] == 1.0


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


# ---- schema 2: settings written and read back, for every kind ------------------------------------

RECORDS = {
    "inference": synth.inference_case("resnet18", [2.0, 2.1, 2.2]),
    "train": synth.train_case("resnet18", "1k", 1000, [46.0, 46.5]),
    "plan": synth.plan_case("resnet18", (37, 40), (12, 13)),
    "dense": synth.dense_case("resnet18", "voc:/data/scenes", [32.2, 31.8]),
}
CHANGED = {"inference": {"threads": 2, "edge_profile": "orin-nano-8gb", "power": True},
           "train": {"schedule": "steps 200, warmup 40 steps", "augment": ["standard", "mixup"], "clip_grad": 1.0,
                     "tune": {"grid": {"lr_at_batch_128": [1e-4, 3e-4]}, "selection": "validation"}},
           "plan": {"plan_budget_bytes": 64 * 2**20},
           "dense": {"seg_steps": 60, "seg_layers": "last"}}


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_run_of_each_kind_is_written_and_read_back_with_its_settings(kind: str, tmp_path: Path) -> None:
    record = synth.with_settings(RECORDS[kind], schema=SCHEMA_VERSION, **CHANGED[kind])["extra_info"]
    failed = {**record, "case_id": record["case_id"] + "-other", "status": "failed", "error": "out of memory"}
    results = [CaseResult("t", "t", "p", record, (0.002, 0.0021)), CaseResult("f", "f", "q", failed)]
    doc = build_run(results, machine_info={"baseline_key": synth.CPU_KEY}, commit_info={}, options={"bench_time_s": 1.0})
    assert doc["backbone_bench"]["schema"] == SCHEMA_VERSION == 5
    run = load_run(str(save_run(tmp_path, synth.CPU_KEY, "kinds", doc)), tmp_path)
    expected = {**synth.SETTINGS[kind], **CHANGED[kind]}
    assert run.schema == SCHEMA_VERSION and [c.kind for c in run.cases.values()] == [kind, kind]
    for case in run.cases.values():
        assert dict(case.settings) == expected and list(case.settings) == list(KINDS[kind].settings)
        assert case.settings_digest == settings_digest(expected) == record["settings_digest"]
    assert [c.status for c in run.cases.values()] == ["ok", "failed"]


def test_a_schema_1_file_loads_with_the_settings_version_1_ran_with() -> None:
    run = read_run_file(DATA / "run_cpu_base.json")
    assert run.schema == 1
    inference = run.cases["inference/resnet18-cpu-bs1-32px-fp32"]
    assert dict(inference.settings) == {"num_classes": 10, "threads": 4, "bench_time_s": 1.0, "edge_profile": None, "power": False}
    assert inference.settings_digest == settings_digest(inference.settings)
    assert "settings" not in inference.extra  # the record stays as written
    train = run.cases["train/resnet18-cifar10_5k-cpu-bs64-32px-fp32"]
    assert dict(train.settings) == {
        "threads": None, "seeds": 3, "schedule": "epochs 3", "optimizer": None, "lr": None, "weight_decay": None, "label_smoothing": 0.1,
        "augment": None, "hflip": None, "early_stop": None, "val_fraction": None, "grad_accum": 1, "clip_grad": None, "tune": None,
        "edge_profile": None, "weights_sha256": None, "robustness": None,
    }
    smoke = read_run_file(next((ROOT / "baselines").glob("*/0007_smoke.json")))
    recipe = smoke.cases["train/deit_small_patch16_224-digits_full-cpu-bs128-32px-fp32"].settings
    assert (recipe["optimizer"], recipe["lr"], recipe["augment"], recipe["seeds"], recipe["schedule"]) == ("adamw", 0.001, ["standard"], 1, "epochs 10")


@pytest.mark.parametrize(
    ("extra", "options", "setting", "expected"),
    [
        ({}, {"bench_time_s": 0.5}, "bench_time_s", 0.5),  # the run's --bench-time, from its options
        ({"edge_profile": "orin-nano-8gb", "edge_threads": 6}, {}, "edge_profile", "orin-nano-8gb"),
        ({"edge_profile_name": "rpi5-8gb"}, {}, "edge_profile", "rpi5-8gb"),
        ({"power_unavailable": "no RAPL"}, {}, "power", True),
        ({"power_source": "rapl"}, {}, "power", True),
        ({"threads": 2}, {}, "threads", 2),
    ],
)
def test_version_1_inference_facts(extra: dict[str, Any], options: dict[str, Any], setting: str, expected: Any) -> None:
    bench = copy.deepcopy(RECORDS["inference"])
    bench["extra_info"].update(extra)
    bench["options"] = options
    assert Run.from_json(synth.make_run([bench])).cases[bench["extra_info"]["case_id"]].settings[setting] == expected


def test_version_1_plan_and_train_facts() -> None:
    plan = Run.from_json(synth.make_run([RECORDS["plan"]])).cases["plan/resnet18-cpu-32px-fp32"]
    assert dict(plan.settings) == {"num_classes": 10, "plan_budget_bytes": 512 * 2**20, "edge_profile": None}
    bench = copy.deepcopy(RECORDS["train"])
    bench["extra_info"].update(seeds=5, augment="randaugment", optimizer="adamw", lr=0.001, weight_decay=0.05)
    train = Run.from_json(synth.make_run([bench])).cases[bench["extra_info"]["case_id"]].settings
    assert (train["seeds"], train["augment"], train["optimizer"], train["lr"], train["weight_decay"]) == (5, ["standard", "randaugment"], "adamw", 0.001, 0.05)


def test_version_1_facts_name_every_contract_setting() -> None:
    from harness.results.schema import KIND_SINCE

    assert set(V1_SETTINGS) == set(KIND_NAMES) - set(KIND_SINCE)
    for kind, facts in V1_SETTINGS.items():
        assert tuple(facts) == KINDS[kind].settings, f"{kind}: add what version 1 ran with for each new setting"


def _schema2(change: Any) -> dict[str, Any]:
    doc = synth.make_run([RECORDS["inference"], RECORDS["train"], RECORDS["plan"]], schema=2)
    change(doc["benchmarks"][0]["extra_info"])
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("settings"), "no 'settings' (schema 2 records every case's settings): the file was hand-edited or written by another version"),
        (lambda e: e.update(settings=[1, 2]), "no 'settings'"),
        (lambda e: e["settings"].pop("threads"), "settings missing threads (a inference case records num_classes, threads, bench_time_s, edge_profile, power)"),
        (lambda e: e["settings"].update(epochs=3), "settings unknown epochs"),
        (lambda e: e["settings"].update(threads=8), "is not the digest of its settings"),  # hand-edited value
        (lambda e: e.pop("settings_digest"), "settings_digest None is not the digest of its settings"),
        (lambda e: e.update(settings_digest="0" * 16), "settings_digest '0000000000000000' is not the digest"),
    ],
)
def test_schema_2_settings_are_checked(change: Any, message: str) -> None:
    with pytest.raises(RunError, match="case 'inference/resnet18-cpu-bs1-32px-fp32': ") as info:
        Run.from_json(_schema2(change), source="run.json")
    assert message in str(info.value) and str(info.value).startswith("run.json: ")


def test_a_schema_2_run_reads_its_settings_regardless_of_key_order() -> None:
    def reorder(extra: dict[str, Any]) -> None:
        extra["settings"] = dict(reversed(list(extra["settings"].items())))

    case = Run.from_json(_schema2(reorder)).cases["inference/resnet18-cpu-bs1-32px-fp32"]
    assert list(case.settings) == list(KINDS["inference"].settings)  # the contract's order


def test_a_schema_2_train_case_reads_as_random_weights_and_stays_comparable_with_a_schema_3_scratch_run() -> None:
    """Schema 3 added the train setting weights_sha256; a schema-2 case trained from random weights."""
    old = Run.from_json(synth.make_run([RECORDS["train"]], schema=2)).cases[RECORDS["train"]["extra_info"]["case_id"]]
    new = Run.from_json(synth.make_run([RECORDS["train"]], schema=3)).cases[RECORDS["train"]["extra_info"]["case_id"]]
    assert "weights_sha256" not in synth.make_run([RECORDS["train"]], schema=2)["benchmarks"][0]["extra_info"]["settings"]
    assert old.settings["weights_sha256"] is None and list(old.settings) == list(KINDS["train"].settings)
    assert old.settings_digest == new.settings_digest


def test_a_schema_3_train_case_without_weights_sha256_is_refused() -> None:
    doc = synth.make_run([RECORDS["train"]], schema=3)
    extra = doc["benchmarks"][0]["extra_info"]
    del extra["settings"]["weights_sha256"]
    extra["settings_digest"] = settings_digest(extra["settings"])
    with pytest.raises(RunError, match="settings missing weights_sha256"):
        Run.from_json(doc)


def test_a_baseline_from_before_steps_is_not_comparable_naming_the_schedule() -> None:
    from harness.config.options import default_settings
    from harness.contract import settings_differences
    from harness.kinds import case_settings
    from harness.kinds.train import cases as train_cases

    smoke = read_run_file(next((ROOT / "baselines").glob("*/0008_smoke.json")))
    old = smoke.cases["train/resnet18-digits_full-cpu-bs128-32px-fp32"].settings
    assert (old["schedule"], old["tune"], old["hflip"]) == ("epochs 10", None, None)
    settings = default_settings(backbones=["resnet18"], devices=["cpu"])
    [case] = [c.spec for c in train_cases(settings)]
    new = case_settings(case, settings)
    differences = settings_differences(old, new)
    assert "schedule epochs 10 → steps 100, warmup 20 steps" in differences and "hflip unset → False" in differences
