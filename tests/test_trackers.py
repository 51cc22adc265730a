"""``--track``: each case's params, metrics and curve logged to MLflow, W&B and TensorBoard, and read
back with each tracker's own library equal to the run's JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.contract import TRACKERS
from harness.results import trackers
from harness.results.trackers import Tracked, cases_of, run_label, track_run, tracker_module
from tests.projects import CONFTEST

ROOT = Path(__file__).resolve().parents[1]
# A committed smoke run: 19 inference cases and 3 digits trainings with 10-point curves.
SMOKE = ROOT / "baselines" / "Linux-CPython-3.11-64bit-cpu-amd-epyc" / "0009_smoke.json"
DEIT = "train/deit_small_patch16_224-digits_full-cpu-bs128-32px-fp32"


def _installed(name: str) -> object:
    present = importlib.util.find_spec(name) is not None
    return pytest.param(name, marks=pytest.mark.skipif(not present, reason=f"the {name} extra is not installed: pip install -e '.[{name}]'"))


def test_a_record_becomes_params_metrics_of_its_kind_and_curves_by_epoch() -> None:
    record = {"kind": "train", "case_id": "train/r-digits_50-cpu-bs8-32px-fp32", "backbone": "r", "weights": None, "edge": False,
              "settings": {"seeds": 2, "augment": ["standard"]}, "settings_digest": "ab12", "status": "ok",
              "top1": 50.0, "top5": 90.5, "params": 11, "latency_p50_ms": 3.0, "top1_per_seed": [49.0, 51.0], "eval_time_s": float("nan"),
              "curve": [{"epoch": 1, "step": 4, "loss": 2.5, "val_top1": 30.0}, {"epoch": 2, "step": 8, "loss": 1.5, "val_top1": 50.0}]}
    assert trackers.tracked(record) == Tracked(
        "train/r-digits_50-cpu-bs8-32px-fp32",
        # Identity and resolved values as text (JSON but for strings), settings flattened; no metric,
        # list or curve among them. params (a count) is an inference metric, so no param either.
        {"kind": "train", "case_id": "train/r-digits_50-cpu-bs8-32px-fp32", "backbone": "r", "weights": "null", "edge": "false",
         "settings.seeds": "2", "settings.augment": '["standard"]', "settings_digest": "ab12", "status": "ok"},
        # The train kind's metrics it holds; latency is not the train kind's, a NaN is no value.
        {"top1": 50.0, "top5": 90.5},
        {"curve/loss": [(1, 2.5), (2, 1.5)], "curve/val_top1": [(1, 30.0), (2, 50.0)]},
    )


def test_an_absent_tracker_package_is_one_usage_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    # mlflow and wandb absent, tensorboard present, whatever this machine has installed.
    fake = {"mlflow": None, "wandb": None, "tensorboard": real("json")}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: fake[name] if name in fake else real(name, *a))
    assert trackers.missing_message(["mlflow", "tensorboard", "wandb"]) == (
        "--track mlflow,wandb: mlflow needs the mlflow package, wandb needs the wandb package, which is not installed; "
        "pip install -e '.[mlflow,wandb]' (or drop it from --track)")
    assert trackers.missing_message(["tensorboard"]) is None
    with pytest.raises(ValueError, match=r"unknown tracker 'tensorbord' \(did you mean tensorboard\?\); valid: mlflow, wandb, tensorboard"):
        tracker_module("tensorbord")


@pytest.mark.parametrize("name", [_installed(name) for name in TRACKERS])
def test_each_tracker_reads_back_the_runs_json(name: str, tmp_path: Path) -> None:
    run = json.loads(SMOKE.read_text())
    lines, ok = track_run(run, [name], tmp_path)
    assert ok and lines[0].startswith(f"backbone-bench: tracked 22 case(s) in {name}: ")
    back = tracker_module(name).read(tmp_path, run_label(run))
    assert back == {case.name: case for case in cases_of(run)}  # every param, metric and curve point, exactly
    deit = back[DEIT]
    assert deit.metrics["top1"] == 88.44444444444444 and deit.metrics["peak_train_mem_bytes"] == 457860880.0
    assert deit.curves["curve/val_top1"][:2] == [(1, 37.111111111111114), (2, 42.66666666666667)]
    assert deit.params["settings_digest"] == "bb174640fc51eb1e" and deit.params["protocol"] == "scratch"
    assert tracker_module(name).read(tmp_path, "another session") == {}


def test_track_with_a_package_absent_exits_4_before_any_case(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST + "import importlib.util\n_real = importlib.util.find_spec\n"
                          "_fake = {'mlflow': None, 'tensorboard': _real('json')}  # mlflow absent, tensorboard present\n"
                          "importlib.util.find_spec = lambda name, *a: _fake[name] if name in _fake else _real(name, *a)\n")
    pytester.makepyfile(test_inference=(ROOT / "benchmarks" / "test_inference.py").read_text())
    result = pytester.runpytest("--track", "tensorboard,mlflow", "--backbones", "resnet18", "--devices", "cpu", "test_inference.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --track mlflow: mlflow needs the mlflow package, which is not installed; "
                                 "pip install -e '.[mlflow]' (or drop it from --track)"])
    assert not (pytester.path / "tracking").exists()


@pytest.mark.parametrize("name", [_installed("tensorboard")])
def test_a_session_tracks_its_cases_serial_and_under_xdist_alike(name: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inference=(ROOT / "benchmarks" / "test_inference.py").read_text())
    args = ("--backbones", "resnet18,lcnet_100", "--batch-sizes", "1", "--devices", "cpu", "--bench-time", "0.02", "-p", "no:cacheprovider",
            "--track", name, "test_inference.py")
    for json_name, extra in (("serial.json", ()), ("parallel.json", ("-n", "2"))):
        result = pytester.runpytest_subprocess(*args, *extra, f"--track-dir=tracked-{json_name[:-5]}", f"--benchmark-json={json_name}")
        result.assert_outcomes(passed=2)
        result.stdout.fnmatch_lines([f"backbone-bench: tracked 2 case(s) in {name}: *"])
        run = json.loads((pytester.path / json_name).read_text())
        back = tracker_module(name).read(pytester.path / f"tracked-{json_name[:-5]}", run_label(run))
        assert back == {case.name: case for case in cases_of(run)}
        assert sorted(back) == ["inference/lcnet_100-cpu-bs1-32px-fp32", "inference/resnet18-cpu-bs1-32px-fp32"]
        assert set(back["inference/resnet18-cpu-bs1-32px-fp32"].metrics) == {
            "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "throughput_ips", "params", "gmacs", "weights_bytes",
            "peak_mem_bytes", "duration_s"}
