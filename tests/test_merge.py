"""Merging shard runs: the runs of ``pytest --shard K/N`` sessions become one run that every reader
reads back; runs that are not together every shard of one split are refused, naming the runs and
the fix, before anything is written."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.__main__ import main
from harness.config.options import default_settings
from harness.contract import METRICS, SCHEMA_VERSION
from harness.results.gate import gate_run, load_baseline
from harness.results.merge import MergeError, merge_runs
from harness.results.records import CaseResult, build_run
from harness.results.runs import Run, RunError, load_run
from harness.results.storage import dumps, save_run
from tests.data import synth

DATA = Path(__file__).parent / "data"
KEY = synth.CPU_KEY
FAILED_ID = "inference/mobilevit_xxs-cpu-bs8-32px-fp32"


def _result(bench: dict[str, Any], samples_s: Iterable[float]) -> CaseResult:
    """A case as the plugin hands it to the writer: its record (with the session's duration) and raw rounds."""
    record = {**bench["extra_info"], "duration_s": round(sum(samples_s) + 2.0, 3)}
    return CaseResult(bench["name"], bench["fullname"], bench["param"], record, tuple(samples_s))


def selection(*, failed: bool = True, **settings: Any) -> list[CaseResult]:
    """One study's cases: every backbone's latency case, two training cases, a batch plan and (with
    ``failed``) an out-of-memory case, recorded under the synthetic defaults with ``settings`` applied."""
    rng = np.random.default_rng(7)
    results = []
    for backbone, (_, _, _, ms, _) in synth.BACKBONES.items():
        bench = synth.with_settings(synth.inference_case(backbone, synth.latency_samples(rng, ms)), schema=SCHEMA_VERSION, **settings)
        results.append(_result(bench, [s / 1000 for s in bench["extra_info"]["latency_samples_ms"]]))
    for backbone, subset, size, seeds in (("resnet18", "1k", 1000, [46.0, 46.5, 45.8]), ("efficientnet_b0", "5k", 5000, [61.2, 60.7, 61.0])):
        bench = synth.with_settings(synth.train_case(backbone, subset, size, seeds), schema=SCHEMA_VERSION, **settings)
        results.append(_result(bench, [bench["extra_info"]["train_time_s"]]))
    plan = synth.plan_case("resnet18", (37, 40), (12, 13))
    results.append(_result(synth.with_settings(plan, schema=SCHEMA_VERSION, **{k: v for k, v in settings.items() if k in synth.SETTINGS["plan"]}), [12.0]))
    if failed:
        bench = synth.with_settings(synth.inference_case("mobilevit_xxs", [5.0], batch_size=8), schema=SCHEMA_VERSION, **settings)
        record = {k: v for k, v in bench["extra_info"].items() if k not in METRICS and k != "latency_samples_ms"}
        record.update(status="failed", error="out of memory")
        results.append(CaseResult(bench["name"], bench["fullname"], bench["param"], record))
    assert any(r.record["case_id"] == FAILED_ID for r in results) == failed
    return results


def _digest(lines: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def whole_run(results: list[CaseResult], shard: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run as the plugin writes it on the synthetic Xeon: of the whole selection in one session
    (what the shards together stand for), or with ``shard`` of one shard session."""
    facts = synth.make_run([])
    return build_run(results, machine_info=facts["machine_info"], commit_info=facts["commit_info"], options={"bench_time_s": 1.0}, shard=shard)


def shard_runs(results: list[CaseResult], count: int = 3, *, rotate: int = 0) -> list[dict[str, Any]]:
    """The runs of ``--shard 1/count`` … ``count/count`` over ``results``, as the plugin writes them.

    Cases go to shards round-robin over their sorted ids (``rotate`` shifts the split, as changed
    stored durations would); the digests are made the way harness/scale/shards.py makes them.
    """
    ids = sorted(r.record["case_id"] for r in results)
    where = {case_id: (i + rotate) % count + 1 for i, case_id in enumerate(ids)}
    digests = {r.record["case_id"]: r.record["settings_digest"] for r in results}
    chosen = _digest(f"{case_id}\t{digests[case_id]}" for case_id in ids)
    plan = _digest(f"{case_id}\t{where[case_id]}" for case_id in ids)
    docs = []
    for index in range(1, count + 1):
        mine = [r for r in results if where[r.record["case_id"]] == index]
        shard = {"index": index, "count": count, "selection": chosen, "plan": plan, "cases": len(mine)}
        doc = whole_run(mine, shard)
        doc["datetime"] = f"2026-11-20T1{(0, 2, 1)[(index - 1) % 3]}:00:00+00:00"  # shard 2 finished last
        docs.append(doc)
    return docs


def write(folder: Path, docs: list[dict[str, Any]], stem: str = "shard") -> list[str]:
    """Each run as ``folder/<stem>K.json`` (relative paths: messages name files as the user typed them)."""
    folder.mkdir(parents=True, exist_ok=True)
    refs = []
    for index, doc in enumerate(docs, 1):
        path = folder / f"{stem}{index}.json"
        path.write_text(dumps(doc), encoding="utf-8")
        refs.append(str(path))
    return refs


@pytest.fixture()
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- the merged run ----------------------------------------------------------------------------


def test_three_shards_merge_into_the_run_of_the_whole_selection(here: Path) -> None:
    results = selection()
    docs = shard_runs(results)
    refs = write(Path("shards"), docs)
    merged = merge_runs(refs, here / "baselines")

    everything = {r.record["case_id"] for r in results}
    ok = [b["extra_info"]["case_id"] for b in merged["benchmarks"]]
    failed = [f["extra_info"]["case_id"] for f in merged["backbone_bench"]["failed"]]
    assert set(ok) | set(failed) == everything and len(ok) + len(failed) == len(everything) == 9
    assert failed == [FAILED_ID]
    # Every entry is carried as its shard wrote it: the same extra_info keys and values, the same stats.
    written = {b["extra_info"]["case_id"]: b for doc in docs for b in doc["benchmarks"]}
    for entry in merged["benchmarks"]:
        original = written[entry["extra_info"]["case_id"]]
        assert list(entry["extra_info"]) == list(original["extra_info"]) and entry == original
    assert merged["backbone_bench"]["failed"] == [f for doc in docs for f in doc["backbone_bench"]["failed"]]
    # The layout of a run written in one session, sorted by fullname, with the shards' record.
    whole = whole_run(results)
    assert list(merged) == list(whole) and merged["benchmarks"] == sorted(whole["benchmarks"], key=lambda b: b["fullname"])
    assert [b["fullname"] for b in merged["benchmarks"]] == sorted(b["fullname"] for b in merged["benchmarks"])
    assert set(merged["backbone_bench"]) == {"schema", "failed", "merged"} and merged["backbone_bench"]["schema"] == SCHEMA_VERSION
    shard = docs[0]["backbone_bench"]["shard"]
    assert merged["backbone_bench"]["merged"] == {
        "count": 3, "selection": shard["selection"], "plan": shard["plan"],
        "shards": [{"index": k, "source": f"shards/shard{k}.json", "datetime": docs[k - 1]["datetime"], "cases": docs[k - 1]["backbone_bench"]["shard"]["cases"]}
                   for k in (1, 2, 3)],
    }
    assert sum(s["cases"] for s in merged["backbone_bench"]["merged"]["shards"]) == 9
    assert merged["datetime"] == docs[1]["datetime"] == "2026-11-20T12:00:00+00:00"  # the newest shard's
    assert merged["machine_info"] == docs[0]["machine_info"] and merged["commit_info"] == docs[0]["commit_info"]
    assert merged["version"] == metadata.version("pytest-benchmark")
    run = Run.from_json(merged)
    assert run.cases[FAILED_ID].status == "failed" and len(run.cases) == 9
    # The order the shards are given in changes nothing.
    assert merge_runs(refs[::-1], here / "baselines") == merged


def test_the_merged_run_reads_back_in_every_reader(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = selection(failed=False)  # a failed case fails compare and the gate by design: see the next test
    storage = here / "baselines"
    refs = write(Path("shards"), shard_runs(results))
    assert main(["merge", *refs, "--save", "merged", "--storage", str(storage)]) == 0
    path = storage / KEY / "0001_merged.json"
    assert capsys.readouterr().out == f"merged 3 shard(s), 8 case(s) into {path}\n"
    save_run(storage, KEY, "whole", whole_run(results))  # the same cases measured in one session

    run = load_run("merged", storage)
    assert run.source == f"{KEY}/0001_merged" and run.schema == SCHEMA_VERSION and len(run.cases) == 8
    assert main(["compare", "merged", "merged", "--storage", str(storage)]) == 0
    assert main(["compare", "whole", "merged", "--storage", str(storage)]) == 0
    assert main(["compare", "merged", "whole", "--storage", str(storage)]) == 0
    assert "OK:" in capsys.readouterr().out
    assert main(["report", "merged", "--storage", str(storage), "--out", str(here / "report")]) == 0
    report = (here / "report" / "report.md").read_text()
    assert all(backbone in report for backbone in synth.BACKBONES) and "## Batch plans" in report
    lines, code = gate_run(load_baseline("whole", storage, KEY), json.loads(path.read_text()), default_settings(), storage=storage)
    assert code == 0 and lines[-1].startswith("OK:")
    assert gate_run(load_baseline("merged", storage, KEY), whole_run(results), default_settings(), storage=storage)[1] == 0
    shown = subprocess.run([sys.executable, "-m", "pytest_benchmark", "--storage", f"file://{storage}", "compare", str(path), "--columns=median,rounds"],
                           capture_output=True, text=True, check=True)
    for result in results:
        assert result.name in shown.stdout


def test_a_failed_case_of_a_shard_is_failed_in_the_merged_run(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = selection()
    storage = here / "baselines"
    assert main(["merge", *write(Path("shards"), shard_runs(results)), "--save", "merged", "--storage", str(storage)]) == 0
    save_run(storage, KEY, "whole", whole_run([r for r in results if r.ok]))
    capsys.readouterr()
    assert main(["compare", "whole", "merged", "--storage", str(storage)]) == 1
    out = capsys.readouterr().out
    assert f"{FAILED_ID}" in out and "out of memory" in out and "1 failing" in out


# ---- refusals: named runs, the fix, nothing written ----------------------------------------------

Make = Callable[[list[dict[str, Any]]], list[str]]


def _copy_of_shard_2(docs: list[dict[str, Any]]) -> list[str]:
    refs = write(Path("shards"), docs)
    shutil.copy(refs[1], "shards/again.json")
    return [refs[0], refs[1], "shards/again.json", refs[2]]


def _case_in_two_runs(docs: list[dict[str, Any]]) -> list[str]:
    docs[1]["benchmarks"].append(docs[0]["benchmarks"][0])
    return write(Path("shards"), docs)


def _edited(path: tuple[str, ...], value: Any, shard: int) -> Make:
    """Set ``docs[shard]`` at ``path`` to ``value`` (delete it for ``None``) and write the three runs."""
    def make(docs: list[dict[str, Any]]) -> list[str]:
        *parents, last = path
        node = docs[shard]
        for key in parents:
            node = node[key]
        if value is None:
            del node[last]
        else:
            node[last] = value
        return write(Path("shards"), docs)
    return make


def _on_hosts(slow: float, capability: str = "AVX2") -> Make:
    """Every shard fingerprinted alike but shard 2, whose calibration is ``slow`` times slower and whose
    torch dispatches to ``capability``."""
    def make(docs: list[dict[str, Any]]) -> list[str]:
        for i, doc in enumerate(docs):
            score = 1.0 * (slow if i == 1 else 1)
            doc["machine_info"]["host"] = {"schema": 1, "capability": capability if i == 1 else "AVX2", "cpu_flags": ["avx2", "fma"], "cpus": 2,
                                           "gpu": None, "calibration": {"score_ms": score, "gemm_ms": score, "conv_ms": score}}
        return write(Path("shards"), docs)
    return make


def _third_from(other: Callable[[], list[dict[str, Any]]]) -> Make:
    """Shards 1 and 2 of the study, and shard 3 of ``other``."""
    return lambda docs: write(Path("shards"), [docs[0], docs[1], other()[2]])


CUDA = synth.CUDA_KEY
REFUSALS: dict[str, tuple[Make, str]] = {
    "not a shard run": (
        _edited(("backbone_bench", "shard"), None, 1),
        "shards/shard2.json is not a shard run (it has no backbone_bench.shard); merge only the runs written by pytest --shard K/N",
    ),
    "a malformed shard record": (
        _edited(("backbone_bench", "shard", "index"), 4, 0),
        "shards/shard1.json: backbone_bench.shard is not a shard record (index 4 is not 1 to 3); the file was hand-edited",
    ),
    "different machines": (
        _edited(("machine_info", "baseline_key"), CUDA, 2),
        f"shards/shard1.json (baseline key {KEY}) and shards/shard3.json (baseline key {CUDA}) ran on different machines",
    ),
    "different host classes": (
        _on_hosts(1.0, "DEFAULT"),
        "shards/shard1.json and shards/shard2.json ran on hosts of different classes (capability AVX2 → DEFAULT); a merged run's "
        "latencies are one host's: run every shard on one class of node",
    ),
    "different software": (
        _edited(("machine_info", "torch"), "2.6.0", 1),
        "shards/shard1.json and shards/shard2.json ran different software (torch 2.5.1 vs 2.6.0); a merged run has one software "
        "stack: install the same lock on every shard machine",
    ),
    "different commits": (
        _edited(("commit_info", "id"), "9a8b7c6", 1),
        "shards/shard1.json ran commit 3f2c1e0 and shards/shard2.json ran commit 9a8b7c6; every shard must run the same checkout",
    ),
    "different shard counts": (
        _third_from(lambda: shard_runs(selection(), 4)),
        "shards/shard1.json (shard 1/3) and shards/shard3.json (shard 3/4) belong to different splits; merge the shards of one split "
        "(all --shard K/3 or all --shard K/4)",
    ),
    "different settings": (
        _third_from(lambda: shard_runs(selection(threads=2))),
        "shards/shard1.json (shard 1/3) and shards/shard3.json (shard 3/3) are shards of different selections or settings (selection digest ",
    ),
    "a different split": (
        _third_from(lambda: shard_runs(selection(), rotate=1)),
        "shards/shard1.json (shard 1/3) and shards/shard3.json (shard 3/3) split the selection differently (plan digest ",
    ),
    "the same file twice": (
        lambda docs: [*write(Path("shards"), docs), "shards/shard2.json"],
        "shard 2/3 given twice: shards/shard2.json and shards/shard2.json (the same file); pass each shard's run once",
    ),
    "a copy of a shard": (
        _copy_of_shard_2,
        "shard 2/3 given twice: shards/shard2.json and shards/again.json; pass each shard's run once",
    ),
    "a case in two runs": (
        _case_in_two_runs,
        "is in both shards/shard1.json (shard 1/3) and shards/shard2.json (shard 2/3); a split runs every case in one shard",
    ),
    "a missing shard": (
        lambda docs: write(Path("shards"), docs)[:2],
        "missing shard 3/3 (given: 1/3 shards/shard1.json, 2/3 shards/shard2.json); run `pytest ... --shard 3/3` with the other "
        "shards' arguments and merge again",
    ),
    "two missing shards": (
        lambda docs: write(Path("shards"), docs)[1:2],
        "missing shard 1/3, 3/3 (given: 2/3 shards/shard2.json); run `pytest ... --shard 1/3` and `pytest ... --shard 3/3`",
    ),
}


@pytest.mark.parametrize("what", list(REFUSALS))
def test_refusals_name_the_runs_and_write_nothing(what: str, here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, message = REFUSALS[what]
    refs = make(shard_runs(selection()))
    # The refusal checks run after every shard refused here was read and validated.
    storage = here / "baselines"
    inputs = {p: p.read_bytes() for p in Path("shards").iterdir()}
    with pytest.raises(MergeError) as info:
        merge_runs(refs, storage)
    assert message in str(info.value) and "\n" not in str(info.value)
    if "digest" in message:
        shard1, shard3 = (json.loads(Path(refs[i]).read_text())["backbone_bench"]["shard"] for i in (0, 2))
        key = "plan" if "plan digest" in message else "selection"
        assert f"{shard1[key]} vs {shard3[key]}" in str(info.value) and shard1[key] != shard3[key]
    capsys.readouterr()
    assert main(["merge", *refs, "--save", "merged", "--storage", str(storage)]) == 2
    assert main(["merge", *refs, "--json", "merged.json", "--storage", str(storage)]) == 2
    assert capsys.readouterr().err == f"error: {info.value}\n" * 2
    assert not storage.exists() and not Path("merged.json").exists()
    assert {p: p.read_bytes() for p in Path("shards").iterdir()} == inputs


def test_shards_on_one_host_class_merge_though_their_calibrations_differ(here: Path) -> None:
    # Shards run side by side on one node calibrate slower by each other's load (1.9x seen here): the
    # kernels and CPUs decide, not the calibration.
    refs = _on_hosts(3.7)(shard_runs(selection()))
    merged = merge_runs(refs, here / "baselines")
    assert len(merged["benchmarks"]) == sum(len(json.loads(Path(ref).read_text())["benchmarks"]) for ref in refs) > 0


def test_the_different_settings_message_says_to_run_the_same_arguments(here: Path) -> None:
    refs = _third_from(lambda: shard_runs(selection(threads=2)))(shard_runs(selection()))
    with pytest.raises(MergeError, match=r"every shard must run the same pytest arguments \(-k, -m, options\) plus --shard K/3$"):
        merge_runs(refs, here)


def test_a_different_split_says_why_and_how_to_avoid_it(here: Path) -> None:
    refs = _third_from(lambda: shard_runs(selection(), rotate=1))(shard_runs(selection()))
    with pytest.raises(MergeError, match=re.escape(
        "e.g. because the stored durations changed between shard sessions; every shard must run against the same baselines/ folder"
    )):
        merge_runs(refs, here)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "shards/shard2.json: the file is empty"),
        ('{"benchmarks": [', "shards/shard2.json: corrupt JSON at line 1"),
        ((DATA / "other_tool.json").read_text(), "shards/shard2.json: 1 of 1 benchmarks lack extra_info 'case_id'/'kind'"),
    ],
)
def test_a_bad_file_gets_the_readers_error(content: str, message: str, here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = write(Path("shards"), shard_runs(selection()))
    Path(refs[1]).write_text(content)
    with pytest.raises(RunError) as info:
        merge_runs(refs, here / "baselines")
    assert str(info.value).startswith(message) and not isinstance(info.value, MergeError)
    assert main(["merge", *refs, "--save", "merged", "--storage", str(here / "baselines")]) == 2
    assert capsys.readouterr().err == f"error: {info.value}\n" and not (here / "baselines").exists()


def test_unknown_refs_get_the_readers_error(here: Path) -> None:
    with pytest.raises(RunError, match=r"^shards/nope\.json: no such file"):
        merge_runs(["shards/nope.json"], here)
    with pytest.raises(RunError, match="storage directory .* does not exist"):
        merge_runs(["0001"], here / "baselines")
    with pytest.raises(MergeError, match="nothing to merge"):
        merge_runs([], here)


# ---- the command line ----------------------------------------------------------------------------


def test_save_adds_a_new_numbered_run_each_time(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = here / "baselines"
    refs = write(Path("shards"), shard_runs(selection()))
    for number in (1, 2):
        assert main(["merge", *refs, "--save", "nightly", "--benchmark-storage", f"file://{storage}"]) == 0
        assert capsys.readouterr().out == f"merged 3 shard(s), 9 case(s) into {storage / KEY / f'{number:04d}_nightly.json'}\n"
    first, second = sorted((storage / KEY).iterdir())
    assert [first.name, second.name] == ["0001_nightly.json", "0002_nightly.json"]
    assert first.read_bytes() == second.read_bytes()  # the same shards merge into the same file


def test_shards_saved_in_the_storage_merge_by_run_id(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = here / "baselines"
    for index, doc in enumerate(shard_runs(selection()), 1):
        save_run(storage, KEY, f"study-{index}", doc)
    assert main(["merge", "study-1", "study-2", f"{KEY}/0003", "--save", "study", "--storage", str(storage)]) == 0
    assert capsys.readouterr().out.endswith(f"into {storage / KEY / '0004_study.json'}\n")
    merged = load_run("study", storage)
    assert len(merged.cases) == 9
    doc = json.loads((storage / KEY / "0004_study.json").read_text())
    assert [s["source"] for s in doc["backbone_bench"]["merged"]["shards"]] == [f"{KEY}/000{k}_study-{k}" for k in (1, 2, 3)]


def test_json_writes_a_new_file_and_refuses_an_existing_one(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refs = write(Path("shards"), shard_runs(selection()))
    assert main(["merge", *refs, "--json", "out/merged.json"]) == 0
    assert capsys.readouterr().out == "merged 3 shard(s), 9 case(s) into out/merged.json\n"
    written = Path("out/merged.json").read_bytes()
    assert len(load_run("out/merged.json", here).cases) == 9
    assert main(["merge", *refs, "--json", "out/merged.json"]) == 2
    assert capsys.readouterr().err == "error: --json out/merged.json exists; merge never overwrites a file: pass a new path\n"
    assert Path("out/merged.json").read_bytes() == written
    assert sorted(p.name for p in Path("out").iterdir()) == ["merged.json"]  # no temporary file left behind


def test_a_bad_run_name_is_refused_before_any_shard_is_read(here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", "missing.json", "--save", "my run", "--storage", str(here / "baselines")]) == 2
    assert capsys.readouterr().err.startswith("error: invalid run name 'my run': a run name starts with a letter or digit")
    assert not (here / "baselines").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["merge", "a.json", "--save", "x", "--json", "b.json"], "argument --json: not allowed with argument --save"),
        (["merge", "a.json"], "one of the arguments --save --json is required"),
        (["merge", "--save", "x"], "the following arguments are required: RUN"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], message: str, here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
