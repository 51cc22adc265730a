"""The HTML every page of the site shares: the frame, tables, links, and plotly figures as data.

A figure is a plain ``{"data": [...], "layout": {...}}`` dict that plotly.js draws in the browser
(``Plotly.newPlot``); the Python side never builds ``plotly.graph_objects``, whose validation
costs more than the rest of a page. Every page loads the one shared ``plotly.min.js`` by a
relative path (see :mod:`harness.results.site`), so the folder works from ``file://`` and on
GitHub Pages alike and never reaches the network.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

PLOTLY_JS = "plotly.min.js"
STYLE_CSS = "style.css"
# Plotly's own buttons, less its logo and the image upload to its cloud (this site is offline).
_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]}
# Verdicts and how each is coloured: the worst two red, not comparable amber, better green.
VERDICT_CLASS = {"failed": "bad", "regression": "bad", "not comparable": "warn", "missing": "warn",
                 "new": "", "improvement": "good", "within noise": ""}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1320px; padding: 0 20px 40px; color: #1f2328; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 18px; margin: 28px 0 6px; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 15px; margin: 18px 0 6px; }
nav { font-size: 13px; margin: 12px 0; color: #59636e; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.bad { background: #ffebe9; color: #a40e26; } .warn { background: #fff8c5; color: #7d4e00; } .good { background: #dafbe1; color: #116329; }
.note { color: #59636e; font-size: 13px; } pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
.plot { width: 100%; height: 330px; }
"""


def esc(text: object) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)


def slug(text: str) -> str:
    """``text`` as a file name part: runs of characters other than ``A-Za-z0-9._-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "page"


def link(href: str, text: object) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def table(head: Sequence[str], rows: Iterable[Sequence[str]], *, numeric: Iterable[int] = (), classes: Mapping[int, str] | None = None) -> str:
    """An HTML table of cells that are already HTML; columns in ``numeric`` align right.

    ``classes`` maps a row index to a CSS class for that row (a verdict's colour).
    """
    right = set(numeric)
    lines = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for i, row in enumerate(rows):
        cls = (classes or {}).get(i, "")
        cells = "".join(f'<td class="num">{c}</td>' if j in right else f"<td>{c}</td>" for j, c in enumerate(row))
        lines.append(f'<tr class="{cls}">{cells}</tr>' if cls else f"<tr>{cells}</tr>")
    return "\n".join([*lines, "</table>"])


def figure_div(fig_id: str, height: int = 330) -> str:
    """The element a figure of :func:`page` ``figures`` is drawn into."""
    return f'<div class="plot" id="{esc(fig_id)}" style="height:{height}px"></div>'


def _script_json(value: Any) -> str:
    # "</" would end the <script> element early; "<\/" is the same string to JavaScript.
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


def page(title: str, body: str, *, depth: int, figures: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """A whole HTML document ``depth`` folders below the site root; ``figures`` maps each
    :func:`figure_div` id to its figure, drawn once the page has loaded."""
    up = "../" * depth
    head = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>", f'<link rel="stylesheet" href="{up}{STYLE_CSS}">',
    ]
    if figures:
        head.append(f'<script src="{up}{PLOTLY_JS}"></script>')
    tail = []
    if figures:
        tail = ["<script>", f"const FIGURES = {_script_json(figures)};", f"const CONFIG = {_script_json(_CONFIG)};",
                "for (const [id, fig] of Object.entries(FIGURES)) { Plotly.newPlot(id, fig.data, fig.layout, CONFIG); }", "</script>"]
    nav = f'<nav>{link(up + "index.html", "backbone-bench runs")}</nav>' if depth else ""
    return "\n".join([*head, "</head>", "<body>", nav, f"<h1>{esc(title)}</h1>", body, *tail, "</body>", "</html>"]) + "\n"
