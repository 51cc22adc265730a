"""The patch-8 ViT of the dense must-show: ``examples/vit_patch8.py`` (a team-style factory), the checkpoints
``scripts/pretrain_fashion.py --patch-size 8 --pool max --save-size 64`` writes for it, and the peer's reading of
them (``scripts/peer_segmentation.py``), checked against the suite's own loading of the same file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from harness.backbones.factory import create_model
from harness.backbones.own import own_backbone
from harness.backbones.refs import WeightsMismatch, WeightsRef

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "examples.vit_patch8:build"
ARCH = "vit_tiny_patch16_224"


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pretrain() -> ModuleType:
    return _script("pretrain_fashion")


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    return _script("peer_segmentation")


@pytest.fixture
def in_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The factory is named as a team names theirs: importable from the working directory."""
    monkeypatch.chdir(ROOT)


@pytest.fixture
def checkpoint(pretrain: ModuleType, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A 32 px max-pooled patch-8 ViT (its weights moved off the initialisation) saved for 64 px, as the script saves it."""
    torch.manual_seed(0)
    model = pretrain.build(ARCH, 32, "max", 8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    big = pretrain.resized(model, ARCH, 64, "max", 8).eval()
    path = tmp_path / "vit_p8.safetensors"
    pretrain.save(big, path, 64)
    return big, path


def _maps(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return list(model.forward_intermediates(x, indices=4, intermediates_only=True))  # type: ignore[operator]


def test_the_factory_reads_an_8x8_token_grid_at_64px_and_4x4_at_32px(in_root: None) -> None:
    assert own_backbone(FACTORY).family == "transformer"
    model, _ = create_model(WeightsRef(FACTORY), num_classes=0, img_size=64)
    assert [tuple(m.shape) for m in _maps(model, torch.zeros(2, 3, 64, 64))] == [(2, 192, 8, 8)] * 4
    assert [tuple(m.shape) for m in _maps(model, torch.zeros(2, 3, 32, 32))] == [(2, 192, 4, 4)] * 4  # the pretraining's grid


def test_max_pooling_takes_the_channel_max_over_the_patch_tokens_not_the_class_token(pretrain: ModuleType) -> None:
    torch.manual_seed(0)
    model = pretrain.build(ARCH, 32, "max", 8).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        tokens = model.forward_features(x)
        assert tokens.shape == (3, 1 + 16, 192)
        torch.testing.assert_close(model(x), model.head(tokens[:, 1:].amax(1)), rtol=0, atol=0)
    # the same state-dict keys and shapes as the suite's default-built ViT with 8 px patches: no fc_norm
    default = pretrain.build(ARCH, 32, None, 8)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in default.state_dict().items()}


def test_the_saved_checkpoint_loads_into_the_factory_with_its_weights(in_root: None, checkpoint: tuple[torch.nn.Module, Path]) -> None:
    trained, path = checkpoint
    assert json.loads(path.with_name(path.name + ".json").read_text()) == {"mean": [0.5] * 3, "std": [0.5] * 3, "input_size": 64}
    suite, _ = create_model(WeightsRef(FACTORY, file=path), num_classes=0, img_size=64)
    assert tuple(suite.pos_embed.shape) == (1, 1 + 64, 192)  # type: ignore[union-attr]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    for ours, theirs in zip(_maps(suite, x), _maps(trained, x), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_patch16_checkpoint_is_refused_by_the_patch8_factory(in_root: None, pretrain: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "vit_p16.safetensors"
    pretrain.save(pretrain.build(ARCH, 32, "avg"), path, 32)
    with pytest.raises(WeightsMismatch, match=r"other-shape keys \(e.g. patch_embed.proj.weight, pos_embed\)"):
        create_model(WeightsRef(FACTORY, file=path), num_classes=0, img_size=64)


def test_the_peer_reads_the_same_features_as_the_suite(in_root: None, peer: ModuleType, checkpoint: tuple[torch.nn.Module, Path]) -> None:
    _, path = checkpoint
    suite, _ = create_model(WeightsRef(FACTORY, file=path), num_classes=0, img_size=64)
    theirs = peer.backbone(f"{FACTORY}@{path}", 64)
    images = torch.randint(0, 256, (3, 3, 64, 64), generator=torch.Generator().manual_seed(2), dtype=torch.uint8)
    ours = _maps(suite, (images.float() / 255.0 - 0.5) / 0.5)
    expected = torch.cat(ours, 1)  # all four maps are 8x8: the peer's resize to the largest is the identity
    torch.testing.assert_close(peer.features(theirs, images), expected, rtol=0, atol=0)
