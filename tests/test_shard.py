"""``--shard K/N``: the split (harness/scale/shards.py) and the plugin end to end (pytester)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from harness.errors import SettingError
from harness.scale.shards import CaseFacts, CostModel, Item, parse_shard, plan, split, stored_seconds
from harness.settings import Shard
from tests.test_plugin import FAST, ROOT, suite  # noqa: F401  (the pytester project fixture)

# --- parsing -------------------------------------------------------------------------------------

def test_parse_shard() -> None:
    assert parse_shard("2/3") == Shard(2, 3)
    assert parse_shard(" 1 / 1 ") == Shard(1, 1)
    assert str(parse_shard("3/3")) == "3/3"


@pytest.mark.parametrize(("text", "message"), [
    ("4/3", "--shard 4/3: shards are numbered 1 to 3; use --shard 1/3 … --shard 3/3"),
    ("0/3", "--shard 0/3: shards are numbered 1 to 3; use --shard 1/3 … --shard 3/3"),
    ("1/0", "--shard 1/0: the shard count N must be at least 1"),
    ("a/b", "--shard wants K/N with whole numbers, e.g. --shard 2/3 (the second of three shards), got 'a/b'"),
    ("3", "--shard wants K/N with whole numbers, e.g. --shard 2/3 (the second of three shards), got '3'"),
])
def test_parse_shard_refuses_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(SettingError) as exc:
        parse_shard(text)
    assert str(exc.value) == message


# --- the split -----------------------------------------------------------------------------------

def _items(costs: list[float]) -> list[Item]:
    return [Item(f"inference/case{i:03d}", "d", cost, "stored") for i, cost in enumerate(costs)]


def _assignment(items: list[Item], count: int) -> dict[str, int]:
    p = split(items, count)
    return {key: index for index in range(1, count + 1) for key in p.keys_of(index)}


def test_every_case_in_exactly_one_shard_whatever_the_input_order() -> None:
    items = _items([random.Random(0).uniform(0.5, 100) for _ in range(50)])
    assignment = _assignment(items, 4)
    assert sorted(assignment) == sorted(i.key for i in items)
    assert sum(len(split(items, 4).keys_of(k)) for k in range(1, 5)) == 50
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    assert _assignment(shuffled, 4) == assignment  # the same split on every machine
    assert split(shuffled, 4).plan_digest == split(items, 4).plan_digest
    assert split(shuffled, 4).selection_digest == split(items, 4).selection_digest


def test_shards_balance_the_cost_not_the_count() -> None:
    # The smoke matrix's shape: 3 training cases of ~100 s among 19 latency cases of ~4 s.
    rng = random.Random(0)
    items = [*_items([rng.uniform(2, 6) for _ in range(19)]), *(Item(f"train/t{i}", "d", rng.uniform(80, 120), "stored") for i in range(3))]
    p = split(items, 3)
    # One training case per shard, the latency cases filling the gaps.
    assert [sum(key.startswith("train/") for key in p.keys_of(k)) for k in (1, 2, 3)] == [1, 1, 1]
    loads = [p.cost_of(k) for k in (1, 2, 3)]
    assert max(loads) / min(loads) < 1.25, loads
    # By count alone, a shard can draw two training cases.
    by_count = split([Item(i.key, i.digest, 1.0, "estimated") for i in items], 3)
    counted = [sum(i.cost_s for i in items if i.key in set(by_count.keys_of(k))) for k in (1, 2, 3)]
    assert max(counted) / min(counted) > 2 * max(loads) / min(loads)


def test_adding_a_case_moves_few_others() -> None:
    equal = _items([10.0] * 60)
    before, after = _assignment(equal, 3), _assignment([*equal, Item("inference/new", "d", 10.0, "stored")], 3)
    assert [key for key in before if before[key] != after[key]] == []
    rng = random.Random(0)
    varied = _items([rng.lognormvariate(0, 1) for _ in range(100)])
    before, after = _assignment(varied, 4), _assignment([*varied, Item("inference/new", "d", 1.0, "stored")], 4)
    moved = [key for key in before if before[key] != after[key]]
    assert len(moved) <= 15, len(moved)  # most cases stay home
    assert split(varied, 4).plan_digest != split([*varied, Item("inference/new", "d", 1.0, "stored")], 4).plan_digest


def test_every_shard_gets_work_when_a_few_cases_dominate() -> None:
    items = [Item("train/huge", "d", 1000.0, "stored"), *_items([1.0, 1.0])]
    p = split(items, 3)
    assert [len(p.keys_of(k)) for k in (1, 2, 3)] == [1, 1, 1]
    free = split(_items([0.0] * 4), 3)  # nothing costs anything: split by count
    assert sorted(len(free.keys_of(k)) for k in (1, 2, 3)) == [1, 1, 2]


def test_shard_record() -> None:
    p = split(_items([1.0, 2.0, 3.0, 4.0]), 2)
    record = p.record(Shard(2, 2))
    assert set(record) == {"index", "count", "selection", "plan", "cases", "expected_s", "costs_from_stored_runs"}
    assert (record["index"], record["count"]) == (2, 2)
    assert record["cases"] == len(p.keys_of(2))
    assert record["expected_s"] == pytest.approx(p.cost_of(2))
    # A setting that changes a case's digest changes the selection, not the plan.
    changed = split([Item(i.key, "other" if i.key.endswith("0") else i.digest, i.cost_s, i.source) for i in _items([1.0, 2.0, 3.0, 4.0])], 2)
    assert changed.selection_digest != p.selection_digest
    assert changed.plan_digest == p.plan_digest


# --- costs ---------------------------------------------------------------------------------------

def _train(case_id: str, backbone: str = "resnet18", images: int = 1000, epochs: int = 10) -> CaseFacts:
    return CaseFacts(case_id, "train", backbone, 32, images, epochs, 1, 1.0)


def test_stored_seconds_prefers_the_recorded_duration() -> None:
    assert stored_seconds("inference", {"duration_s": 4.5}, {"total": 1.0}) == 4.5
    assert stored_seconds("train", {"case_wall_s": 90.0}, {"total": 91.0}) == 90.0
    assert stored_seconds("inference", {}, {"total": 1.25}) == 1.25
    assert stored_seconds("inference", {}, {}) is None


def test_cost_model_uses_stored_medians_and_calibrates_the_rest() -> None:
    model = CostModel({"train/a": [100.0, 120.0, 90.0]}, {("resnet18", 32): 0.04, ("resnet50", 224): 4.1})
    known, unknown = _train("train/a"), _train("train/b", "resnet50", images=500, epochs=10)
    p = plan([("train/a", "d", known), ("train/b", "d", unknown), ("tests/test_x.py::test_plain", "", None)], 2, model)
    assert model.cost(known) == (100.0, "stored")
    # Calibrated on train/a: 100 s / (0.04 GMACs × 1000 images × 10 epochs) = 0.25 s per unit;
    # resnet50 at 32 px: 4.1 × (32/224)² GMACs.
    seconds, source = model.cost(unknown)
    assert source == "estimated"
    assert seconds == pytest.approx(0.25 * 4.1 * (32 / 224) ** 2 * 500 * 10)
    assert {i.key: i.source for i in p.items} == {"train/a": "stored", "train/b": "estimated", "tests/test_x.py::test_plain": "plain"}


def test_a_duplicate_case_id_is_refused() -> None:
    with pytest.raises(SettingError, match="holds 'train/a' twice"):
        plan([("train/a", "d", None), ("train/a", "d", None)], 2, CostModel({}, {}))


# --- the plugin, end to end ----------------------------------------------------------------------

CASES = ("-p", "no:randomly", "--backbones", "resnet10t,regnetx_002", "--batch-sizes", "1,2", "--devices", "cpu", "test_inference.py", *FAST)


def _selected(result: pytest.RunResult) -> list[str]:
    return sorted(line.split("[", 1)[1].rstrip("]") for line in result.outlines if "::test_inference[" in line)


def test_shards_partition_the_selection_after_k(suite: pytest.Pytester) -> None:  # noqa: F811
    serial = _selected(suite.runpytest("--collect-only", "-q", *CASES, "-k", "not bs2 or regnetx"))
    assert len(serial) == 3
    parts = [_selected(suite.runpytest("--collect-only", "-q", *CASES, "-k", "not bs2 or regnetx", "--shard", f"{k}/3")) for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == serial
    assert all(len(part) == 1 for part in parts)


def test_shard_runs_record_the_split_and_every_case_its_duration(suite: pytest.Pytester) -> None:  # noqa: F811
    docs = []
    for k in (1, 2):
        result = suite.runpytest(*CASES, "--shard", f"{k}/2", f"--benchmark-json=shard{k}.json")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines([f"backbone-bench: shard {k}/2: 2 case(s) of the selection, expected * s (0 costed from stored runs)*"])
        docs.append(json.loads((suite.path / f"shard{k}.json").read_text()))
    one, two = (doc["backbone_bench"]["shard"] for doc in docs)
    assert (one["index"], one["count"], two["index"], two["count"]) == (1, 2, 2, 2)
    assert one["selection"] == two["selection"] and one["plan"] == two["plan"]
    ids = [b["extra_info"]["case_id"] for doc in docs for b in doc["benchmarks"]]
    assert sorted(ids) == sorted(f"inference/{b}-cpu-bs{n}-32px-fp32" for b in ("resnet10t", "regnetx_002") for n in (1, 2))
    durations = [b["extra_info"]["duration_s"] for doc in docs for b in doc["benchmarks"]]
    # Each case's wall time covers its timed rounds (0.02 s) and more (model, GMACs, memory).
    assert all(d > 0.02 for d in durations)
    # A shard saved into the storage does not change the split of the shards after it ...
    suite.runpytest(*CASES, "--shard", "1/2", "--benchmark-save=s1").assert_outcomes(passed=2)
    again = suite.runpytest("--collect-only", "-q", *CASES, "--shard", "2/2")
    again.stdout.fnmatch_lines(["backbone-bench: shard 2/2: 2 case(s) of the selection, expected * s (0 costed from stored runs)*"])
    # ... a whole run does: the next split is costed from its durations.
    suite.runpytest(*CASES, "--benchmark-save=serial").assert_outcomes(passed=4)
    again = suite.runpytest("--collect-only", "-q", *CASES, "--shard", "2/2")
    again.stdout.fnmatch_lines(["backbone-bench: shard 2/2: * case(s) of the selection, expected * s (* costed from stored runs)*"])
    assert "(0 costed from stored runs)" not in again.stdout.str()


def test_a_shard_under_xdist_records_the_split(suite: pytest.Pytester) -> None:  # noqa: F811
    result = suite.runpytest(*CASES, "-n", "2", "--shard", "2/2", "--benchmark-json=x.json")
    result.assert_outcomes(passed=2)
    shard = json.loads((suite.path / "x.json").read_text())["backbone_bench"]["shard"]
    assert (shard["index"], shard["count"], shard["cases"]) == (2, 2, 2)


@pytest.mark.parametrize(("value", "message"), [
    ("4/3", "*--shard 4/3: shards are numbered 1 to 3; use --shard 1/3 … --shard 3/3*"),
    ("0/3", "*--shard 0/3: shards are numbered 1 to 3*"),
    ("a/b", "*--shard wants K/N with whole numbers*got 'a/b'*"),
    ("5/5", "*--shard 5/5: the selection has 4 test(s), fewer than 5 shards; use at most 4 shards*"),
])
def test_bad_shards_are_usage_errors_before_any_case_runs(suite: pytest.Pytester, value: str, message: str) -> None:  # noqa: F811
    result = suite.runpytest(*CASES, "--shard", value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "passed" not in result.stdout.str()


def test_the_shard_can_come_from_the_environment(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("BACKBONE_BENCH_SHARD", "2/4")
    assert len(_selected(suite.runpytest("--collect-only", "-q", *CASES))) == 1
    monkeypatch.setenv("BACKBONE_BENCH_SHARD", "9/4")
    result = suite.runpytest("--collect-only", "-q", *CASES)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*$BACKBONE_BENCH_SHARD: --shard 9/4: shards are numbered 1 to 4*"])


def test_costs_are_read_from_the_stored_runs(tmp_path: Path) -> None:
    # The committed smoke baseline (schema 2, written before duration_s existed): training cases
    # cost their case_wall_s, latency cases their timed rounds; GMACs come from the latency cases.
    storage = tmp_path / "baselines"
    (storage / "m").mkdir(parents=True)
    source = ROOT / "baselines" / "Linux-CPython-3.11-64bit-cpu-amd-epyc" / "0008_smoke.json"
    (storage / "m" / "0001_smoke.json").write_text(source.read_text())
    (storage / "m" / "0002_broken.json").write_text("{")  # unreadable: skipped, never fatal
    model = CostModel.from_storage(storage)
    assert len(model.durations) == 22
    assert model.durations["train/resnet18-digits_full-cpu-bs128-32px-fp32"] == pytest.approx(98.57584370799941)
    assert model.durations["inference/resnet18-cpu-bs1-32px-fp32"] == pytest.approx(0.9494977559998006)
    assert model.backbone_gmacs("resnet18", 32) == pytest.approx(0.037118464)
    assert model.backbone_gmacs("resnet18", 64) == pytest.approx(0.037118464 * 4)
    assert CostModel.from_storage(tmp_path / "missing").durations == {}


def test_every_shard_writes_a_run_and_they_merge_into_the_serial_selection(suite: pytest.Pytester) -> None:  # noqa: F811
    # cuda cases skip on this machine: with four shards of four equal-cost cases, some shards
    # draw only skipped cases; they still write their (empty) part, and the parts merge.
    from harness.results.merge import merge_runs

    args = ("-p", "no:randomly", "--backbones", "resnet10t", "--batch-sizes", "1,2", "--devices", "cpu,cuda", "--skip-unavailable", "test_inference.py", *FAST)
    if torch.cuda.is_available():
        pytest.skip("needs cuda cases that skip")
    serial = suite.runpytest(*args, "--benchmark-json=serial.json")
    serial.assert_outcomes(passed=2, skipped=2)
    codes = [suite.runpytest(*args, "--shard", f"{k}/4", f"--benchmark-json=shard{k}.json").ret for k in (1, 2, 3, 4)]
    # A shard whose cases all skipped exits 0 and writes its part: the whole is judged when the parts merge.
    assert codes == [pytest.ExitCode.OK] * 4
    docs = [json.loads((suite.path / f"shard{k}.json").read_text()) for k in (1, 2, 3, 4)]
    assert sorted(len(doc["benchmarks"]) for doc in docs) == [0, 0, 1, 1]
    assert len({doc["machine_info"]["baseline_key"] for doc in docs}) == 1
    merged = merge_runs([str(suite.path / f"shard{k}.json") for k in (1, 2, 3, 4)], suite.path / "baselines")
    whole = json.loads((suite.path / "serial.json").read_text())
    assert sorted(b["extra_info"]["case_id"] for b in merged["benchmarks"]) == sorted(b["extra_info"]["case_id"] for b in whole["benchmarks"])
    assert merged["machine_info"]["baseline_key"] == whole["machine_info"]["baseline_key"]
    # An empty part reads back: compare names its cases missing, report refuses it in one line.
    from harness.__main__ import main

    empty = next(str(suite.path / f"shard{k}.json") for k, doc in zip((1, 2, 3, 4), docs, strict=True) if not doc["benchmarks"])
    assert main(["compare", str(suite.path / "serial.json"), empty, "--storage", str(suite.path / "baselines")]) == 0
    assert main(["report", empty, "--out", str(suite.path / "report")]) == 2
    assert not (suite.path / "report").exists()
