"""The machine the proof runs on, read without importing torch: Python, the suite's dependencies
(``pyproject.toml``) as installed against their ranges and the lock, the GPU as ``nvidia-smi`` sees it.

A dependency that is missing or outside its range is named in ``missing``: on an air-gapped
machine that is the list of wheels to carry (README: "Proving the CUDA paths").
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def environment(root: Path) -> dict[str, Any]:
    """Python, dependencies, GPU and commit, as one JSON-ready dict."""
    deps = dependencies(root)
    return {
        "python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
        "dependencies": deps, "missing": [d["name"] for d in deps if not d["ok"]],
        "gpu": _nvidia_smi(), "commit": _commit(root),
    }


def dependencies(root: Path) -> list[dict[str, Any]]:
    """Each ``[project] dependencies`` entry: its range, the installed and the locked version, and
    whether the installed one satisfies the range."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return []
    specs = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    locked = _lock(root / "requirements" / "constraints.txt")
    out = []
    for spec in specs:
        name = re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0]
        try:
            installed: str | None = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        out.append({"name": name, "required": spec, "installed": installed, "locked": locked.get(_key(name)), "ok": _satisfies(spec, installed)})
    return out


def _satisfies(spec: str, installed: str | None) -> bool:
    if installed is None:
        return False
    try:
        from packaging.requirements import Requirement
    except ModuleNotFoundError:
        return True  # no way to judge the range here; at least it is installed
    return Requirement(spec).specifier.contains(installed, prereleases=True)


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pins = (line.split("==", 1) for line in path.read_text(encoding="utf-8").splitlines() if "==" in line and not line.startswith("#"))
    return {_key(name.strip()): version.split()[0] for name, version in pins}


def _nvidia_smi() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _commit(root: Path) -> str | None:
    if shutil.which("git") is None or not (root / ".git").exists():
        return None
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None
