"""Loads the backbone-bench plugin and its fixtures for every test under this directory.

The folder ``fixtures/`` is the package ``backbone_bench_fixtures`` (pyproject.toml maps it, so
that PyPI's unrelated ``fixtures`` package installs beside it). The checkout's folder is loaded
under that name here, installed or not, so the tests exercise this checkout as they do ``harness``
(from the root directory): :func:`load_fixtures`. A pytest project outside the checkout runs
this file first to do the same (``tests/projects.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

FIXTURES = "backbone_bench_fixtures"


def load_fixtures(folder: Path) -> None:
    """Import ``folder`` (the checkout's ``fixtures/``) as :data:`FIXTURES`, unless already imported."""
    if FIXTURES in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(FIXTURES, folder / "__init__.py", submodule_search_locations=[str(folder)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[FIXTURES] = module
    spec.loader.exec_module(module)


load_fixtures(Path(__file__).resolve().parent / "fixtures")

pytest_plugins = ["pytester", "harness.plugin", *sys.modules[FIXTURES].PLUGINS]
