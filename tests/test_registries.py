"""The open sets are registries: a row in the contract (or the dataset registry) and a module found
by its name. Every row has its module with what the registry reads, and every module its row."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

from harness import kinds, protocols
from harness.contract import FAMILY_SPECS, KINDS, PROTOCOL_SPECS, RUNTIME_SPECS, TRACKER_SPECS, module_name
from harness.data.registry import DATASETS
from harness.measure import runners
from harness.results import trackers
from harness.training.recipes import RECIPES, SCRATCH_RULES

ROOT = Path(__file__).resolve().parents[1]


def _modules(package: object, shared: set[str]) -> set[str]:
    """The package's modules that are not shared helpers (an entry each)."""
    path = package.__path__
    return {m.name for m in pkgutil.iter_modules(path)} - shared


def test_every_protocol_row_has_its_module_and_every_module_a_row() -> None:
    assert _modules(protocols, {"frozen", "keys", "network", "recipe"}) == {module_name(p) for p in PROTOCOL_SPECS}
    for name, row in PROTOCOL_SPECS.items():
        module = protocols.protocol_module(name)
        assert callable(module.run) and callable(module.settings_of) and callable(module.grid)
        assert (row.warmup is None) == row.features  # a protocol trains a network, or reads features
        assert row.recipe is None or row.warmup is not None  # a classifier's recipe belongs to a protocol that trains
        assert row.recipe is None or row.recipe in RECIPES
    with pytest.raises(ValueError, match="unknown protocol 'lineer' \\(did you mean linear\\?\\); valid: scratch, finetune, linear, knn"):
        protocols.protocol_module("lineer")


def test_every_runtime_row_has_its_builder_and_every_builder_a_row() -> None:
    assert _modules(runners, set()) == {module_name(r) for r in RUNTIME_SPECS}
    for name in RUNTIME_SPECS:
        assert callable(runners.runtime_module(name).build)


def test_every_tracker_row_has_its_module_and_every_module_a_row() -> None:
    assert _modules(trackers, set()) == {module_name(t) for t in TRACKER_SPECS}
    for name in TRACKER_SPECS:
        module = trackers.tracker_module(name)  # importing it needs no tracker package: each imports its own inside
        assert callable(module.log) and callable(module.read)


def test_every_kind_row_has_its_module_fixture_and_benchmark() -> None:
    assert _modules(kinds, set()) == set(KINDS)
    for name in KINDS:
        module = kinds.kind_module(name)
        assert callable(module.cases) and callable(module.settings_of)
        assert (ROOT / "fixtures" / f"{name}.py").is_file() and (ROOT / "benchmarks" / f"test_{name}.py").is_file()
        assert f"{name}_case" in (ROOT / "benchmarks" / f"test_{name}.py").read_text()
    with pytest.raises(ValueError, match="unknown kind 'infer'"):
        kinds.kind_module("infer")


def test_every_dataset_row_names_a_loader_that_exists() -> None:
    for info in DATASETS.values():
        module, function = info.loader.split(":")
        assert callable(getattr(importlib.import_module(module), function)), info.name


def test_every_family_row_names_a_scratch_rule() -> None:
    assert {f.scratch for f in FAMILY_SPECS.values()} <= set(SCRATCH_RULES)
