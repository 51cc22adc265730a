"""The static site of stored runs: ``build_site(storage, out)`` writes one folder a browser opens
from disk (``file://``) or GitHub Pages serves, with no network needed to view it.

Layout of ``out``::

    index.html                       machines, kinds, cases: latest gated values, last gate, steps
    plotly.min.js, style.css         shared by every page
    <machine>/compare.html           the last gate's compare table (newest run vs previous comparable)
    <machine>/cases/<case>.html      one trend page per case (:mod:`.trend`)
    <machine>/train/<run>.html       one page per run with training (:mod:`.training`)

plotly.js is written once, as ``plotly.min.js`` beside ``index.html``, and each page loads it by
a relative path, rather than inlined into every page: inlined, each of a few hundred trend pages
would carry the same 4.8 MB, and a site of 50 cases on one machine would weigh a quarter of a
gigabyte. A relative ``<script src>`` works from ``file://`` and from a Pages sub-path alike.

The site is built in a temporary folder beside ``out`` and renamed into place, so a crash leaves
the previous site (or none), never half of one; an ``out`` that exists and is not such a site is
refused rather than replaced. The temporary folder's name holds the building process's id: the next
build removes those of killed builds (:func:`clear_stale`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.results.site.data import Storage, gather
from harness.results.site.markup import CSS, PLOTLY_JS, STYLE_CSS, slug
from harness.results.site.pages import compare_page, index_page, last_gate, machine_section
from harness.results.site.training import has_training, training_page
from harness.results.site.trend import Trend, trend_page

__all__ = ["SiteResult", "build_site"]


@dataclass
class SiteResult:
    """What :func:`build_site` wrote: the folder, its pages, each machine's last gate in one line,
    and the run files it skipped with the reason."""

    out: Path
    pages: list[str] = field(default_factory=list)
    gates: dict[str, str] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    cleaned: list[str] = field(default_factory=list)  # temporary folders of killed builds, removed


def build_site(storage: Path, out: Path) -> SiteResult:
    """Read every run under ``storage`` and write the site into ``out`` (replacing a previous site).

    :class:`~harness.results.runs.RunError` when the storage holds no readable run;
    ``FileExistsError`` when ``out`` is a folder with other content than a site.
    """
    data = gather(storage)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "index.html").is_file())):
        raise FileExistsError(f"--out {out} exists and is not a site this command built (no index.html): pass a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    cleaned = clear_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    try:
        result = _write(data, tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; a web server must read the site
        _swap(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.out, result.cleaned = out, cleaned
    return result


# A build's temporary folders beside ``out``: ``.<out>.<pid>.<random>.tmp`` (the site being written) and
# ``.<out>.<pid>.<random>.old`` (the previous site, while it is swapped out); before pids were in the
# name, ``.<out>.<random>.tmp``/``.old``.
_TEMP_DIR = r"^\.{out}\.(?:(?P<pid>\d+)\.)?[a-z0-9_]{{8}}\.(?:tmp|old)$"
# A folder of the old, pid-less naming is another build's only while that build runs: no site build takes an hour.
_LEGACY_STALE_S = 3600.0


def clear_stale(out: Path) -> list[str]:
    """Remove the temporary folders that killed builds of ``out`` left beside it (their process is gone),
    never those of a build still running; the names removed. A build killed between the two renames
    of its swap left no ``out`` and the previous site in its ``.old`` folder: that site is put back."""
    removed = []
    ours = re.compile(_TEMP_DIR.format(out=re.escape(out.name)))
    for path in sorted(out.parent.iterdir()) if out.parent.is_dir() else []:
        m = ours.match(path.name)
        if m is None or not path.is_dir() or path.is_symlink():
            continue
        if m["pid"] is not None:
            if _alive(int(m["pid"])):
                continue
        elif time.time() - path.stat().st_mtime < _LEGACY_STALE_S:
            continue
        if path.name.endswith(".old") and not out.exists() and (path / "site" / "index.html").is_file():
            os.rename(path / "site", out)  # killed mid-swap, between its two renames: the previous site goes back
            removed.append(f"{path.name} (its site put back at {out})")
        else:
            removed.append(path.name)
        shutil.rmtree(path, ignore_errors=True)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (ours counts: never remove a folder this build made)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _write(data: Storage, root: Path) -> SiteResult:
    from plotly.offline import get_plotlyjs  # the optional extra: the verb checks it is installed

    result = SiteResult(root, skipped=data.skipped)
    files: dict[str, str] = {STYLE_CSS: CSS}
    sections = []
    folders: dict[str, str] = {}
    for key, machine in data.machines.items():
        folder = _unique(slug(key), set(folders.values()))
        folders[key] = folder
        trends: dict[str, tuple[str, Trend]] = {}
        names: set[str] = set()
        for case_id, kind in machine.cases().items():
            name = _unique(slug(case_id), names)
            names.add(name)
            html, trend = trend_page(machine, case_id, kind)
            files[f"{folder}/cases/{name}.html"] = html
            trends[case_id] = (f"{folder}/cases/{name}.html", trend)
        gate = last_gate(machine)
        if gate.comparison is not None:
            files[f"{folder}/compare.html"] = compare_page(gate)
        result.gates[key] = gate.comparison.summary() if gate.comparison is not None else gate.reason
        training = []
        runs: set[str] = set()
        for stored in machine.runs:
            if has_training(stored):
                name = _unique(slug(stored.name), runs)
                runs.add(name)
                files[f"{folder}/train/{name}.html"] = training_page(stored)
                training.append((f"{folder}/train/{name}.html", stored))
        sections.append(machine_section(machine, folder, gate, trends, training))
    files["index.html"] = index_page(data, sections)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / PLOTLY_JS).write_text(get_plotlyjs(), encoding="utf-8")
    result.pages = sorted(rel for rel in files if rel.endswith(".html"))
    return result


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``… when two cases or machines slug alike."""
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _swap(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` at ``out``: the old site is renamed aside first and removed after."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".old", dir=out.parent))
    os.rename(out, old / "site")
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
