"""``python -m harness --help`` and its usage errors answer without importing torch (seconds under load)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.projects import ROOT

HEAVY = ("torch", "timm", "scipy", "pandas")
# Runs the CLI in-process and prints which heavy modules it imported, whatever it exits with.
PROBE = """
import sys
from harness.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("imported:", ",".join(m for m in {heavy!r} if m in sys.modules))
"""


def _imported(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], capture_output=True, text=True, env=env, check=False, timeout=120)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("args", [("--help",), ("compare", "--help"), ("report", "--help"), ("launch", "--help"), ("weights", "--help"),
                                  ("merge", "--help"), ("storage", "--help"), ("storage", "check", "--help"), ("data", "--help"),
                                  ("data", "to-wds", "--help"), ("site", "--help"), ("nonsense",)])
def test_help_imports_no_heavy_module(args: tuple[str, ...]) -> None:
    assert _imported(*args) == "imported:"


@pytest.mark.parametrize("args", [("compare",), ("compare", "--fail-on", "bogus", "a"), ("report", "x"), ("weights",), ("merge", "x"),
                                  ("storage", "adopt"), ("storage", "check", "--storage", "baselines"), ("data", "to-wds", "x"),
                                  ("data", "to-wds", "x", "y", "--shard-size", "0"), ("site",),
                                  ("site", "--out", "/nonexistent/site", "--storage", "/nonexistent/runs")])
def test_usage_errors_import_no_torch(args: tuple[str, ...]) -> None:
    # A gate option's default is parsed when its verb runs (results.tolerances for --fail-on: no scipy), never torch.
    assert "torch" not in _imported(*args).removeprefix("imported:").split(",")


def test_python_m_harness_help_imports_no_torch() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness", "--help"], capture_output=True, text=True, env=env, check=False, timeout=120)
    assert out.returncode == 0
    assert "compare" in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
