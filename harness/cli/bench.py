"""``python -m harness bench -- PYTEST_ARGS``: the suite's installed benchmark cases, run from any directory.

A team's repository holds no copy of the suite: ``pip install backbone-bench`` installs the cases
(``benchmarks/`` as the package ``backbone_bench_cases``) beside the plugin and its fixtures, and this
verb runs them with pytest in a child process, rooted at the working directory: its ``pytest.ini`` (or
``pyproject.toml``'s ``[tool.pytest.ini_options]``) pins the matrix, ``--benchmark-storage`` keeps the
baselines in that repository, and its modules (``pkg.module:factory``) import from there.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

CASES = "backbone_bench_cases"
FIXTURES = "backbone_bench_fixtures"
# The configuration files pytest reads, in its own order of precedence (pytest.ini first).
_INI_FILES = (("pytest.ini", ""), ("pyproject.toml", "[tool.pytest.ini_options]"), ("tox.ini", "[pytest]"), ("setup.cfg", "[tool:pytest]"))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` verb to ``python -m harness``'s subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "bench", help="run the installed benchmark cases with pytest from this directory (a team's own repository)",
        description="Runs pytest on the installed cases with the plugin loaded, rooted here; everything after -- goes to pytest.")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, metavar="-- PYTEST_ARGS", help="pytest's arguments (options of the suite included)")
    return parser


def command(pytest_args: list[str], cwd: Path) -> list[str]:
    """The pytest command line :func:`run` starts: the cases' folder, the plugins, ``cwd`` as the root and its ini file."""
    from harness.contract import KIND_NAMES

    spec = importlib.util.find_spec(CASES)
    if spec is None or not spec.submodule_search_locations:
        raise OSError(f"the benchmark cases ({CASES}) are not installed: pip install backbone-bench (from its checkout: pip install .)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    plugins = ["harness.plugin", f"{FIXTURES}.recording", *(f"{FIXTURES}.{kind}" for kind in KIND_NAMES)]
    ini = [] if {"-c", "--config-file"} & set(pytest_args) else _ini(cwd)
    args = pytest_args[1:] if pytest_args[:1] == ["--"] else pytest_args
    return [sys.executable, "-m", "pytest", *(f"-p{p}" for p in plugins), f"--rootdir={cwd}", *ini, str(folder), *args]


def _ini(cwd: Path) -> list[str]:
    for name, section in _INI_FILES:
        path = cwd / name
        if path.is_file() and section in path.read_text():
            return ["-c", str(path)]
    return []


def run(args: argparse.Namespace) -> int:
    """pytest's exit code (0 passed, 1 failed, 4 a usage error such as a bad option, 5 nothing selected)."""
    cmd = command(list(args.pytest_args), Path.cwd())
    return subprocess.run(cmd, check=False).returncode
