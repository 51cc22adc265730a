"""Pretrained weights: names, preprocessing, offline lookup in the real cache layouts, loading and the CLI.

Checkpoints are real timm state dicts of random tensors (no ImageNet weights are needed to test
loading), written where huggingface_hub and torch.hub put them. Every test that loads runs with the
network refused.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from harness.backbones import refs, weights
from harness.backbones.factory import create_model
from harness.backbones.registry import UnknownBackbone
from harness.backbones.weights import (
    FILE_SEP,
    Preprocess,
    UnknownWeights,
    WeightsMismatch,
    WeightsRef,
    WeightsUnavailable,
    fetch_command,
    find_cached,
    parse_backbone,
    places_looked,
    preprocess_of,
    sha256_file,
)
from harness.cli import weights as weights_cli

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
# The smallest side every model here runs at on CPU; 32 px keeps each forward to milliseconds.
SIDE = 32


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty HF and torch-hub caches under tmp_path, HF offline, and any socket connection refused."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access in an offline test: {args[1:]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    assert tmp_path in hub.parents  # torch.hub.set_dir() elsewhere would point outside the test
    return tmp_path / "hf", hub


def random_state(arch: str, seed: int = 0, **kwargs: Any) -> dict[str, torch.Tensor]:
    """``arch``'s state dict with every float tensor drawn from U[0, 1): unlike any fresh init, so a load shows."""
    model = timm.create_model(arch, pretrained=False, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=gen) if v.is_floating_point() else v.clone() for k, v in model.state_dict().items()}


def hf_cache(root: Path, repo_id: str, filename: str, state: dict[str, torch.Tensor]) -> Path:
    """``state`` written as huggingface_hub writes a download: the blob named by its sha256, the
    snapshot file a relative link to it, ``refs/main`` holding the commit."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()  # any 40-hex commit id
    (repo / "blobs").mkdir(parents=True)
    tmp = repo / "download.tmp"
    save_file(state, str(tmp))
    sha = hashlib.sha256(tmp.read_bytes()).hexdigest()
    tmp.rename(repo / "blobs" / sha)
    snapshot = repo / "snapshots" / commit / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("..", "..", "blobs", sha))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def assert_loaded(model: torch.nn.Module, state: dict[str, torch.Tensor], head: str) -> None:
    """Every tensor but the classifier's equals the file's; the classifier is none of the file's."""
    loaded = model.state_dict()
    body = [k for k in state if not k.startswith(f"{head}.")]
    assert set(body) == {k for k in loaded if not k.startswith(f"{head}.")}
    assert [k for k in body if not torch.equal(loaded[k], state[k])] == []
    for key in (f"{head}.weight", f"{head}.bias"):
        if key in loaded and loaded[key].shape == state[key].shape:
            assert not torch.equal(loaded[key], state[key])


# --- names --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("token", "ref", "name"), [
    ("resnet50", WeightsRef("resnet50"), "resnet50"),
    ("resnet50.a1_in1k", WeightsRef("resnet50", tag="a1_in1k"), "resnet50.a1_in1k"),
    (" convnextv2_tiny.fcmae_ft_in1k ", WeightsRef("convnextv2_tiny", tag="fcmae_ft_in1k"), "convnextv2_tiny.fcmae_ft_in1k"),
    ("vit_base_patch16_clip_224.openai", WeightsRef("vit_base_patch16_clip_224", tag="openai"), "vit_base_patch16_clip_224.openai"),
])
def test_good_names(token: str, ref: WeightsRef, name: str) -> None:
    parsed = parse_backbone(token)
    assert parsed == ref and parsed.name == name
    assert parsed.pretrained == (ref.tag is not None) and parsed.label == ref.tag


def test_own_file_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = tmp_path / "runs 1" / "digits-04.v2.safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    for token in (f"resnet18{FILE_SEP}{ckpt}", "resnet18@runs 1/../runs 1/digits-04.v2.safetensors"):
        ref = parse_backbone(token)
        assert ref == WeightsRef("resnet18", file=ckpt) and ref.pretrained
        assert (ref.label, ref.name) == ("digits_04_v2", "resnet18@digits_04_v2")
        assert not re.search(r"[/\[\] ]", ref.name)


@pytest.mark.parametrize(("token", "error", "message"), [
    ("resnet05", UnknownBackbone, r"^unknown backbone 'resnet05' \(did you mean resnet50, .*\?\); valid: any timm model"),
    ("resnet18.a1_in1", UnknownWeights,
     r"^unknown pretrained tag 'resnet18.a1_in1' \(did you mean resnet18.a1_in1k, .*\?\); timm lists 7 tags for resnet18: resnet18.a1_in1k, "),
    ("convnext_atto.in1k", UnknownWeights, r"unknown pretrained tag 'convnext_atto.in1k' \(did you mean convnext_atto.d2_in1k"),
    ("botnet50ts_256.in1k", UnknownWeights, r"timm has no pretrained weights for botnet50ts_256; write botnet50ts_256 \(random weights\)"),
    ("resnet18@/nonexistent/ckpt.safetensors", UnknownWeights,
     r"^no checkpoint file /nonexistent/ckpt.safetensors; write resnet18@PATH with an existing checkpoint file$"),
    ("resnet18@/nonexistent/ckpt.npz", UnknownWeights, r"ends in .safetensors, .pth, .pt, .bin"),
    ("resnet18.a1_in1k@x.pth", UnknownWeights, r"names a tag and a file; the file replaces the tag: write resnet18@x.pth"),
    ("", UnknownWeights, r"cannot read backbone ''"),
    ("resnet18.", UnknownWeights, r"cannot read backbone 'resnet18.'"),
    ("resnet18@", UnknownWeights, r"cannot read backbone"),
    ("@w.pth", UnknownWeights, r"cannot read backbone"),
])
def test_bad_names(token: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        parse_backbone(token)


def test_every_error_is_a_value_error_but_unavailable() -> None:
    assert issubclass(UnknownWeights, ValueError) and issubclass(WeightsMismatch, ValueError)
    assert issubclass(WeightsUnavailable, RuntimeError) and not issubclass(WeightsUnavailable, ValueError)


# --- preprocessing -------------------------------------------------------------------------------

def test_preprocess_follows_the_weights(tmp_path: Path) -> None:
    assert preprocess_of(parse_backbone("resnet50.a1_in1k")) == Preprocess(*IMAGENET, 224, "bicubic")
    assert preprocess_of(parse_backbone("vit_base_patch16_clip_224.openai")).mean == CLIP_MEAN
    assert preprocess_of(parse_backbone("resnet50")) == Preprocess((0.5,) * 3, (0.5,) * 3, 224, "bilinear")
    assert preprocess_of(parse_backbone("legacy_xception")).input_size == 299  # the arch's default cfg
    ckpt = tmp_path / "w.pth"
    ckpt.write_bytes(b"")
    own = parse_backbone(f"resnet18@{ckpt}")
    assert preprocess_of(own) == Preprocess(*IMAGENET, 224, "bicubic")  # resnet18's default cfg
    Path(f"{ckpt}.json").write_text('{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": 32}')
    assert preprocess_of(own) == Preprocess((0.5,) * 3, (0.5,) * 3, 32, "bicubic")


@pytest.mark.parametrize(("sidecar", "message"), [
    ('{"mena": [0.5, 0.5, 0.5]}', r"w.safetensors.json: unknown key 'mena' \(did you mean mean\?\); valid: mean, std, input_size, interpolation; it holds "),
    ('{"mean": [0.5, 0.5]}', r"w.safetensors.json: mean \[0.5, 0.5\] is not valid; it holds some of \{\"mean\": \[r, g, b\], "),
    ('{"std": [0.5, 0, 0.5]}', r"std \[0.5, 0, 0.5\] is not valid"),
    ('{"input_size": "32"}', r"input_size '32' is not valid"),
    ('{"input_size": true}', r"input_size True is not valid"),
    ('{"interpolation": "cubic"}', r"interpolation 'cubic' is not valid"),
    ("[1, 2]", r"w.safetensors.json: not a JSON object"),
    ("{", r"w.safetensors.json: Expecting property name"),
])
def test_bad_sidecars(tmp_path: Path, sidecar: str, message: str) -> None:
    ckpt = tmp_path / "w.safetensors"
    ckpt.write_bytes(b"")
    Path(f"{ckpt}.json").write_text(sidecar)
    with pytest.raises(UnknownWeights, match=message):
        preprocess_of(parse_backbone(f"resnet18@{ckpt}"))


# --- the HF cache ---------------------------------------------------------------------------------

def test_a_tag_loads_from_the_hf_cache(offline: tuple[Path, Path]) -> None:
    hf, _ = offline
    state = random_state("resnet18")
    path = hf_cache(hf, "timm/resnet18.a1_in1k", "model.safetensors", state)
    (repo,) = huggingface_hub.scan_cache_dir(hf).repos  # the layout is the one huggingface_hub reads
    assert repo.repo_id == "timm/resnet18.a1_in1k" and [f.file_name for r in repo.revisions for f in r.files] == ["model.safetensors"]

    model, resolved = create_model(parse_backbone("resnet18.a1_in1k"), num_classes=10, img_size=SIDE)
    assert resolved is not None and (resolved.source, resolved.path) == ("hf-cache", path)
    assert resolved.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_loaded(model, state, "fc")
    assert model.fc.weight.shape == (10, 512) and not model.training
    assert model.pretrained_cfg["file"] == str(path)


def test_the_head_is_fresh_even_when_the_class_counts_agree(offline: tuple[Path, Path]) -> None:
    state = random_state("resnet18")
    hf_cache(offline[0], "timm/resnet18.a1_in1k", "model.safetensors", state)
    ref = parse_backbone("resnet18.a1_in1k")
    model, _ = create_model(ref, num_classes=1000, img_size=SIDE)
    assert_loaded(model, state, "fc")
    assert model.fc.weight.abs().max() < 0.1  # torch's Linear init, ±1/sqrt(512); the file holds U[0, 1)
    features, _ = create_model(ref, num_classes=0, img_size=SIDE)
    assert_loaded(features, state, "fc")
    assert features(torch.zeros(2, 3, SIDE, SIDE)).shape == (2, 512)


def test_an_absent_tag_is_unavailable_with_where_and_how(offline: tuple[Path, Path]) -> None:
    hf, hub = offline
    ref = parse_backbone("resnet18.a1_in1k")
    assert find_cached(ref) is None
    folder = hf / "models--timm--resnet18.a1_in1k"
    assert places_looked(ref) == [f"{folder} (model.safetensors, pytorch_model.bin)", str(hub / "resnet18_a1_0-d63eafa0.pth")]
    with pytest.raises(WeightsUnavailable) as info:
        create_model(ref, num_classes=10, img_size=SIDE)
    assert str(info.value) == (f"resnet18.a1_in1k: not cached; looked in {folder} (model.safetensors, pytorch_model.bin), "
                               f"{hub / 'resnet18_a1_0-d63eafa0.pth'}; fetch: python -m harness weights --download resnet18.a1_in1k")
    assert fetch_command(ref) == "python -m harness weights --download resnet18.a1_in1k"


def test_a_vit_tag_is_resampled_to_the_input(offline: tuple[Path, Path]) -> None:
    state = random_state("vit_tiny_patch16_224")
    hf_cache(offline[0], "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "model.safetensors", state)
    model, resolved = create_model(parse_backbone("vit_tiny_patch16_224.augreg_in21k_ft_in1k"), num_classes=10, img_size=SIDE)
    assert resolved is not None and resolved.source == "hf-cache"
    loaded = model.state_dict()
    assert state["pos_embed"].shape == (1, 197, 192) and loaded["pos_embed"].shape == (1, 1 + 2 * 2, 192)  # 32 px / 16 px patches
    assert [k for k in state if k not in ("pos_embed", "head.weight", "head.bias") and not torch.equal(loaded[k], state[k])] == []
    assert model.head.weight.shape == (10, 192)


def test_only_download_true_downloads(offline: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    state = random_state("resnet18")

    def fake_download(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append((repo_id, filename))
        return str(hf_cache(Path(str(kwargs["cache_dir"])), repo_id, filename, state))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    ref = parse_backbone("resnet18.a1_in1k")
    with pytest.raises(WeightsUnavailable):
        weights.locate(ref)
    assert calls == []
    resolved = weights.locate(ref, download=True)
    assert calls == [("timm/resnet18.a1_in1k", "model.safetensors")] and resolved.source == "download"
    assert weights.locate(ref).source == "hf-cache"  # downloaded into the cache this module reads


# --- timm's torch-hub cache --------------------------------------------------------------------

def test_a_url_only_tag_loads_from_the_torch_hub_cache(offline: tuple[Path, Path]) -> None:
    # legacy_seresnet18.in1k is one of the 19 timm 1.0.31 tags with a url and no hf_hub_id.
    ref = parse_backbone("legacy_seresnet18.in1k")
    _, hub = offline
    path = hub / "seresnet18-4bb0ce65.pth"
    assert places_looked(ref) == [str(path)]
    state = random_state("legacy_seresnet18")
    hub.mkdir(parents=True)
    torch.save(state, path)
    model, resolved = create_model(ref, num_classes=10, img_size=SIDE)
    assert resolved is not None and (resolved.source, resolved.path) == ("timm-cache", path)
    assert_loaded(model, state, "last_linear")


# --- own checkpoints ----------------------------------------------------------------------------

def _save_pth(state: dict[str, torch.Tensor], path: Path) -> None:
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)  # a DDP training checkpoint


def _save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    save_file(state, str(path))


@pytest.mark.parametrize(("suffix", "save"), [(".pth", _save_pth), (".safetensors", _save_safetensors)])
def test_own_checkpoints_load(tmp_path: Path, offline: tuple[Path, Path], suffix: str,
                              save: Callable[[dict[str, torch.Tensor], Path], None]) -> None:
    state = random_state("resnet18", num_classes=10)
    path = tmp_path / f"digits04{suffix}"
    save(state, path)
    ref = parse_backbone(f"resnet18@{path}")
    model, resolved = create_model(ref, num_classes=10, img_size=SIDE)
    assert resolved is not None and (resolved.source, resolved.path) == ("file", path)
    assert resolved.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert_loaded(model, state, "fc")
    features, _ = create_model(ref, num_classes=0, img_size=SIDE)
    assert features(torch.zeros(2, 3, SIDE, SIDE)).shape == (2, 512)


@pytest.mark.parametrize(("trained_as", "given_as"), [("resnet34", "resnet18"), ("resnet18", "resnet18d")])
def test_a_checkpoint_of_another_architecture_is_refused(tmp_path: Path, trained_as: str, given_as: str) -> None:
    path = tmp_path / f"{trained_as}.safetensors"
    save_file(random_state(trained_as), str(path))
    have = {k for k in timm.create_model(trained_as).state_dict() if not k.startswith("fc.")}
    want = {k for k in timm.create_model(given_as, num_classes=10).state_dict() if not k.startswith("fc.")}

    def keys(found: set[str], what: str) -> str:
        return f"{len(found)} {what} keys" + (f" (e.g. {', '.join(sorted(found)[:3])})" if found else "")

    assert have - want and (trained_as == "resnet34" or want - have)
    with pytest.raises(WeightsMismatch) as info:
        create_model(parse_backbone(f"{given_as}@{path}"), num_classes=10, img_size=SIDE)
    assert str(info.value) == (f"{path} does not fit {given_as}: {keys(want - have, 'missing')}, {keys(have - want, 'unexpected')}; "
                               f"name the architecture it was trained as: ARCH@{path}")


def test_a_tensor_of_another_shape_is_named(tmp_path: Path) -> None:
    state = random_state("resnet18")
    state["layer4.1.conv2.weight"] = torch.zeros(512, 512, 1, 1)
    path = tmp_path / "odd.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatch, match=re.escape(
            "does not fit resnet18: 1 tensors differ in shape (size mismatch for layer4.1.conv2.weight: copying a param with shape "
            "torch.Size([512, 512, 1, 1]) from checkpoint, the shape in current model is torch.Size([512, 512, 3, 3])); "
            "name the architecture it was trained as: ARCH@")):
        create_model(parse_backbone(f"resnet18@{path}"), num_classes=10, img_size=SIDE)


def test_a_file_that_is_no_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(UnknownWeights, match=r"notes.pth is not a readable checkpoint"):
        create_model(parse_backbone(f"resnet18@{path}"), num_classes=10, img_size=SIDE)


def test_random_weights_have_no_file() -> None:
    model, resolved = create_model(parse_backbone("resnet18"), num_classes=10, img_size=SIDE)
    assert resolved is None and model.fc.out_features == 10 and find_cached(WeightsRef("resnet18")) is None


# --- hashing --------------------------------------------------------------------------------------

def test_sha256_is_hashed_once_per_version_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 1000)
    (tmp_path / "link.bin").symlink_to(path)
    refs._sha256.cache_clear()
    assert sha256_file(path) == sha256_file(tmp_path / "link.bin") == hashlib.sha256(b"a" * 1000).hexdigest()
    assert refs._sha256.cache_info().misses == 1
    stat = path.stat()
    path.write_bytes(b"b" * 1000)  # same size; a rewrite moves mtime (pinned here past coarse clocks)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()
    assert refs._sha256.cache_info().misses == 2


# --- python -m harness weights -----------------------------------------------------------------

def _cli(names: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness")
    weights_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["weights", *names])


def test_cli_lines_and_exit_codes(offline: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = hf_cache(offline[0], "timm/resnet18.a1_in1k", "model.safetensors", random_state("resnet18"))
    own = tmp_path / "own.pt"
    torch.save(random_state("resnet18", seed=1), own)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert weights_cli.run(_cli(["resnet18.a1_in1k", f"resnet18@{own}"])) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"resnet18.a1_in1k: hf-cache {path} sha256 {sha[:12]}…",
        f"resnet18@own: file {own} sha256 {hashlib.sha256(own.read_bytes()).hexdigest()[:12]}…",
    ]
    assert weights_cli.run(_cli(["resnet18.a1_in1k", "resnet18.a2_in1k"])) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("resnet18.a2_in1k: not cached; looked in ") and lines[1].endswith("fetch: python -m harness weights --download resnet18.a2_in1k")
    with pytest.raises(UnknownWeights, match=r"resnet18 names no weights: write resnet18.TAG"):
        weights_cli.run(_cli(["resnet18.a1_in1k", "resnet18"]))
    assert capsys.readouterr().out == ""  # every name is checked before any is looked up


def test_cli_refuses_a_file_that_is_no_checkpoint_as_pytest_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    junk = tmp_path / "random-bytes.pt"
    junk.write_bytes(bytes(range(256)) * 8)
    assert main(["weights", f"resnet18@{junk}"]) == 2
    out = capsys.readouterr()
    assert out.out == ""  # no sha256 of a file pytest would refuse
    [line] = out.err.splitlines()
    assert line.startswith(f"error: {junk} is not a readable checkpoint (")
    assert line.endswith("); write resnet18@PATH with a state dict saved by torch.save or safetensors")


def test_cli_refuses_a_checkpoint_of_another_architecture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    other = tmp_path / "other.safetensors"
    save_file(random_state("resnet34"), str(other))
    assert main(["weights", f"resnet18@{other}"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {other} does not fit resnet18: ")
