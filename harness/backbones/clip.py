"""CLIP models as backbones: open_clip names and tags, a timm image tower, own configs and checkpoints.

A CLIP backbone is one token starting ``clip:`` (timm names never hold a colon):

- ``clip:ViT-B-32``: an open_clip model (``open_clip.list_models()``), random weights;
- ``clip:ViT-B-32/laion2b_s34b_b79k``: with an open_clip pretrained tag;
- ``clip:hf-hub:ORG/NAME``: config and weights of a Hugging Face repo in open_clip's layout
  (``open_clip_config.json`` + ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``);
- ``clip:convnextv2_tiny``: a timm model (a name open_clip does not list) as the image tower, built
  through open_clip's ``TimmModel`` with the text tower of ViT-B-32's config;
- ``clip:PATH/model.json``: an own model config (open_clip's layout, or the HF one with ``model_cfg``),
  named after the file's stem; ``…@CHECKPOINT`` (after any of the above) loads an own checkpoint.

Weights are offline first, as for timm tags (:mod:`harness.backbones.weights`): the Hugging Face
cache, then open_clip's own download cache (``~/.cache/clip``); ``download=True`` opts in. As a
backbone, a CLIP model is its image tower (``model.visual``: image -> unnormalised embedding); the
zero-shot protocol builds the whole model (:func:`build_clip`) for its text tower.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.backbones.clip_weights import (
    HF_CONFIG,
    HF_HUB,
    HF_HUB_TAG,
    PREFIX,
    fetch_command,
    hf_file,
    open_clip_module,
    places_looked,
)
from harness.backbones.refs import (
    FILE_SEP,
    SUFFIXES,
    Preprocess,
    UnknownWeights,
    WeightsMismatch,
    WeightsRef,
    WeightsUnavailable,
    with_sidecar,
)
from harness.backbones.registry import BackboneUnsupported, UnknownBackbone, family_of
from harness.contract import SCRATCH_MEAN, SCRATCH_STD, suggest

# The text tower a timm image tower gets: ViT-B-32's, the seed study's reference CLIP.
TEXT_TOWER_OF = "ViT-B-32"
_SHOWN_TAGS = 8
# Own config files, by the name they give their model (the file's stem).
_CONFIG_FILES: dict[str, Path] = {}


def is_clip(name: str) -> bool:
    """Whether a backbone name or token is a CLIP model (``clip:…``)."""
    return name.startswith(PREFIX)


def parse_clip(token: str) -> WeightsRef:
    """A ``clip:`` token as a :class:`WeightsRef` (see the module docstring); raises UnknownBackbone or UnknownWeights."""
    open_clip = open_clip_module()
    body, sep, path = token.strip()[len(PREFIX):].partition(FILE_SEP)
    body = body.strip()
    file = _checkpoint(token, path) if sep else None
    if body.startswith(HF_HUB):
        repo = body[len(HF_HUB):]
        if repo.count("/") != 1 or not all(repo.split("/")):
            raise UnknownWeights(f"cannot read {token!r}: write clip:hf-hub:ORG/NAME (a Hugging Face repo in open_clip's layout)")
        if file is not None:
            raise UnknownWeights(f"{token!r}: a hf-hub model brings its own weights; write clip:hf-hub:{repo}, or a config file with @CHECKPOINT")
        return WeightsRef(PREFIX + body, tag=HF_HUB_TAG)
    if body.endswith(".json"):
        return WeightsRef(PREFIX + register_config(Path(body)), file=file)
    name, slash, tag = body.partition("/")
    if not name or (slash and not tag):
        raise UnknownWeights(f"cannot read backbone {token!r}: write clip:MODEL, clip:MODEL/TAG, clip:hf-hub:ORG/NAME, "
                             f"clip:TIMM_MODEL or clip:CONFIG.json, each optionally with {FILE_SEP}CHECKPOINT")
    if name not in open_clip.list_models():
        import timm

        if not timm.is_model(name):
            raise UnknownBackbone(f"unknown CLIP model {name!r}{suggest(name, [*open_clip.list_models(), *timm.list_models()])}; "
                                  "valid: an open_clip model (open_clip.list_models()) or a timm model as the image tower")
        if tag:
            raise UnknownWeights(f"{token!r}: {name} is a timm image tower with ViT-B-32's text tower, and open_clip has no tags for it; "
                                 f"write clip:{name} (random) or clip:{name}{FILE_SEP}CHECKPOINT")
    elif tag:
        known = open_clip.list_pretrained_tags_by_model(name)
        if tag not in known:
            shown = ", ".join(known[:_SHOWN_TAGS]) + (", …" if len(known) > _SHOWN_TAGS else "")
            raise UnknownWeights(f"unknown pretrained tag '{name}/{tag}'{suggest(tag, known)}; "
                                 + (f"open_clip lists {len(known)} tags for {name}: {shown}" if known else f"open_clip has no tags for {name}"))
        if file is not None:
            raise UnknownWeights(f"{token!r} names a tag and a file; the file replaces the tag: write clip:{name}{FILE_SEP}{file}")
    return WeightsRef(PREFIX + name, tag=tag or None, file=file)


def canonical_token(ref: WeightsRef) -> str:
    """The spelling of a parsed CLIP token that parses back to ``ref`` anywhere (an own config by its path)."""
    name = ref.arch[len(PREFIX):]
    head = PREFIX + str(_CONFIG_FILES[name]) if name in _CONFIG_FILES else ref.arch
    if ref.file is not None:
        return f"{head}{FILE_SEP}{ref.file}"
    return f"{head}/{ref.tag}" if ref.tag and ref.tag != HF_HUB_TAG else head


def _checkpoint(token: str, path: str) -> Path:
    file = Path(os.path.normpath(Path(path.strip()).expanduser().absolute()))
    if not path.strip() or file.suffix not in SUFFIXES:
        raise UnknownWeights(f"{token!r}: a checkpoint file ends in {', '.join(SUFFIXES)}; write clip:MODEL{FILE_SEP}PATH with one")
    if not file.is_file():
        raise UnknownWeights(f"no checkpoint file {file}; write clip:MODEL{FILE_SEP}PATH with an existing checkpoint file")
    return file


def register_config(path: Path) -> str:
    """Read an own model config (checked) and register it under its file's stem, the model's name."""
    file = Path(os.path.normpath(path.expanduser().absolute()))
    try:
        _read_config(json.loads(file.read_text()))
    except (OSError, ValueError) as exc:
        raise UnknownBackbone(f"{file}: not a CLIP model config ({exc}); write clip:PATH.json with open_clip's "
                              "{\"embed_dim\", \"vision_cfg\", \"text_cfg\"} (or the HF layout's \"model_cfg\")") from exc
    name = file.stem
    if name in open_clip_module().list_models() or _CONFIG_FILES.get(name, file) != file:
        raise UnknownBackbone(f"{file}: its name {name!r} is already a CLIP model's ({_CONFIG_FILES.get(name, 'open_clip')}); rename the file")
    _CONFIG_FILES[name] = file
    return name


def _read_config(data: object) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` of open_clip's layout or the HF one; ValueError when it is neither."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    model = data.get("model_cfg", data)
    if not isinstance(model, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(model):
        raise ValueError("no embed_dim, vision_cfg and text_cfg")
    if "multimodal_cfg" in model:
        raise ValueError("a CoCa model (multimodal_cfg): only contrastive CLIP models are backbones here")
    pre = data.get("preprocess_cfg", {}) if "model_cfg" in data else {}
    return copy.deepcopy(model), dict(pre) if isinstance(pre, dict) else {}


def _timm_tower(name: str) -> dict[str, Any]:
    cfg: dict[str, Any] = open_clip_module().get_model_config(TEXT_TOWER_OF)
    # open_clip's own timm-tower configs (convnext_base.json): the network's pool, a linear projection.
    cfg["vision_cfg"] = {"timm_model_name": name, "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear", "image_size": 224}
    return cfg


def configs(arch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` of a CLIP architecture; a hf-hub config is read from the HF cache
    (:class:`WeightsUnavailable` naming the fetch command when it is not there)."""
    open_clip = open_clip_module()
    name = arch[len(PREFIX):]
    if name.startswith(HF_HUB):
        ref = WeightsRef(arch, tag=HF_HUB_TAG)
        found = hf_file(name[len(HF_HUB):], (HF_CONFIG,))
        if found is None:
            raise WeightsUnavailable(f"{ref.name}: not cached; looked in {', '.join(places_looked(ref))}; fetch: {fetch_command(ref)}")
        return _read_config(json.loads(found.read_text()))
    if name in _CONFIG_FILES:
        return _read_config(json.loads(_CONFIG_FILES[name].read_text()))
    if name in open_clip.list_models():
        return open_clip.get_model_config(name), {}
    return _timm_tower(name), {}


def clip_family(arch: str) -> str:
    """The family of a CLIP model's image tower: a timm tower's own, ``cnn`` for open_clip's
    ModifiedResNet (``layers`` per stage), ``transformer`` for a ViT (and for an uncached hf-hub config)."""
    try:
        vision = configs(arch)[0]["vision_cfg"]
    except (WeightsUnavailable, UnknownBackbone):
        return "transformer"
    if "timm_model_name" in vision:
        return family_of(str(vision["timm_model_name"]))
    return "cnn" if isinstance(vision.get("layers"), (list, tuple)) else "transformer"


def build_clip(ref: WeightsRef, img_size: int, path: Path | None) -> nn.Module:
    """The whole CLIP model of ``ref`` for ``img_size`` px images, eval mode, with the checkpoint at ``path``
    loaded (``None``: random weights). Raises WeightsMismatch or BackboneUnsupported."""
    open_clip = open_clip_module()
    from open_clip.model import CLIP, CustomTextCLIP

    model_cfg, _ = configs(ref.arch)
    model_cfg["vision_cfg"]["image_size"] = img_size
    model_cfg["vision_cfg"].pop("timm_model_pretrained", None)
    model_cfg["text_cfg"].pop("hf_model_pretrained", None)
    if ref.tag and ref.tag != HF_HUB_TAG and open_clip.get_pretrained_cfg(ref.arch[len(PREFIX):], ref.tag).get("quick_gelu"):
        model_cfg["quick_gelu"] = True  # as open_clip.create_model does for a quick-GELU tag
    custom = model_cfg.pop("custom_text", False) or "hf_model_name" in model_cfg["text_cfg"]
    try:
        model: nn.Module = (CustomTextCLIP if custom else CLIP)(**model_cfg)
    except (AssertionError, ValueError, RuntimeError, TypeError) as exc:
        raise BackboneUnsupported(f"{ref.arch} cannot be built for {img_size}px input: {exc}") from exc
    if path is not None:
        try:
            open_clip.load_checkpoint(model, str(path))
        except RuntimeError as exc:
            raise WeightsMismatch(f"{path} does not fit {ref.arch}: {str(exc).splitlines()[0][:200]}; "
                                  f"name the model it was trained as: clip:MODEL{FILE_SEP}{path} or clip:CONFIG.json{FILE_SEP}{path}") from exc
    return model.eval()


def tokenizer_of(arch: str) -> Any:
    """The tokenizer of a CLIP model's text tower, built offline from its config (context length, HF tokenizer)."""
    open_clip = open_clip_module()
    text = configs(arch)[0]["text_cfg"]
    context = int(text.get("context_length", 77))  # 77: CLIP's context length, open_clip's default
    if "hf_tokenizer_name" in text:
        return open_clip.HFTokenizer(text["hf_tokenizer_name"], context_length=context)
    return open_clip.SimpleTokenizer(context_length=context)


def check_clip_fits(ref: WeightsRef) -> None:
    """Refuse an own checkpoint whose keys are not the CLIP model's (counted), before any case runs."""
    if ref.file is None:
        return
    from open_clip.factory import load_state_dict

    try:
        state = load_state_dict(str(ref.file))
    except Exception as exc:  # each reader fails its own way: not a checkpoint
        raise UnknownWeights(f"{ref.file} is not a readable checkpoint ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    with torch.device("meta"):
        want = set(build_clip(WeightsRef(ref.arch), 224, None).state_dict())
    have = set(state)
    if not want <= have or not {k for k in have - want if not k.endswith("position_ids")} <= {"logit_bias"}:
        missing, extra = sorted(want - have), sorted(have - want)
        raise WeightsMismatch(f"{ref.file} does not fit {ref.arch}: {len(missing)} missing keys ({', '.join(missing[:3])}), "
                              f"{len(extra)} unexpected keys ({', '.join(extra[:3])}); name the model it was trained as: "
                              f"clip:MODEL{FILE_SEP}{ref.file} or clip:CONFIG.json{FILE_SEP}{ref.file}")


class ImageTower(nn.Module):
    """A CLIP model's image tower as a backbone: image -> image embedding ``[B, D]`` (unnormalised),
    optionally followed by a linear head (``num_classes > 0``)."""

    def __init__(self, visual: nn.Module, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.visual = visual
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.visual(x))
        return out


def image_tower(arch: str, model: nn.Module, num_classes: int) -> ImageTower:
    """``model.visual`` (of ``arch``) as a backbone (see :class:`ImageTower`)."""
    visual = model.visual
    if not isinstance(visual, nn.Module):
        raise BackboneUnsupported(f"{arch} has no image tower module (model.visual)")
    return ImageTower(visual, num_classes, int(configs(arch)[0]["embed_dim"]))


def clip_preprocess(ref: WeightsRef) -> Preprocess:
    """A CLIP model's input side (its vision config's ``image_size``) and, with weights, their
    normalisation (the tag's or config's, else open_clip's OpenAI mean/std, bicubic); random weights
    the suite's from-scratch 0.5/0.5. An own checkpoint's ``PATH.json`` sidecar overrides key by key."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    model_cfg, pre = configs(ref.arch)
    size = model_cfg["vision_cfg"].get("image_size", 224)
    side = int(size[0] if isinstance(size, (list, tuple)) else size)
    if not ref.pretrained:
        return Preprocess(SCRATCH_MEAN, SCRATCH_STD, side, "bilinear")
    if ref.tag and ref.tag != HF_HUB_TAG:
        pre = {**open_clip_module().get_pretrained_cfg(ref.arch[len(PREFIX):], ref.tag), **pre}
    mean, std = pre.get("mean", OPENAI_DATASET_MEAN), pre.get("std", OPENAI_DATASET_STD)
    interpolation = str(pre.get("interpolation", "bicubic"))
    base = Preprocess((float(mean[0]), float(mean[1]), float(mean[2])), (float(std[0]), float(std[1]), float(std[2])), side,
                      interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic")
    return with_sidecar(base, ref.file) if ref.file is not None else base


def clip_tags(arch: str) -> list[str]:
    """The open_clip tags of a CLIP architecture, as tokens (``clip:ViT-B-32/openai``); none for others."""
    name = arch[len(PREFIX):]
    return [f"{arch}/{tag}" for tag in open_clip_module().list_pretrained_tags_by_model(name)]
