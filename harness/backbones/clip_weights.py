"""Where a CLIP model's weights are: open_clip tags and hf-hub repos, offline first.

As for timm tags (:mod:`harness.backbones.weights`): the Hugging Face cache (open_clip's layout:
``open_clip_config.json`` beside ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``),
then open_clip's own download cache (``~/.cache/clip``) for a tag with a url; nothing is fetched
unless asked (:func:`download_clip`). The file found is sha256 digested like every other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from harness.backbones.refs import ResolvedWeights, WeightsRef, WeightsUnavailable, hf_cache_dir, resolved
from harness.backbones.registry import UnknownBackbone

PREFIX = "clip:"
HF_HUB = "hf-hub:"
# The tag of a hf-hub model: its repo is its weights.
HF_HUB_TAG = "hf-hub"
HF_CONFIG = "open_clip_config.json"
# open_clip's own order of preference (factory._find_checkpoint_in_dir): safetensors first.
HF_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "open_clip_pytorch_model.bin")
INSTALL = "pip install 'backbone-bench[clip]' (open-clip-torch)"


def open_clip_module() -> Any:
    """``open_clip``, or :class:`UnknownBackbone` naming how to install it (it is an optional extra)."""
    try:
        import open_clip
    except ImportError as exc:
        raise UnknownBackbone(f"clip: backbones need open_clip, which is not installed: {INSTALL}") from exc
    return open_clip


def hf_file(repo: str, names: tuple[str, ...]) -> Path | None:
    import huggingface_hub

    for filename in names:
        found = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir())
        if isinstance(found, str):
            return Path(found)
    return None


def clip_cache_dir() -> Path:
    """open_clip's download cache (``pretrained.download_pretrained_from_url``'s default)."""
    return Path(os.path.expanduser(os.path.join("~", ".cache", "clip")))


def _tag_sources(ref: WeightsRef) -> tuple[str, tuple[str, ...], str]:
    """``(HF repo, files in it, url)`` of a tag or hf-hub model; empty where it has none."""
    name = ref.arch[len(PREFIX):]
    if name.startswith(HF_HUB):
        return name[len(HF_HUB):], HF_WEIGHTS, ""
    cfg = open_clip_module().get_pretrained_cfg(name, str(ref.tag))
    hub = str(cfg.get("hf_hub", ""))
    repo, filename = os.path.split(hub.rstrip("/")) if hub and not hub.endswith("/") else (hub.rstrip("/"), "")
    files = (filename,) if filename else HF_WEIGHTS
    return repo, files, str(cfg.get("url", ""))


def find_clip(ref: WeightsRef) -> ResolvedWeights | None:
    """A CLIP tag's or hf-hub model's weights if cached (HF cache, then open_clip's); offline."""
    repo, files, url = _tag_sources(ref)
    if repo and (found := hf_file(repo, files)) is not None:
        if ref.tag != HF_HUB_TAG or hf_file(repo, (HF_CONFIG,)) is not None:
            return resolved(ref, found, "hf-cache")
    local = clip_cache_dir() / os.path.basename(url) if url else None
    return resolved(ref, local, "clip-cache") if local is not None and local.is_file() else None


def places_looked(ref: WeightsRef) -> list[str]:
    """Where :func:`find_clip` looks, for a person to check by hand."""
    repo, files, url = _tag_sources(ref)
    wanted = (*files, HF_CONFIG) if ref.tag == HF_HUB_TAG else files
    places = [f"{hf_cache_dir() / ('models--' + repo.replace('/', '--'))} ({', '.join(wanted)})"] if repo else []
    return places + ([str(clip_cache_dir() / os.path.basename(url))] if url else [])


def fetch_command(ref: WeightsRef) -> str:
    """The one command that downloads a CLIP tag's (or hf-hub model's) files into the caches read here."""
    return f"python -m harness weights --download {ref.name}"


def download_clip(ref: WeightsRef) -> ResolvedWeights:
    """Fetch a CLIP tag's files (opt-in): from the HF hub when it has them, else open_clip's url."""
    import huggingface_hub

    repo, files, url = _tag_sources(ref)
    try:
        if repo:
            if ref.tag == HF_HUB_TAG:
                huggingface_hub.hf_hub_download(repo, HF_CONFIG, cache_dir=hf_cache_dir())
            for filename in files:
                try:
                    return resolved(ref, Path(huggingface_hub.hf_hub_download(repo, filename, cache_dir=hf_cache_dir())), "download")
                except huggingface_hub.errors.EntryNotFoundError:  # the repo holds another format
                    continue
        if url:
            return resolved(ref, Path(open_clip_module().download_pretrained_from_url(url, cache_dir=str(clip_cache_dir()))), "download")
    except OSError as exc:
        raise WeightsUnavailable(f"{ref.name}: download failed ({exc}); looked in {', '.join(places_looked(ref))}") from exc
    raise WeightsUnavailable(f"{ref.name}: none of {', '.join(places_looked(ref))} could be downloaded")
