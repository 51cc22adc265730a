"""The backbone registry: every reference backbone with its family and edge flag.

The registry tags each reference backbone with a family (``cnn`` / ``transformer`` /
``hybrid``) and an ``edge`` flag (small enough to ship on a Jetson-class board). Any other timm
model name is accepted too; its family is guessed from timm's architecture name. Building one is
:mod:`harness.backbones.factory`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.contract import FAMILIES, unknown

# A family name: one of harness.contract.FAMILIES (its rows), checked where an entry is made.
Family = str


GROUPS: tuple[str, ...] = (*FAMILIES, "edge", "all")


@dataclass(frozen=True)
class Backbone:
    """A registry entry: a timm model name with its family and edge tag."""

    name: str
    family: Family
    edge: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"backbone {self.name}: {unknown('family', self.family, FAMILIES)}")


_ENTRIES: tuple[Backbone, ...] = (
    # The seven reference backbones.
    Backbone("convnextv2_tiny", "cnn"),
    Backbone("tf_efficientnetv2_s", "cnn"),
    Backbone("mobilenetv3_large_100", "cnn", edge=True),
    Backbone("resnet50", "cnn"),
    Backbone("vit_base_patch16_224", "transformer"),
    Backbone("deit_small_patch16_224", "transformer"),
    Backbone("swin_tiny_patch4_window7_224", "transformer"),
    # Hybrids and MetaFormers.
    Backbone("coatnet_0_rw_224", "hybrid"),
    Backbone("poolformer_s12", "hybrid"),
    Backbone("mobilevit_xs", "hybrid", edge=True),
    Backbone("fastvit_t8", "hybrid", edge=True),
    # Deployment-oriented and edge backbones.
    Backbone("repvgg_a2", "cnn", edge=True),
    Backbone("pvt_v2_b0", "transformer", edge=True),
    Backbone("resnet18", "cnn", edge=True),
    Backbone("efficientnet_b0", "cnn", edge=True),
    Backbone("mobilenetv4_conv_small", "cnn", edge=True),
    Backbone("regnetx_002", "cnn", edge=True),
    Backbone("ghostnet_100", "cnn", edge=True),
    Backbone("lcnet_100", "cnn", edge=True),
)


REGISTRY: dict[str, Backbone] = {b.name: b for b in _ENTRIES}


# Architecture prefixes of timm models outside the registry, for their family tag.
_TRANSFORMER_PREFIXES = ("vit", "deit", "swin", "beit", "eva", "cait", "xcit", "pvt", "twins", "crossvit", "tnt", "pit")


_HYBRID_PREFIXES = ("coat", "maxvit", "maxxvit", "mobilevit", "fastvit", "efficientvit", "levit", "poolformer", "convformer", "caformer", "edgenext", "nextvit", "tiny_vit", "hiera")


class UnknownBackbone(ValueError):
    """A backbone name that neither the registry, a group, nor timm knows."""


class BackboneUnsupported(RuntimeError):
    """A backbone that cannot be built or run in the asked configuration (e.g. too small an input)."""


def family_of(name: str) -> Family:
    """The family of a registry backbone, or a guess from timm's architecture prefix (a ``clip:`` model's
    is its image tower's: :func:`harness.backbones.factory.backbone_entry`)."""
    if name in REGISTRY:
        return REGISTRY[name].family
    if name.startswith(_HYBRID_PREFIXES):
        return "hybrid"
    if name.startswith(_TRANSFORMER_PREFIXES):
        return "transformer"
    return "cnn"


def lookup(name: str) -> Backbone:
    """The registry entry of ``name``, or an untagged entry for any other timm model."""
    return REGISTRY.get(name) or Backbone(name, family_of(name), edge=False)
