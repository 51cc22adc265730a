"""The backbone registry and the one model factory over timm.

The registry tags each reference backbone with a family (``cnn`` / ``transformer`` /
``hybrid``) and an ``edge`` flag (small enough to ship on a Jetson-class board). Any other timm
model name is accepted too; its family is guessed from timm's architecture name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.contract import FAMILIES, suggest

# The names of harness.contract.FAMILIES as a type, so mypy checks registry entries and recipe
# calls; tests/test_models.py checks the two agree.
Family = Literal["cnn", "transformer", "hybrid"]
GROUPS: tuple[str, ...] = (*FAMILIES, "edge", "all")


@dataclass(frozen=True)
class Backbone:
    """A registry entry: a timm model name with its family and edge tag."""

    name: str
    family: Family
    edge: bool = False


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
    """The family of a registry backbone, or a guess from timm's architecture prefix."""
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


def resolve_backbones(tokens: list[str]) -> list[str]:
    """Expand registry names, groups (``cnn``, ``transformer``, ``hybrid``, ``edge``, ``all``)
    and timm model names into a de-duplicated list, in the order given. A name may carry weights:
    a timm pretrained tag (``resnet50.a1_in1k``) or a checkpoint file (``resnet18@ckpt.pt``, kept
    with its absolute path).

    Raises :class:`UnknownBackbone` naming close matches for anything unknown, and
    :class:`harness.weights.UnknownWeights` for an unknown tag or a missing file (`WeightsMismatch` for a
    checkpoint of another architecture).
    """
    import timm

    out: list[str] = []
    for raw in tokens:
        token = raw.strip()
        if not token:
            continue
        if token == "all":
            names = list(REGISTRY)
        elif token == "edge":
            names = [b.name for b in _ENTRIES if b.edge]
        elif token in FAMILIES:
            names = [b.name for b in _ENTRIES if b.family == token]
        elif "." in token or "@" in token:  # weights: timm's arch.tag, or ARCH@PATH for a checkpoint file
            names = [weights_token(token)]
        elif token in REGISTRY or timm.is_model(token):
            names = [token]
        else:
            candidates = dict.fromkeys([*GROUPS, *REGISTRY, *timm.list_models()])
            raise UnknownBackbone(
                f"unknown backbone {token!r}{suggest(token, candidates)}; valid: a group ({', '.join(GROUPS)}), "
                "a registry name or any timm model (timm.list_models())"
            )
        out.extend(n for n in names if n not in out)
    return out


def weights_token(token: str) -> str:
    """The canonical spelling of a backbone with weights: ``arch.tag`` or ``arch@/absolute/path``.

    A checkpoint file whose keys are not the architecture's raises
    :class:`harness.weights.WeightsMismatch` here, so the option parser refuses it before any case runs.
    """
    from harness.weights import check_fits, parse_backbone

    ref = parse_backbone(token)
    check_fits(ref)
    if ref.file is not None:
        return f"{ref.arch}@{ref.file}"
    return f"{ref.arch}.{ref.tag}" if ref.tag else ref.arch


def create_backbone(name: str, *, num_classes: int, img_size: int) -> nn.Module:
    """Build ``name`` with random weights (``pretrained=False``), in eval mode.

    Models that must know their input size (ViT, DeiT, Swin, CoAtNet…) are built for
    ``img_size``; the others are resolution-agnostic and refuse the keyword, so it is dropped
    for them. Raises :class:`BackboneUnsupported` when the model cannot run at ``img_size``.
    """
    import timm

    try:
        try:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=img_size)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
            model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    except (AssertionError, ValueError, RuntimeError) as exc:
        raise BackboneUnsupported(f"{name} cannot be built for {img_size}px input: {_first_line(exc)}") from exc
    model.eval()
    check_runs(model, name, img_size)
    return model


def check_runs(model: nn.Module, name: str, img_size: int) -> None:
    """One batch-1 forward on CPU, so a model that cannot run at ``img_size`` is found up front."""
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, img_size, img_size))
    except (AssertionError, RuntimeError, ValueError, IndexError) as exc:
        raise BackboneUnsupported(f"{name} cannot run at {img_size}px: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def feature_map_side(name: str, img_size: int) -> int | None:
    """The side of ``name``'s final feature map at ``img_size`` px (``None`` for a token model).

    A stride-32 network at 32 px (mobilenetv3, resnet) leaves a 1×1 map: its global pool has one
    position to pool, and what a larger input would resolve spatially is gone. The map is read off
    one forward of a zero image through timm's ``forward_features`` (NCHW, or NHWC for swin-style models).
    """
    model = create_backbone(name, num_classes=0, img_size=img_size).eval()
    forward_features = getattr(model, "forward_features", None)
    if not callable(forward_features):
        return None
    with torch.no_grad():
        out = forward_features(torch.zeros(1, 3, img_size, img_size))
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        return None
    return int(out.shape[2] if out.shape[1] >= out.shape[3] else out.shape[1])
