"""The contract is one registry: kinds, metrics, settings and markers agree everywhere they are read."""

from __future__ import annotations

import configparser
import dataclasses
from pathlib import Path

import pytest
import torch

from harness.config.options import default_settings
from harness.contract import FAMILIES, KIND_NAMES, KINDS, METRICS, kind_metrics, settings_differences, settings_digest
from harness.kinds import base_record, case_settings, outcome
from harness.matrix.cases import MARKERS, CaseSpec
from harness.results.tolerances import parse_tolerances

ROOT = Path(__file__).resolve().parents[1]


def test_every_kind_metric_is_a_registered_metric_and_every_metric_belongs_to_a_kind() -> None:
    for kind in KINDS.values():
        assert set(kind.metrics) <= set(METRICS), kind.name
    assert {m.key for m in kind_metrics()} == set(METRICS)


def test_default_tolerances_are_the_rows_with_a_tolerance() -> None:
    gated = {m.key for m in METRICS.values() if m.tolerance is not None}
    assert {t.metric for t in parse_tolerances(None).active()} == gated
    assert gated == {"latency_p50_ms", "params", "gmacs", "instructions", "peak_mem_bytes", "top1", "robust_top1", "peak_train_mem_bytes",
                     "plan_inference_searched_max_batch", "plan_train_searched_max_batch", "miou"}


def _spec(kind: str) -> CaseSpec:
    fields = {"dataset": "digits", "subset": "full"} if kind == "train" else {"dataset": "voc:/data/VOC2012"} if kind == "dense" else {}
    return CaseSpec(kind=kind, backbone="resnet18", family="cnn", edge=True, device="cpu", batch_size=128 if kind == "train" else 1,  # type: ignore[arg-type]
                    img_size=32, precision="fp32", **fields)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_each_kind_resolves_exactly_its_contract_settings(kind: str) -> None:
    settings = default_settings(backbones=["resnet18"], devices=["cpu"])
    values = case_settings(_spec(kind), settings)
    assert tuple(values) == KINDS[kind].settings
    record = base_record(_spec(kind), settings)
    assert record["settings_digest"] == settings_digest(values) and record["kind"] == kind


def test_training_settings_are_the_resolved_recipe() -> None:
    spec = _spec("train")
    default = case_settings(spec, default_settings(backbones=["resnet18"], devices=["cpu"]))
    # digits trains its measured 100 steps (20 warming up); SGD at 0.1 x 128/256; crop + flip-free 'standard'.
    assert (default["schedule"], default["optimizer"], default["lr"], default["augment"], default["hflip"], default["seeds"]) == (
        "steps 100, warmup 20 steps", "sgd", 0.05, ["standard"], False, 1)
    assert default["tune"] is None  # scratch searches nothing
    # --epochs 10 is 10 x 10 steps of the 1,347 digits at batch 128: the default, named, is the same case.
    explicit = case_settings(spec, default_settings(backbones=["resnet18"], devices=["cpu"], epochs=10))
    assert settings_digest(explicit) == settings_digest(default)
    assert settings_digest(case_settings(spec, default_settings(backbones=["resnet18"], devices=["cpu"], steps=100))) == settings_digest(default)
    two = case_settings(spec, default_settings(backbones=["resnet18"], devices=["cpu"], epochs=2))
    assert settings_differences(default, two) == ["schedule steps 100, warmup 20 steps → steps 20, warmup 4 steps"]


def test_a_cuda_training_case_does_not_digest_cpu_threads() -> None:
    # An xdist worker gets a share of the CPU threads; a CUDA case's kernels do not depend on them,
    # so its serial and -n 2 runs stay comparable. On the CPU the count changes the arithmetic.
    settings = default_settings(backbones=["resnet18"], devices=["cpu"])
    cpu = case_settings(_spec("train"), settings)
    cuda = case_settings(dataclasses.replace(_spec("train"), device="cuda"), settings)
    assert cpu["threads"] == torch.get_num_threads() and cuda["threads"] is None


def test_inference_threads_are_a_setting() -> None:
    spec = _spec("inference")
    one = case_settings(spec, default_settings(backbones=["resnet18"], devices=["cpu"]))
    two = case_settings(spec, default_settings(backbones=["resnet18"], devices=["cpu"], threads=2))
    assert settings_differences(one, two) == ["threads 1 → 2"]


def test_digest_ignores_key_order_and_sees_every_value() -> None:
    assert settings_digest({"a": 1, "b": [1, 2]}) == settings_digest({"b": [1, 2], "a": 1})
    assert settings_digest({"a": 1}) != settings_digest({"a": 1.5})
    assert settings_differences({"lr": 0.05, "clip_grad": None}, {"lr": 0.1, "clip_grad": 1.0}) == ["lr 0.05 → 0.1", "clip_grad unset → 1"]


def test_markers_are_declared_once_from_the_contract() -> None:
    assert set(KIND_NAMES) | set(FAMILIES) <= set(MARKERS)
    ini = configparser.ConfigParser()
    ini.read(ROOT / "pytest.ini")
    assert "markers" not in ini["pytest"]  # the plugin registers them; a second list would drift
    spec = _spec("inference")
    assert set(spec.markers()) <= set(MARKERS)


def test_one_policy_decides_skip_fail_or_bug() -> None:
    from harness.data.errors import DatasetCorrupt, DatasetUnavailable
    from harness.measure.runtimes import RuntimeUnsupported

    where = {"dataset": "cifar10", "path": Path("/data")}
    assert outcome(DatasetUnavailable("cifar10 is not under /data: pass --data-root or --download", **where)) == (
        "skip", "cifar10 is not under /data: pass --data-root or --download")
    assert outcome(RuntimeUnsupported("onnxruntime is not installed")) == ("skip", "onnxruntime is not installed")
    assert outcome(DatasetCorrupt("data_batch_1: md5 mismatch\nmore", **where)) == ("fail", "corrupt dataset: data_batch_1: md5 mismatch")
    assert outcome(MemoryError()) == ("fail", "out of memory: MemoryError")
    assert outcome(KeyError("bug")) is None  # a bug propagates with its traceback
