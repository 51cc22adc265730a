"""The one model factory over timm (and open_clip, for ``clip:`` names): a backbone built with random
weights or with its weights. A CLIP backbone is its image tower (:mod:`harness.backbones.clip`).

Names are checked here too: :func:`resolve_backbones` expands the option's groups and names, and
a checkpoint for another architecture is refused (:func:`check_fits`) before any case runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.backbones.own import is_own, own_backbone
from harness.backbones.registry import _ENTRIES, GROUPS, REGISTRY, Backbone, BackboneUnsupported, UnknownBackbone, lookup
from harness.backbones.weights import (
    FILE_SEP,
    ResolvedWeights,
    UnknownWeights,
    WeightsMismatch,
    WeightsRef,
    fetch_command,
    locate,
)
from harness.contract import FAMILIES, suggest

CLIP_PREFIX = "clip:"  # harness.backbones.clip.PREFIX, without importing open_clip's module for timm names

# keys shown per kind in a mismatch: enough to recognise the architecture the file was trained as
_SHOWN_KEYS = 3


def backbone_entry(name: str) -> Backbone:
    """The registry entry of an architecture: :func:`~harness.backbones.registry.lookup`'s, or for a
    ``clip:`` model an untagged entry of its image tower's family."""
    if name.startswith(CLIP_PREFIX):
        from harness.backbones.clip import clip_family

        return Backbone(name, clip_family(name))
    if is_own(name):
        return own_backbone(name).entry()
    return lookup(name)


def resolve_backbones(tokens: list[str]) -> list[str]:
    """Expand registry names, groups (``cnn``, ``transformer``, ``hybrid``, ``edge``, ``all``)
    and timm model names into a de-duplicated list, in the order given. A name may carry weights:
    a timm pretrained tag (``resnet50.a1_in1k``) or a checkpoint file (``resnet18@ckpt.pt``, kept
    with its absolute path).

    Raises :class:`UnknownBackbone` naming close matches for anything unknown, and
    :class:`harness.backbones.weights.UnknownWeights` for an unknown tag or a missing file (`WeightsMismatch` for a
    checkpoint of another architecture).
    """
    import timm

    out: list[str] = []
    for raw in tokens:
        token = raw.strip()
        if not token:
            continue
        if token.startswith(CLIP_PREFIX) or is_own(token.partition(FILE_SEP)[0]):  # before '.'/'@': these may hold both
            names = [weights_token(token)]
        elif token == "all":
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
    :class:`harness.backbones.weights.WeightsMismatch` here, so the option parser refuses it before any case runs.
    """
    from harness.backbones.factory import check_fits
    from harness.backbones.weights import parse_backbone

    ref = parse_backbone(token)
    check_fits(ref)
    if ref.arch.startswith(CLIP_PREFIX):
        from harness.backbones.clip import canonical_token

        return canonical_token(ref)
    if ref.file is not None:
        return f"{ref.arch}{FILE_SEP}{ref.file}"
    return f"{ref.arch}.{ref.tag}" if ref.tag else ref.arch


def create_backbone(name: str, *, num_classes: int, img_size: int) -> nn.Module:
    """Build ``name`` with random weights (``pretrained=False``), in eval mode.

    Models that must know their input size (ViT, DeiT, Swin, CoAtNet…) are built for
    ``img_size``; the others are resolution-agnostic and refuse the keyword, so it is dropped
    for them. Raises :class:`BackboneUnsupported` when the model cannot run at ``img_size``.
    """
    if name.startswith(CLIP_PREFIX) or is_own(name):
        return create_model(WeightsRef(name), num_classes=num_classes, img_size=img_size)[0]
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
    if name.startswith(CLIP_PREFIX):
        return None  # an image tower ends in an embedding, whatever its trunk's map
    model = create_backbone(name, num_classes=0, img_size=img_size).eval()
    forward_features = getattr(model, "forward_features", None)
    if not callable(forward_features):
        return None
    with torch.no_grad():
        out = forward_features(torch.zeros(1, 3, img_size, img_size))
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        return None
    return int(out.shape[2] if out.shape[1] >= out.shape[3] else out.shape[1])



def create_model(ref: WeightsRef, *, num_classes: int, img_size: int, download: bool = False) -> tuple[nn.Module, ResolvedWeights | None]:
    """Build ``ref`` for ``img_size`` with a fresh ``num_classes`` head (0: pooled features), in eval mode.

    Weights load through timm, so its checkpoint filters run (a ViT's position embedding is resampled to
    ``img_size``); an own file's keys are checked first. Raises WeightsUnavailable, WeightsMismatch,
    UnknownWeights or BackboneUnsupported.

    A ``clip:`` backbone is its image tower (``num_classes=0``: the image embedding, what the feature
    protocols read), followed by a fresh linear head when ``num_classes > 0``."""
    if ref.arch.startswith(CLIP_PREFIX):
        return _create_clip(ref, num_classes, img_size, download)
    if is_own(ref.arch):
        from harness.backbones.own_model import create_own

        model = create_own(ref.arch, ref.file, num_classes=num_classes, img_size=img_size)[0]
        return model, locate(ref) if ref.file is not None else None
    if not ref.pretrained:
        return create_backbone(ref.arch, num_classes=num_classes, img_size=img_size), None
    resolved = locate(ref, download=download)
    check_fits(ref)  # an own file's keys, on a weightless (meta) copy of the architecture
    model = _build(ref, resolved.path, num_classes, img_size)
    model.eval()
    check_runs(model, ref.arch, img_size)
    return model, resolved


def _create_clip(ref: WeightsRef, num_classes: int, img_size: int, download: bool) -> tuple[nn.Module, ResolvedWeights | None]:
    from harness.backbones.clip import build_clip, image_tower

    resolved = locate(ref, download=download) if ref.pretrained else None
    check_fits(ref)
    model = image_tower(ref.arch, build_clip(ref, img_size, resolved.path if resolved is not None else None), num_classes).eval()
    check_runs(model, ref.arch, img_size)
    return model, resolved


def _build(ref: WeightsRef, path: Path | None, num_classes: int, img_size: int) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if path is not None:
        # With `file` set, timm loads that file and touches no network (_resolve_pretrained_source).
        # num_classes=-1 (timm's "unknown") equals no head size, so load_pretrained always drops the
        # checkpoint's classifier, even when the class counts agree: transfer starts from a fresh head.
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path), "num_classes": -1})
    name = f"{ref.arch}.{ref.tag}" if ref.tag else ref.arch
    try:
        try:
            model: nn.Module = timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError as exc:  # resolution-agnostic models refuse img_size, as in create_backbone
            if "img_size" not in str(exc):
                raise
            model = timm.create_model(name, **kwargs)
    except (AssertionError, ValueError, RuntimeError) as exc:
        if path is not None and isinstance(exc, RuntimeError) and "loading state_dict" in str(exc):
            raise WeightsMismatch(_load_error(ref, path, exc)) from exc
        raise BackboneUnsupported(f"{ref.arch} cannot be built for {img_size}px input: {_first_line(exc)}") from exc
    return model


def has_batchnorm(arch: str) -> bool:
    """Whether ``arch`` normalises with BatchNorm, which cannot train on a batch of one image
    (PyTorch: "Expected more than 1 value per channel when training"). Built on the meta device:
    no memory, no initialisation cost."""
    return any(isinstance(module, nn.modules.batchnorm._BatchNorm) for module in _weightless(arch).modules())


def _weightless(arch: str) -> nn.Module:
    """``arch`` with one output, built on the meta device when it can be: its modules and parameter
    names without memory or initialisation cost (what :func:`has_batchnorm` and :func:`check_fits` read)."""
    if arch.startswith(CLIP_PREFIX):
        from harness.backbones.clip import build_clip, image_tower

        with torch.device("meta"):
            return image_tower(arch, build_clip(WeightsRef(arch), 224, None), 1)
    if is_own(arch):  # a team's factory may compute on real tensors: built for real
        from harness.backbones.own_model import build_own

        return build_own(arch, 1)
    import timm

    try:
        with torch.device("meta"):
            return timm.create_model(arch, num_classes=1)
    except Exception:  # a model whose __init__ computes on real tensors: build it for real (names and modules are the same)
        return timm.create_model(arch, num_classes=1)


def check_fits(ref: WeightsRef) -> None:
    """Refuse an own checkpoint whose keys are not ``ref.arch``'s (:class:`WeightsMismatch` with the
    counts), without building real weights: the option parser calls it, so a file for another
    architecture stops the session before any case runs. Tags and random weights pass."""
    if ref.file is None:
        return
    if ref.arch.startswith(CLIP_PREFIX):
        from harness.backbones.clip import check_clip_fits

        check_clip_fits(ref)
        return
    if is_own(ref.arch):
        from harness.backbones.own_model import check_own_fits

        check_own_fits(ref.arch, ref.file)
        return
    _check_keys(_weightless(ref.arch), ref.file, ref.arch)


def _check_keys(model: nn.Module, path: Path, arch: str) -> None:
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path))
    except Exception as exc:  # each reader fails its own way (pickle, zip, safetensors header): not a checkpoint
        raise UnknownWeights(f"{path} is not a readable checkpoint ({_first_line(exc)}); "
                             f"write {arch}{FILE_SEP}PATH with a state dict saved by torch.save or safetensors") from exc
    names = getattr(model, "pretrained_cfg", {}).get("classifier") or ()
    heads = {f"{n}.{p}" for n in ((names,) if isinstance(names, str) else names) for p in ("weight", "bias")}
    want, have = set(model.state_dict()) - heads, set(state) - heads
    if want != have:
        def count(keys: set[str], what: str) -> str:  # sorted: a file keeps no meaningful order
            return f"{len(keys)} {what} keys" + (f" (e.g. {', '.join(sorted(keys)[:_SHOWN_KEYS])})" if keys else "")

        raise WeightsMismatch(f"{path} does not fit {arch}: {count(want - have, 'missing')}, {count(have - want, 'unexpected')}; "
                              f"name the architecture it was trained as: ARCH{FILE_SEP}{path}")


def _load_error(ref: WeightsRef, path: Path, exc: RuntimeError) -> str:
    # torch's first line names the class; the reasons follow, one a line: count the shape ones, show the first.
    reasons = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()] or [_first_line(exc)]
    sizes = [line for line in reasons if line.startswith("size mismatch for ")]
    detail = f"{len(sizes)} tensors differ in shape ({sizes[0].rstrip('.')})" if sizes else reasons[0][:200]  # 200: one line
    fix = (f"name the architecture it was trained as: ARCH{FILE_SEP}{path}" if ref.file is not None
           else f"the cached file is not {ref.name}'s: delete it and run {fetch_command(ref)}")
    return f"{path} does not fit {ref.arch}: {detail}; {fix}"
