"""pytest-benchmark's options, read here and honoured by the plugin: its saving options taken over
(this suite's writer saves serially and under xdist alike, atomically), its timing options refused
with the option that replaces them."""

from __future__ import annotations

import datetime as dt
import os
import shlex
from pathlib import Path

import pytest

from harness.config.parsers import run_name
from harness.errors import SettingError
from harness.runtime.distributed import current_world

# pytest-benchmark's timing options: the cases time with their own protocol (warm-up of 3 calls
# and 0.1 s, then at least 20 rounds filling --bench-time), so these would be silently ignored.
REPLACED_OPTIONS = {
    "--benchmark-max-time": "--bench-time SECONDS (ini key bench_time)",
    "--benchmark-min-rounds": "--bench-time SECONDS: a latency case times at least 20 rounds and fills that time",
    "--benchmark-min-time": "--bench-time SECONDS",
    "--benchmark-calibration-precision": "nothing: a round is one call, no calibration is needed",
    "--benchmark-warmup": "nothing: every case warms up until 3 calls and 0.1 s have passed",
    "--benchmark-warmup-iterations": "nothing: every case warms up until 3 calls and 0.1 s have passed",
}


def _given_options(config: pytest.Config) -> list[str]:
    """Every option token the user gave: command line, PYTEST_ADDOPTS and the ini's addopts.

    pytest parses long options without abbreviations, so an option appears spelled in full.
    """
    tokens = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", ""))]
    tokens += [str(t) for t in config.getini("addopts")]
    return [str(t).split("=", 1)[0] for t in tokens if str(t).startswith("--")]


def refuse_replaced_options(config: pytest.Config) -> None:
    for option in _given_options(config):
        if option in REPLACED_OPTIONS:
            raise SettingError(f"{option} is pytest-benchmark's timing control, which backbone-bench's cases replace; use {REPLACED_OPTIONS[option]}")


def take_over_saving(config: pytest.Config) -> tuple[str | None, Path | None]:
    """Read ``--benchmark-save/-autosave/-json`` and switch pytest-benchmark's own saving off.

    pytest-benchmark saves nothing under xdist and writes non-atomically; this plugin's writer
    saves the same contract serially and in parallel. ``--benchmark-json`` is an open file before
    pytest-benchmark 5.3 and a path from 5.3 on: either way it names the file to write.
    """
    option = config.option
    save = getattr(option, "benchmark_save", None)
    if not save and getattr(option, "benchmark_autosave", False):
        save = _autosave_name(config)
    if save:
        save = run_name(save)
    raw_json = getattr(option, "benchmark_json", None)
    json_path: Path | None = None
    name = raw_json if isinstance(raw_json, (str, os.PathLike)) else getattr(raw_json, "name", None)
    # argparse's FileType gives stdout's buffer for "-" (named <stdout>, or unnamed while pytest captures it).
    if raw_json is not None and (not isinstance(name, (str, os.PathLike)) or str(name) in ("-", "<stdout>")):
        raise SettingError("--benchmark-json=-: writing the run to stdout is not supported (pytest's report shares it); "
                           "pass a file path, e.g. --benchmark-json=run.json, and cat it")
    if isinstance(raw_json, (str, os.PathLike)):  # pytest-benchmark >= 5.3: the path itself
        json_path = Path(raw_json)
    elif raw_json is not None:  # before 5.3: a file opened for writing; its .name is the path as given
        json_path = Path(raw_json.name)
        raw_json.close()
    for name, off in (("benchmark_save", None), ("benchmark_autosave", False), ("benchmark_json", None)):
        if hasattr(option, name):
            setattr(option, name, off)
    if hasattr(config, "workerinput") or not current_world().is_main:
        return None, None  # the xdist controller, or torchrun's rank 0, saves
    return save, json_path


def _autosave_name(config: pytest.Config) -> str:
    """``<commit>_<UTC time>[_uncommitted-changes]``, like pytest-benchmark's autosave, from its public hook."""
    info = config.hook.pytest_benchmark_generate_commit_info(config=config) or {}
    parts = [str(info.get("id") or "unversioned")[:12], dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d_%H%M%S")]
    if info.get("dirty"):
        parts.append("uncommitted-changes")
    return "_".join(parts)
