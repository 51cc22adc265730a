"""CaseSpec: ids, markers and JSON identity keys come from the spec alone."""

from __future__ import annotations

import dataclasses

import pytest

from harness.matrix.cases import CaseSpec


def spec(**changes: object) -> CaseSpec:
    base = CaseSpec(kind="inference", backbone="convnextv2_tiny", family="cnn", edge=False, device="cpu", batch_size=1, img_size=32, precision="fp32")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_inference_id_reads_like_the_issue() -> None:
    assert spec().id == "convnextv2_tiny-cpu-bs1-32px-fp32"
    assert spec(channels_last=True, runtime="onnxruntime").id == "convnextv2_tiny-cpu-bs1-32px-fp32-cl-onnxruntime"
    assert spec().case_id == "inference/convnextv2_tiny-cpu-bs1-32px-fp32"


def test_train_id_names_dataset_and_subset() -> None:
    train = spec(kind="train", backbone="resnet18", device="cuda", batch_size=128, dataset="cifar10", subset="5k")
    assert train.id == "resnet18-cifar10_5k-cuda-bs128-32px-fp32"
    folder = dataclasses.replace(train, dataset="imagefolder:/data/robot_bins/")
    assert folder.id.startswith("resnet18-imagefolder-robot_bins_5k-")


def test_a_train_case_needs_data() -> None:
    with pytest.raises(ValueError, match="dataset and a subset"):
        spec(kind="train")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ["inference", "cnn"]),
        ({"edge": True}, ["inference", "cnn", "edge", "jetson"]),
        ({"edge": True, "batch_size": 8}, ["inference", "cnn", "edge"]),
        ({"device": "cuda", "smoke": True}, ["inference", "cnn", "gpu", "smoke"]),
        ({"img_size": 224, "batch_size": 2, "family": "transformer"}, ["inference", "transformer", "slow"]),
        ({"img_size": 224, "batch_size": 1}, ["inference", "cnn"]),
    ],
)
def test_markers(changes: dict[str, object], expected: list[str]) -> None:
    assert spec(**changes).markers() == expected


def test_identity_keys_are_flat_and_complete() -> None:
    keys = spec().identity()
    assert keys == {
        "kind": "inference", "case_id": "inference/convnextv2_tiny-cpu-bs1-32px-fp32", "backbone": "convnextv2_tiny",
        "family": "cnn", "edge": False, "device": "cpu", "batch_size": 1, "img_size": 32, "num_classes": 10,
        "precision": "fp32", "channels_last": False, "runtime": "eager",
    }
    assert all(not isinstance(v, (dict, list)) for v in keys.values())


def test_a_kind_outside_the_contract_is_refused() -> None:
    with pytest.raises(ValueError, match="kind 'export' is not in the contract: inference, train, plan"):
        spec(kind="export")


def test_a_train_id_names_weights_with_the_backbone_and_the_protocol_after_the_subset() -> None:
    from harness.backbones.weights import WeightsRef

    weights = WeightsRef("convnextv2_tiny", tag="fcmae_ft_in1k")
    train = spec(kind="train", device="cuda", batch_size=128, img_size=224, dataset="cifar10", subset="5k", weights=weights, protocol="linear")
    assert train.id == "convnextv2_tiny.fcmae_ft_in1k-cifar10_5k-linear-cuda-bs128-224px-fp32"  # the issue's example
    keys = train.identity()
    assert (keys["backbone"], keys["backbone_name"], keys["weights"], keys["protocol"]) == (
        "convnextv2_tiny", "convnextv2_tiny.fcmae_ft_in1k", "fcmae_ft_in1k", "linear")
    scratch = spec(kind="train", batch_size=128, dataset="cifar10", subset="5k")
    # scratch adds nothing to the id, so every baseline written before protocols keeps its key
    assert scratch.id == "convnextv2_tiny-cifar10_5k-cpu-bs128-32px-fp32"
    assert (scratch.identity()["protocol"], scratch.identity()["weights"]) == ("scratch", None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "train", "dataset": "digits", "subset": "full", "protocol": "linaer"}, "unknown protocol 'linaer' (did you mean linear?)"),
        ({"protocol": "linear"}, "inference cases measure the architecture"),
    ],
)
def test_protocols_are_checked(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        spec(**changes)


@pytest.mark.parametrize(("expression", "names"), [
    ("infrence and cpu", ["infrence", "cpu"]),
    ("not (slow or gpu)", ["slow", "gpu"]),
    ("not(slow)", ["slow"]),
    ('foo(x="a b", y=2) and bar', ["foo", "bar"]),
])
def test_marker_names_of_a_mark_expression(expression: str, names: list[str]) -> None:
    from harness.matrix.cases import marker_names

    assert marker_names(expression) == names


def test_unknown_markers_message_names_the_closest_and_passes_declared_ones() -> None:
    from harness.matrix.cases import MARKERS, unknown_markers_message

    assert unknown_markers_message("inference and not slow", [*MARKERS]) is None
    message = unknown_markers_message("trian", [*MARKERS, "skip"])
    assert message is not None and message.startswith("-m 'trian': no marker named 'trian' (did you mean train?); the benchmark markers are inference, ")
