"""The manual stays true to the code: its generated tables equal what the code prints, it builds with
``mkdocs build --strict`` (a broken link, anchor or API reference fails), and the README's links land.

The example outputs of README.md and docs/ are run by tests/test_doc_outputs.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.projects import ROOT

DOCS = ROOT / "docs"


def _block(page: Path, name: str) -> str:
    text = page.read_text(encoding="utf-8")
    assert f"<!-- {name}:begin -->\n" in text and f"<!-- {name}:end -->" in text, f"{page} lost its {name} markers"
    return text.split(f"<!-- {name}:begin -->\n", 1)[1].split(f"<!-- {name}:end -->", 1)[0]


def test_the_contract_page_is_generated_from_the_contract() -> None:
    from harness.cli.contract import contract_tables

    assert _block(DOCS / "reference" / "contract.md", "contract") == contract_tables(), (
        "docs/reference/contract.md is stale: paste `python -m harness contract`'s tables (up to the option table) between its markers")


def test_the_option_page_is_generated_from_the_option_table() -> None:
    from harness.config.options import markdown_table

    assert _block(DOCS / "reference" / "options.md", "options") == markdown_table(), (
        "docs/reference/options.md is stale: paste the option table that `python -m harness contract` prints last between its markers")


def test_the_manual_builds_strict(tmp_path: Path) -> None:
    """mkdocs (the dev extra) builds every page; a broken link or anchor, a nav entry without its page
    or an API entry that no longer resolves is a warning, and --strict fails on it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "site" / "reference" / "api" / "contract" / "index.html").is_file()


def _links(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # links inside code blocks are no links
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_the_readme_links_land_on_files_of_the_checkout() -> None:
    """README.md is not part of the mkdocs build (it is GitHub's door): its relative links are checked here."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    links = [link for link in _links(readme) if not link.startswith(("http://", "https://", "#"))]
    assert links, "the README links into the manual"
    missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


@pytest.mark.parametrize("text,links", [("see [a](docs/a.md) and [b](docs/b.md#x)", ["docs/a.md", "docs/b.md#x"]),
                                        ("```\n[not](a link)\n```\n[yes](c.md)", ["c.md"])])
def test_links_are_read_outside_code_blocks(text: str, links: list[str]) -> None:
    assert _links(text) == links
