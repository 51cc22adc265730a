"""The one JSON writer: atomic, numbered like pytest-benchmark, never overwriting."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from harness.results.storage import StorageError, check_run_name, next_number, save_run, write_new


def test_runs_are_numbered_per_machine_folder(tmp_path: Path) -> None:
    first = save_run(tmp_path, "Linux-CPython-3.11-64bit-cpu-x", "main", {"benchmarks": []})
    second = save_run(tmp_path, "Linux-CPython-3.11-64bit-cpu-x", "pr", {"benchmarks": [1]})
    other = save_run(tmp_path, "Linux-CPython-3.11-64bit-cuda-y", "main", {"benchmarks": []})
    assert [first.name, second.name, other.name] == ["0001_main.json", "0002_pr.json", "0001_main.json"]
    assert json.loads(second.read_text()) == {"benchmarks": [1]}
    assert next_number(tmp_path / "nowhere") == 1


def test_an_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    target = tmp_path / "k" / "0001_main.json"
    write_new(target, "old")
    with pytest.raises(FileExistsError):
        write_new(target, "new")
    assert target.read_text() == "old"
    # save_run skips to the next free number instead.
    assert save_run(tmp_path, "k", "main", {}).name == "0002_main.json"
    assert target.read_text() == "old"


def test_no_temporary_file_is_left_behind(tmp_path: Path) -> None:
    save_run(tmp_path, "k", "main", {"a": 1})
    assert sorted(os.listdir(tmp_path / "k")) == ["0001_main.json"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        save_run(tmp_path, "k", "main", {"latency": float("nan")})
    assert not (tmp_path / "k").exists() or os.listdir(tmp_path / "k") == []


GOOD_NAMES = ["main", "pr-42", "v1.2_rc", "0", "A.b-c_d", "20261120_101500_uncommitted-changes"]
BAD_NAMES = ["", "../escape", "a b", "my run", "/abs", "a/b", ".hidden", "-flag", "_x", "main\n", "naïve", "x:y", "*"]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_run_names_pass(name: str) -> None:
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_names_are_refused_with_the_fix(tmp_path: Path, name: str) -> None:
    with pytest.raises(StorageError, match=f"invalid run name {re.escape(repr(name))}: .* letters, digits, '.', '_' and '-' \\(e.g. --benchmark-save=main\\)"):
        check_run_name(name)
    with pytest.raises(StorageError, match="invalid run name"):
        save_run(tmp_path, "k", name, {})
    assert not (tmp_path / "k").exists()
