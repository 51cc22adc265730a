"""A team's own backbone: an ``nn.Module`` from its own code, named three ways, resolved here once.

- ``pkg.module:factory`` (the ``module:attribute`` of entry points): ``pkg.module`` is imported from
  the environment or the working directory (put first on ``sys.path``, as uvicorn does);
- an entry-point name (``teamnet``) that an installed package publishes in the group
  :data:`ENTRY_GROUP` (``[project.entry-points."backbone_bench.backbones"] teamnet = "teamnet.model:build"``);
- a name registered with timm's ``@register_model`` by a module outside timm that the session imported
  (``pytest -p teamnet.model``).

The factory is called as ``factory(num_classes=N)`` and returns the module. What the suite cannot read
from a name the factory declares as attributes (:data:`DECLARED`): ``family`` (required: one of the
contract's families; no guess), ``edge`` (default ``False``) and ``feature_layer`` (the classifier whose
input the frozen-feature protocols read; found by itself when not given, see
:mod:`harness.backbones.own_model`). :func:`harness.backbones.own_model.own_identity` is what a record says of the code.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import distributions
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from harness.backbones.registry import Backbone, UnknownBackbone
from harness.contract import FAMILIES, suggest

ENTRY_GROUP = "backbone_bench.backbones"
# The factory's attributes the suite reads, with what each means (docs/own-backbones.md).
DECLARED = {"family": f"one of {', '.join(FAMILIES)}", "edge": "True for a board-sized model", "feature_layer": "the classifier's module name"}
_CLIP = "clip:"
_SEARCHED_SHOWN = 3  # sys.path entries an import error names after the working directory: one readable line
# A digest of 16 hex digits, as the contract's settings digest: enough to tell two versions apart.
_DIGEST = 16


@dataclass(frozen=True)
class OwnBackbone:
    """A resolved own backbone: its name in ids, where its factory lives and what it declares."""

    name: str
    source: str  # "pkg.module:factory"
    via: str  # "module:factory", "entry point of <dist>", "timm register_model"
    factory: Callable[..., nn.Module]
    family: str
    edge: bool
    feature_layer: str | None
    file: Path

    def entry(self) -> Backbone:
        """The registry entry matrix cases read (family and edge as declared)."""
        return Backbone(self.name, self.family, self.edge)


def is_factory_token(name: str) -> bool:
    """Whether ``name`` (without ``@file``) is the ``module:factory`` form, not a ``clip:`` model."""
    return ":" in name and not name.startswith(_CLIP)


@functools.cache
def is_own(name: str) -> bool:
    """Whether ``name`` names an own backbone (any of the three forms); plain timm and registry names do not."""
    if is_factory_token(name):
        return True
    if name.startswith(_CLIP) or not name or "." in name:
        return False
    return bool(_published(name)) or _timm_registered(name) is not None


@functools.cache
def own_backbone(name: str) -> OwnBackbone:
    """Resolve ``name``; :class:`UnknownBackbone` with the fix for what cannot be imported or read."""
    if is_factory_token(name):
        module_name, _, attr = name.partition(":")
        return _declared(name, f"{module_name}:{attr}", "module:factory", _attribute(name, _import(name, module_name), attr))
    published = _published(name)
    if len(published) > 1:
        raise UnknownBackbone(f"backbone {name!r} is published in the entry-point group {ENTRY_GROUP} by "
                              f"{' and '.join(f'{dist} ({value})' for dist, value in published)}; uninstall one, "
                              f"or name the factory itself: --backbones {published[0][1]}")
    if published:
        dist, value = published[0]
        module_name, _, attr = value.partition(":")
        return _declared(name, value, f"entry point of {dist}", _attribute(name, _import(name, module_name), attr))
    factory = _timm_registered(name)
    if factory is None:
        raise UnknownBackbone(f"unknown own backbone {name!r}: write pkg.module:factory, or publish it in {ENTRY_GROUP}")
    return _declared(name, f"{factory.__module__}:{factory.__name__}", "timm register_model", factory)


def _published(name: str) -> list[tuple[str, str]]:
    """(distribution, value) of every package publishing ``name`` in :data:`ENTRY_GROUP`."""
    found: dict[tuple[str, str], None] = {}
    # Every distribution on the path, not importlib.metadata.entry_points(): that one keeps a single entry
    # per name, so a name two packages publish would silently resolve to one of them.
    for dist in distributions():
        for ep in dist.entry_points.select(group=ENTRY_GROUP, name=name):
            found[(dist.name, ep.value)] = None  # an editable install can list one distribution twice
    return sorted(found)  # by distribution: the same message whatever order the path lists them in


def _timm_registered(name: str) -> Callable[..., nn.Module] | None:
    import timm

    if not timm.is_model(name):
        return None
    factory: Callable[..., nn.Module] = timm.models.model_entrypoint(name)
    return None if factory.__module__.startswith("timm.") else factory


def _import(token: str, module_name: str) -> ModuleType:
    cwd = os.getcwd()
    if cwd not in sys.path:  # the team's repository root, as `python -m` and uvicorn make it importable
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # the team's module may raise anything while importing: its last line says what
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        paths = [p for p in sys.path if p and p != cwd]
        others = ([p for p in paths if "site-packages" in p] or paths)[:_SEARCHED_SHOWN]  # where a pip install would be
        raise UnknownBackbone(f"{token}: cannot import {module_name} ({last}); searched {cwd} (the working directory), "
                              f"{', '.join(others)}, …; run from the repository that holds it or pip install it") from None


def _attribute(token: str, module: ModuleType, attr: str) -> Callable[..., nn.Module]:
    found: Any = module if attr else None
    for part in attr.split(".") if attr else ():  # module:Class.create, as entry points allow
        found = getattr(found, part, None)
    if callable(found):
        return found  # type: ignore[no-any-return]
    callables = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
    what = f"no attribute {attr!r}" if found is None else f"{attr!r} is not callable"
    raise UnknownBackbone(f"{token}: {module.__name__} has {what}{suggest(attr, callables)}; "
                          f"its callables: {', '.join(callables) or 'none'}")


def _declared(name: str, source: str, via: str, factory: Callable[..., Any]) -> OwnBackbone:
    family = getattr(factory, "family", None)
    file = Path(sys.modules[factory.__module__].__file__ or "?")
    if family not in FAMILIES:
        said = "declares no family" if family is None else f"declares family {family!r}"
        raise UnknownBackbone(f"{name}: {source} {said}; declare it beside the factory in {file}: "
                              f"{source.rpartition(':')[2]}.family = \"cnn\" (one of {', '.join(FAMILIES)})")
    layer = getattr(factory, "feature_layer", None)
    return OwnBackbone(name, source, via, factory, str(family), bool(getattr(factory, "edge", False)),
                       str(layer) if layer is not None else None, file)


def code_files(own: OwnBackbone) -> list[Path]:
    """The source the backbone's code digest covers: every ``.py`` file of the factory's top-level package
    (its modules import one another), or the one module file outside a package."""
    top = sys.modules.get(own.source.partition(":")[0].split(".")[0])
    folders = list(getattr(top, "__path__", []) or [])
    if not folders:
        return [own.file]
    return sorted({p for folder in folders for p in Path(folder).rglob("*.py")})


def code_digest(files: list[Path]) -> str:
    """sha256 over the files' names and bytes (order-independent of the file system)."""
    h = hashlib.sha256()
    root = os.path.commonpath([str(f.parent) for f in files])
    for path in files:
        h.update(os.path.relpath(path, root).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:_DIGEST]


def shape_digest(model: nn.Module) -> str:
    """sha256 over the state dict's names and shapes: the architecture, whatever its weights."""
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:_DIGEST]
