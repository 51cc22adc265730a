"""Building a team's own backbone (:mod:`harness.backbones.own`): its factory called, checked, its own
checkpoint loaded under a fresh head, and its features for the frozen-feature protocols.

Features, in this order: timm's contract when the module has it (``forward_features``, ``num_features``,
``reset_classifier``: ``reset_classifier(0)`` leaves the pooled features); else the input of its
classifier, read by a forward pre-hook. The classifier is the factory's declared ``feature_layer``, or the
``nn.Linear`` whose output is the logits (found by one forward of a probe batch), else the last
``nn.Linear`` of ``num_classes`` outputs. Which one is in the record (``feature_layer``); a module without
timm's contract gets its ``get_classifier()`` naming that layer, which LP-FT sets from the linear probe.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness.backbones.own import code_digest, code_files, own_backbone, shape_digest
from harness.backbones.refs import FILE_SEP, UnknownWeights, WeightsMismatch
from harness.backbones.registry import BackboneUnsupported

TIMM_CONTRACT = "reset_classifier(0) (timm's contract)"
# The head width a features-only model is built with before its head is read past: a width the
# model's other linear layers rarely have, so the fallback search (last Linear of this width) finds the head.
_FEATURE_BUILD_CLASSES = 10
_SHOWN_KEYS = 3  # keys shown per kind in a mismatch, as harness.backbones.factory shows them


class OwnFeatures(nn.Module):
    """``model``'s features: the input of its classifier ``layer``, flattened, by a forward pre-hook."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model, self.layer = model, layer
        head = model.get_submodule(layer)
        self.num_features = int(getattr(head, "in_features", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = self.model.get_submodule(self.layer).register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)


def build_own(name: str, num_classes: int) -> nn.Module:
    """``factory(num_classes=num_classes)`` in eval mode; :class:`BackboneUnsupported` naming the factory when it
    raises or returns something that is not an ``nn.Module``."""
    own = own_backbone(name)
    try:
        model = own.factory(num_classes=num_classes)
    except Exception as exc:  # the team's code may raise anything: its first line is the reason
        raise BackboneUnsupported(f"--backbones {name}: {own.source}(num_classes={num_classes}) raised "
                                  f"{type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise BackboneUnsupported(f"--backbones {name}: {own.source}(num_classes={num_classes}) returned {type(model).__name__}, "
                                  "not a torch.nn.Module; return the model")
    return model.eval()


def has_timm_contract(model: nn.Module) -> bool:
    return all(callable(getattr(model, n, None)) for n in ("forward_features", "reset_classifier")) and hasattr(model, "num_features")


def classifier_of(name: str, model: nn.Module, num_classes: int, img_size: int) -> str:
    """The module name of ``model``'s classifier (see the module docstring)."""
    declared = own_backbone(name).feature_layer
    if declared is not None:
        names = dict(model.named_modules())
        if declared not in names:
            raise BackboneUnsupported(f"--backbones {name}: feature_layer {declared!r} is no module of {own_backbone(name).source}'s model; "
                                      f"its last modules: {', '.join(list(names)[-4:])}")
        return declared
    linears: list[str] = [str(n) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    outputs: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(n).register_forward_hook(functools.partial(_keep, outputs, n)) for n in linears]
    try:
        with torch.inference_mode():
            logits = model(_probe_batch(model, img_size))
    finally:
        for handle in handles:
            handle.remove()
    for layer in reversed(linears):
        if isinstance(logits, torch.Tensor) and outputs.get(layer) is not None and torch.equal(outputs[layer], logits):
            return layer
    if linears:
        return linears[-1]
    raise BackboneUnsupported(f"--backbones {name}: no nn.Linear of {num_classes} outputs feeds the logits; declare the classifier: "
                              f"{own_backbone(name).source.rpartition(':')[2]}.feature_layer = 'MODULE.NAME'")


def _keep(outputs: dict[str, torch.Tensor], layer: str, _module: nn.Module, _args: Any, out: Any) -> None:
    if isinstance(out, torch.Tensor):
        outputs[layer] = out


def _probe_batch(model: nn.Module, img_size: int) -> torch.Tensor:
    param = next(model.parameters(), None)
    generator = torch.Generator().manual_seed(0)  # a fixed batch: the classifier found is the same every call
    x = torch.randn(2, 3, img_size, img_size, generator=generator)
    return x.to(param.device) if param is not None and param.device.type != "meta" else x


def create_own(name: str, file: Path | None, *, num_classes: int, img_size: int) -> tuple[nn.Module, str]:
    """``name`` for ``img_size`` with a fresh head of ``num_classes`` (0: its features), its own checkpoint's
    tensors loaded (every one but the classifier's), in eval mode; and the classifier the features are read at."""
    width = num_classes or _FEATURE_BUILD_CLASSES
    model = build_own(name, width)
    check_logits(name, model, width, img_size)
    timm_like = has_timm_contract(model)
    head = "" if timm_like else classifier_of(name, model, width, img_size)
    if file is not None:
        load_own(name, model, file, head)
    if num_classes:
        if head:  # the one piece of timm's contract the suite reads of a classifier (LP-FT's head, the head's lr)
            setattr(model, "get_classifier", functools.partial(model.get_submodule, head))  # noqa: B010  (nn.Module types its attributes)
        return model, head or TIMM_CONTRACT
    if timm_like:
        model.reset_classifier(0)  # type: ignore[operator]
        return model.eval(), TIMM_CONTRACT
    return OwnFeatures(model, head).eval(), head


def check_logits(name: str, model: nn.Module, num_classes: int, img_size: int) -> None:
    """One batch at ``img_size``: :class:`BackboneUnsupported` when it cannot run, or its logits are not ``[N, num_classes]``."""
    try:
        with torch.inference_mode():
            out = model(_probe_batch(model, img_size))
    except Exception as exc:  # the team's forward may raise anything at an unsupported size
        raise BackboneUnsupported(f"--backbones {name}: cannot run a batch at {img_size}px: {type(exc).__name__}: {_first_line(exc)}") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != num_classes:
        raise BackboneUnsupported(f"--backbones {name}: built with num_classes={num_classes}, its forward at {img_size}px returned {shape}, "
                                  f"not logits [N, {num_classes}]; size the classifier from the num_classes keyword")


def _head_keys(model: nn.Module, head: str) -> set[str]:
    if not head:
        get = getattr(model, "get_classifier", None)
        found = get() if callable(get) else None
        head = next((n for n, m in model.named_modules() if m is found), "") if isinstance(found, nn.Module) else ""
    return {f"{head}.{k}" for k in model.get_submodule(head).state_dict()} if head else set()


def load_own(name: str, model: nn.Module, file: Path, head: str) -> None:
    """Load ``file`` into ``model``, all but its classifier (transfer starts from a fresh head, as for timm
    names); :class:`WeightsMismatch` counting the keys when the file is another architecture's."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(file))
    except Exception as exc:  # each reader fails its own way: not a checkpoint
        raise UnknownWeights(f"{file} is not a readable checkpoint ({_first_line(exc)}); "
                             f"write {name}{FILE_SEP}PATH with a state dict saved by torch.save or safetensors") from None
    heads = _head_keys(model, head)
    own = model.state_dict()
    want, have = set(own) - heads, set(state) - heads
    wrong = sorted(k for k in want & have if tuple(own[k].shape) != tuple(state[k].shape))
    if want != have or wrong:
        def count(keys: set[str] | list[str], what: str) -> str:
            return f"{len(keys)} {what} keys" + (f" (e.g. {', '.join(sorted(keys)[:_SHOWN_KEYS])})" if keys else "")

        raise WeightsMismatch(f"{file} does not fit {name}: {count(want - have, 'missing')}, {count(have - want, 'unexpected')}, "
                              f"{count(wrong, 'other-shape')}; name the architecture it was trained as: ARCH{FILE_SEP}{file}")
    model.load_state_dict({k: v for k, v in state.items() if k not in heads}, strict=False)


def check_own_fits(name: str, file: Path) -> None:
    """Refuse an own checkpoint for another architecture before any case runs (the module is built for real:
    a team's factory may not build on the meta device)."""
    model = build_own(name, _FEATURE_BUILD_CLASSES)
    head = "" if has_timm_contract(model) else classifier_of(name, model, _FEATURE_BUILD_CLASSES, _PROBE_SIDE)
    load_own(name, model, file, head)


# The side the checkpoint check probes the classifier at: the suite's smallest (its smoke) resolution.
_PROBE_SIDE = 32


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@functools.cache
def own_identity(name: str, num_classes: int, img_size: int) -> dict[str, object]:
    """What a record says of an own backbone's code: the factory's import path, how it was named, its source
    file, the digest of its package's source and of its parameter shapes (built for ``num_classes``), and the
    layer its features are read at."""
    own = own_backbone(name)
    files = code_files(own)
    width = num_classes or _FEATURE_BUILD_CLASSES
    model = build_own(name, width)
    return {"backbone_source": own.source, "backbone_via": own.via, "backbone_file": str(own.file),
            "backbone_code_digest": code_digest(files), "backbone_code_files": len(files), "backbone_shape_digest": shape_digest(model),
            "feature_layer": TIMM_CONTRACT if has_timm_contract(model) else classifier_of(name, model, width, img_size)}
