"""A pytest project made of the real benchmark files and the plugin, for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A project's conftest: the checkout's conftest.py runs first, loading its fixtures/ folder as
# backbone_bench_fixtures (installed or not), then the plugins are named (one per kind).
CONFTEST = (f"import runpy, sys\nrunpy.run_path({str(ROOT / 'conftest.py')!r})\n"
            "pytest_plugins = ['harness.plugin', *sys.modules['backbone_bench_fixtures'].PLUGINS]\n")


def write_project(path: Path) -> Path:
    """``path`` with the suite's conftest, a pytest.ini saving into ``baselines/`` and every
    ``benchmarks/test_*.py``: what a team's checkout of backbone-bench holds."""
    (path / "conftest.py").write_text(CONFTEST)
    (path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers --benchmark-storage=file://baselines\n")
    for source in (ROOT / "benchmarks").glob("test_*.py"):
        (path / source.name).write_text(source.read_text())
    return path
