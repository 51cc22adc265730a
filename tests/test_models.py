"""The registry and the factory."""

from __future__ import annotations

import pytest

from harness.backbones.factory import create_backbone, resolve_backbones
from harness.backbones.registry import GROUPS, REGISTRY, Backbone, BackboneUnsupported, UnknownBackbone, family_of
from harness.contract import FAMILIES

REFERENCE = ["convnextv2_tiny", "tf_efficientnetv2_s", "mobilenetv3_large_100", "resnet50", "vit_base_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224"]


def test_registry_holds_the_reference_hybrid_and_edge_backbones() -> None:
    assert set(REFERENCE + ["coatnet_0_rw_224", "poolformer_s12", "repvgg_a2", "pvt_v2_b0", "resnet18"]) <= set(REGISTRY)
    assert {b.family for b in REGISTRY.values()} == {"cnn", "transformer", "hybrid"}
    assert sum(b.edge for b in REGISTRY.values()) >= 8


def test_every_registry_name_is_a_timm_model() -> None:
    import timm

    assert [n for n in REGISTRY if not timm.is_model(n)] == []


def test_groups() -> None:
    assert resolve_backbones(["transformer"]) == ["vit_base_patch16_224", "deit_small_patch16_224", "swin_tiny_patch4_window7_224", "pvt_v2_b0"]
    assert resolve_backbones(["all"]) == list(REGISTRY)
    assert resolve_backbones(["convnext_atto"]) == ["convnext_atto"]  # any timm model
    assert family_of("maxvit_tiny_tf_224") == "hybrid" and family_of("beit_base_patch16_224") == "transformer" and family_of("convnext_atto") == "cnn"


def test_a_family_is_a_contract_row_and_an_entry_of_another_is_refused() -> None:
    assert GROUPS == (*FAMILIES, "edge", "all")
    assert {entry.family for entry in REGISTRY.values()} <= set(FAMILIES)
    with pytest.raises(ValueError, match="backbone mlpnet: unknown family 'mlp'; valid: cnn, transformer, hybrid"):
        Backbone("mlpnet", "mlp")


def test_unknown_names_close_matches() -> None:
    with pytest.raises(UnknownBackbone, match=r"unknown backbone 'resnet05' \(did you mean resnet50, .*\?\); valid: a group \(cnn, transformer, hybrid, edge, all\), a registry name or any timm model"):
        resolve_backbones(["resnet05"])


def test_size_aware_models_are_built_for_the_input() -> None:
    model = create_backbone("deit_small_patch16_224", num_classes=10, img_size=32)
    assert model.patch_embed.img_size == (32, 32) and not model.training


def test_a_model_that_cannot_run_at_a_size_is_unsupported() -> None:
    # A 16-px patch embedding cannot tile an 8-px image.
    with pytest.raises(BackboneUnsupported, match="deit_small_patch16_224 cannot"):
        create_backbone("deit_small_patch16_224", num_classes=10, img_size=8)
