"""The documentation's example outputs are what the commands print: in README.md and every page under
docs/, every fenced block without a language that starts with ``$ COMMAND`` is run, and each line it
shows must be a line of the real output. A block that shows an ``ERROR:`` line is a refusal before any
case runs (exit 4); any other exits 0. Output shown in a block with a language (```text) is not run:
keep those few, and say where they were printed.

In a shown line ``(...)`` and ``…`` stand for any text, and ``~`` for the home folder; the
commands run with an empty home folder and no cache variables, so what they report missing is
missing on every machine.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.projects import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# The `pytest` command of this interpreter, named as the console script names itself in usage lines.
PYTEST = "import sys, pytest; sys.argv[0] = 'pytest'; sys.exit(pytest.console_main())"


def examples() -> list[tuple[str, list[str]]]:
    """(command, the lines shown under it) of every output block that starts with ``$ ``, page by page."""
    found: list[tuple[str, list[str]]] = []
    for page in PAGES:
        for lines in _blocks(page.read_text(encoding="utf-8")):
            if not lines or not lines[0].startswith("$ "):
                continue
            for line in lines:
                if line.startswith("$ "):
                    found.append((line[2:], []))
                else:
                    found[-1][1].append(line)
    return found


def test_the_docs_show_these_example_outputs() -> None:
    # Each one runs in CI: keep them few and fast (a refusal takes seconds, the one run ~20 s).
    assert [command for command, _ in examples()] == [
        "pytest benchmarks -m inference --backbones resnet18 --batch-sizes 1 --bench-time 0.05",
        "pytest benchmarks --backbones resnet50.a1_in1k",
        "pytest benchmarks --backbones resnet19", "pytest benchmarks --subsets 2k", "pytest benchmarks --devices cuda",
        "pytest benchmarks -m train --dataset cifar10",
        "pytest benchmarks -m train --robustness fgo", "pytest benchmarks -m train --robust-severities 1,6"]


def _blocks(text: str) -> list[list[str]]:
    """The lines of every fenced block without a language (``` ... ```)."""
    blocks: list[list[str]] = []
    current: list[str] | None = None
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            if fenced and current is not None:
                blocks.append(current)
            current = [] if not fenced and line == "```" else None
            fenced = not fenced
        elif current is not None:
            current.append(line)
    return blocks


def _pattern(shown: str, home: Path) -> re.Pattern[str]:
    text = re.escape(shown).replace(re.escape("(...)"), r"\(.*\)").replace(re.escape("…"), ".*").replace(re.escape("~/"), re.escape(f"{home}/"))
    return re.compile(text)


@pytest.mark.parametrize(("command", "shown"), examples(), ids=[command for command, _ in examples()])
def test_an_example_output_is_what_the_command_prints(command: str, shown: list[str], tmp_path: Path) -> None:
    if "--devices cuda" in command:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA: the example shows a machine without it")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BACKBONE_BENCH_", "HF_", "TORCH_HOME", "XDG_CACHE"))}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    words = shlex.split(command)
    assert words[0] == "pytest"
    out = subprocess.run([sys.executable, "-c", PYTEST, *words[1:], "-p", "no:cacheprovider"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    printed = (out.stdout + out.stderr).splitlines()
    for line in shown:
        pattern = _pattern(line, tmp_path)
        assert any(pattern.fullmatch(real) for real in printed), f"the docs show {line!r}; {command} printed:\n" + "\n".join(printed)
    refusal = any(line.startswith("ERROR: ") for line in shown)
    assert out.returncode == (4 if refusal else 0), "\n".join(printed)  # a refusal comes before any case runs
