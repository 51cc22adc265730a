"""Pretrained weights for backbone names: timm tags (``resnet50.a1_in1k``) and own checkpoints (``resnet18@PATH``);
CLIP models (``clip:…``) have theirs looked up the same way by :mod:`harness.backbones.clip`.

Offline first: a tag's file is looked up, never fetched, in the Hugging Face hub cache (``$HF_HUB_CACHE``,
else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``, read at call time), then in timm's torch-hub
cache; ``download=True`` opts in to fetching. An own checkpoint (``.safetensors``, ``.pth``, ``.pt``,
``.bin``) is read by timm's ``load_state_dict``: ``state_dict``/``model`` wrappers and ``module.``
prefixes are fine, EMA weights win when present. The sha256 of the file loaded is part of comparability.
Transfer always starts from a fresh classifier; every other tensor comes from the file.
Preprocessing: a tag's pretrained cfg; an own file the architecture's default cfg, overridden key by key
by a sidecar ``PATH.json`` (``{"mean": [..], "std": [..], "input_size": 32, "interpolation": "bilinear"}``);
random weights the suite's from-scratch 0.5/0.5.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from harness.backbones.refs import _CLIP as _CLIP
from harness.backbones.refs import FILE_SEP as FILE_SEP
from harness.backbones.refs import INTERPOLATIONS as INTERPOLATIONS
from harness.backbones.refs import SIDECAR_FORMAT as SIDECAR_FORMAT
from harness.backbones.refs import SIDECAR_KEYS as SIDECAR_KEYS
from harness.backbones.refs import SUFFIXES as SUFFIXES
from harness.backbones.refs import Preprocess as Preprocess
from harness.backbones.refs import ResolvedWeights as ResolvedWeights
from harness.backbones.refs import UnknownWeights as UnknownWeights
from harness.backbones.refs import WeightsMismatch as WeightsMismatch
from harness.backbones.refs import WeightsRef as WeightsRef
from harness.backbones.refs import WeightsUnavailable as WeightsUnavailable
from harness.backbones.refs import _rgb, hf_cache_dir, resolved, with_sidecar
from harness.backbones.refs import sha256_file as sha256_file
from harness.backbones.registry import UnknownBackbone
from harness.contract import SCRATCH_MEAN, SCRATCH_STD, suggest

# timm's and huggingface_hub's order: safetensors (no pickle) first, then the legacy pickle.
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")


# The "native" side of a team's model (no pretrained cfg to read it from): timm's default cfg side;
# a sidecar PATH.json beside its checkpoint says otherwise.
OWN_INPUT_SIZE = 224


_SHOWN_TAGS = 8  # tags shown for an unknown tag: enough to see the naming scheme, few enough for one line


def parse_backbone(token: str) -> WeightsRef:
    """``resnet50`` (random), ``resnet50.a1_in1k`` (timm tag) or ``resnet18@PATH`` (own checkpoint).

    Raises :class:`~harness.backbones.registry.UnknownBackbone` for an unknown architecture, :class:`UnknownWeights`
    for an unknown tag, a missing file or a name that cannot be read."""
    if token.strip().startswith(_CLIP):
        from harness.backbones.clip import parse_clip

        return parse_clip(token)
    import timm

    from harness.backbones.own import is_own, own_backbone

    head, sep, path = token.strip().partition(FILE_SEP)
    if is_own(head.strip()):  # pkg.module:factory, an entry point or a team's timm registration: no timm tags
        own_backbone(head.strip())  # imports it: an import error, a missing factory or family is refused here
        return WeightsRef(head.strip(), file=_checkpoint(head.strip(), path)) if sep else WeightsRef(head.strip())
    arch, dot, tag = head.partition(".")  # timm architectures hold no '.': the first one starts the tag
    if not arch or (sep and not path.strip()) or (dot and not tag):
        raise UnknownWeights(f"cannot read backbone {token!r}: write ARCH, ARCH.TAG (a timm pretrained tag) or ARCH{FILE_SEP}PATH (own checkpoint)")
    if not timm.is_model(arch):
        raise UnknownBackbone(f"unknown backbone {arch!r}{suggest(arch, timm.list_models())}; valid: any timm model (timm.list_models())")
    if sep and dot:
        raise UnknownWeights(f"{token!r} names a tag and a file; the file replaces the tag: write {arch}{FILE_SEP}{path.strip()}")
    if sep:
        return WeightsRef(arch, file=_checkpoint(arch, path))
    if not dot:
        return WeightsRef(arch)
    known = timm.list_pretrained(f"{arch}.*")
    if not known:
        raise UnknownWeights(f"unknown pretrained tag '{arch}.{tag}': timm has no pretrained weights for {arch}; "
                             f"write {arch} (random weights) or {arch}{FILE_SEP}PATH (own checkpoint)")
    if f"{arch}.{tag}" not in known:
        shown = ", ".join(known[:_SHOWN_TAGS]) + (", …" if len(known) > _SHOWN_TAGS else "")
        raise UnknownWeights(f"unknown pretrained tag '{arch}.{tag}'{suggest(f'{arch}.{tag}', timm.list_pretrained())}; "
                             f"timm lists {len(known)} tags for {arch}: {shown}")
    return WeightsRef(arch, tag=tag)


def _checkpoint(arch: str, path: str) -> Path:
    """``ARCH@PATH``'s file: absolute and normalised, symlinks kept (timm picks its safetensors reader by the
    suffix, and a link, `latest.safetensors` or an HF snapshot, may resolve to a blob without one)."""
    file = Path(os.path.normpath(Path(path.strip()).expanduser().absolute()))
    if file.suffix not in SUFFIXES:
        raise UnknownWeights(f"{file}: a checkpoint file ends in {', '.join(SUFFIXES)}; write {arch}{FILE_SEP}PATH with one")
    if not file.is_file():
        raise UnknownWeights(f"no checkpoint file {file}; write {arch}{FILE_SEP}PATH with an existing checkpoint file")
    return file


def preprocess_of(ref: WeightsRef) -> Preprocess:
    """The mean/std, side and interpolation ``ref``'s weights were trained with (see the module docstring)."""
    if ref.arch.startswith(_CLIP):
        from harness.backbones.clip import clip_preprocess

        return clip_preprocess(ref)
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from timm.models import get_pretrained_cfg

    from harness.backbones.own import is_own

    if is_own(ref.arch):  # a team's model: the suite's from-scratch normalisation, its file's sidecar over it
        base = Preprocess(SCRATCH_MEAN, SCRATCH_STD, OWN_INPUT_SIZE, "bilinear")
        return with_sidecar(base, ref.file) if ref.file is not None else base

    cfg = get_pretrained_cfg(f"{ref.arch}.{ref.tag}" if ref.tag else ref.arch)
    side = int(cfg.input_size[-1]) if cfg is not None and cfg.input_size else 224  # 224: timm's own default cfg side
    if not ref.pretrained:  # resized by the suite's own (bilinear) harness.data.augment.prepare
        return Preprocess(SCRATCH_MEAN, SCRATCH_STD, side, "bilinear")
    mean, std = (cfg.mean, cfg.std) if cfg is not None else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    base = Preprocess(_rgb(mean), _rgb(std), side, cfg.interpolation if cfg is not None else "bicubic")
    return with_sidecar(base, ref.file) if ref.file is not None else base


def _sources(ref: WeightsRef) -> tuple[str, tuple[str, ...], str, Path | None]:
    """A tag's HF repo (or ""), the files to look for in it, its url (or "") and that url's torch-hub cache path."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(f"{ref.arch}.{ref.tag}")
    if cfg is None:
        raise UnknownWeights(f"unknown pretrained tag '{ref.arch}.{ref.tag}'; see timm.list_pretrained('{ref.arch}.*')")
    files = ((cfg.hf_hub_filename,) if cfg.hf_hub_filename else HF_FILENAMES) if cfg.hf_hub_id else ()
    # A custom_load url holds a foreign format (JAX .npz) only the model's own loader reads; every such
    # tag is on the HF hub in native form too (timm 1.0.31), so only that one is looked for.
    url = cfg.url if isinstance(cfg.url, str) and not cfg.custom_load else ""
    return cfg.hf_hub_id or "", files, url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path) if url else None


def find_cached(ref: WeightsRef) -> ResolvedWeights | None:
    """``ref``'s file if it is here (HF cache, then torch-hub cache, or the own file), else ``None``
    (also for random weights). Offline: never downloads."""
    if ref.file is not None:
        return resolved(ref, ref.file, "file") if ref.file.is_file() else None
    if ref.tag is None:
        return None
    if ref.arch.startswith(_CLIP):
        from harness.backbones.clip_weights import find_clip

        return find_clip(ref)
    import huggingface_hub

    repo, files, _, hub = _sources(ref)
    for filename in files:
        found = huggingface_hub.try_to_load_from_cache(repo, filename, cache_dir=hf_cache_dir())
        if isinstance(found, str):  # neither None nor the cache's "known to be absent" marker
            return resolved(ref, Path(found), "hf-cache")
    return resolved(ref, hub, "timm-cache") if hub is not None and hub.is_file() else None


def places_looked(ref: WeightsRef) -> list[str]:
    """Where :func:`find_cached` looks for ``ref``'s file, for a person to check by hand."""
    if ref.file is not None or ref.tag is None:
        return [str(ref.file)] if ref.file else []
    if ref.arch.startswith(_CLIP):
        from harness.backbones import clip_weights

        return clip_weights.places_looked(ref)
    repo, files, _, hub = _sources(ref)
    places = [f"{hf_cache_dir() / ('models--' + repo.replace('/', '--'))} ({', '.join(files)})"] if repo else []
    return places + ([str(hub)] if hub else [])


def fetch_command(ref: WeightsRef) -> str:
    """The one command that downloads a tag's file into the cache :func:`find_cached` reads."""
    if ref.tag is None:
        raise ValueError(f"{ref.name} names no pretrained tag: only a timm or open_clip tag can be fetched")
    return f"python -m harness weights --download {ref.name}"


def locate(ref: WeightsRef, *, download: bool = False) -> ResolvedWeights:
    """``ref``'s file: cached, own, or (``download=True`` only) downloaded. Raises :class:`WeightsUnavailable`
    for a tag not cached, :class:`UnknownWeights` for a missing own file."""
    if not ref.pretrained:
        raise ValueError(f"{ref.name} has random weights: there is no file to locate")
    found = find_cached(ref)
    if found is not None:
        return found
    if ref.file is not None:
        raise UnknownWeights(f"no checkpoint file {ref.file}; write {ref.arch}{FILE_SEP}PATH with an existing checkpoint file")
    if download:
        return _download(ref)
    raise WeightsUnavailable(f"{ref.name}: not cached; looked in {', '.join(places_looked(ref))}; fetch: {fetch_command(ref)}")


def _download(ref: WeightsRef) -> ResolvedWeights:
    if ref.arch.startswith(_CLIP):
        from harness.backbones.clip_weights import download_clip

        return download_clip(ref)
    import huggingface_hub
    from huggingface_hub.errors import RemoteEntryNotFoundError

    repo, files, url, hub = _sources(ref)
    try:
        for filename in files:
            try:
                path = huggingface_hub.hf_hub_download(repo, filename, cache_dir=hf_cache_dir())
            except RemoteEntryNotFoundError:  # the repo holds the other format
                continue
            return resolved(ref, Path(path), "download")
        if hub is not None and not repo:
            hub.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(hub), progress=False)
            return resolved(ref, hub, "download")
    except OSError as exc:  # huggingface_hub's HTTP and offline errors are OSErrors too
        raise WeightsUnavailable(f"{ref.name}: download failed ({exc}); looked in {', '.join(places_looked(ref))}") from exc
    raise WeightsUnavailable(f"{ref.name}: none of {', '.join(places_looked(ref))} could be downloaded")


