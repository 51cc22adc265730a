"""pyproject.toml installs every package of harness/ and the fixtures under their own name."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_harness_package_is_installed_and_fixtures_is_not_top_level() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "harness").rglob("__init__.py")}
    listed = set(setuptools["packages"])
    assert listed - {"backbone_bench_fixtures", "backbone_bench_cases"} == on_disk
    assert "fixtures" not in listed
    assert setuptools["package-dir"] == {"backbone_bench_fixtures": "fixtures", "backbone_bench_cases": "benchmarks"}
