"""End to end with ``pytester``: a destination that cannot take the run is refused before any case;
a save refused after the cases leaves the run in a fallback file, named with the command that
moves it into place; the next save recovers what a killed save left."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from harness.cli.main import main
from tests.projects import CONFTEST

ROOT = Path(__file__).resolve().parents[1]
FAST = ("--bench-time", "0.02", "-p", "no:cacheprovider")
ONE_CASE = ("--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cpu", *FAST, "test_inference.py")
# Turns every folder named in BREAK_AFTER_CASES into a plain file once the cases ran, before the
# plugin saves: a storage that went away (read-only, unmounted) after the session checked it.
BREAK = """
import os, shutil, pytest
@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    for folder in filter(None, os.environ.get("BREAK_AFTER_CASES", "").split(os.pathsep)):
        shutil.rmtree(folder)
        open(folder, "w").close()
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.setenv("BACKBONE_BENCH_UNSAVED", str(tmp_path_factory.mktemp("unsaved")))
    pytester.makeconftest(CONFTEST + BREAK)
    pytester.makeini("[pytest]\naddopts = --strict-markers --benchmark-storage=file://baselines\n")
    pytester.makepyfile(test_inference=(ROOT / "benchmarks" / "test_inference.py").read_text())
    return pytester


def test_a_storage_that_cannot_be_written_is_refused_before_any_case(suite: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "file").write_text("")
    storage = outside / "file" / "baselines"  # every write below a plain file fails, as on a read-only mount
    result = suite.runpytest(*ONE_CASE, "--benchmark-save=x", f"--benchmark-storage={storage}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.errlines if line] == [f"ERROR: --benchmark-storage {storage}: cannot write there (Not a directory (errno 20)); "
                               "pass a writable folder with space (--benchmark-storage DIR) or fix this one"]
    assert "test_inference" not in result.stdout.str()


def test_a_storage_without_room_for_the_selection_is_refused_after_collection(suite: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.results.space as space

    storage = tmp_path_factory.mktemp("storage")
    monkeypatch.setattr(space, "CASE_BYTES", 2**60)  # no disk holds one case of this size: the refusal without filling a disk
    result = suite.runpytest(*ONE_CASE, "--benchmark-save=x", f"--benchmark-storage={storage}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    [line] = [line for line in result.errlines if line]
    assert line.startswith(f"ERROR: --benchmark-storage {storage}: ") and line.endswith(
        " free, a run of 1 case(s) needs about 1048576.0 TiB (1048576.0 TiB per case); free some space or pass a writable folder "
        "with space (--benchmark-storage DIR) or fix this one")
    assert "passed" not in result.stdout.str()


def test_a_save_refused_after_the_cases_is_kept_and_moved_into_place_by_the_printed_command(
        suite: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    outside = tmp_path_factory.mktemp("outside")
    storage, out = outside / "baselines", outside / "json"
    storage.mkdir()
    out.mkdir()
    monkeypatch.setenv("BREAK_AFTER_CASES", f"{storage}:{out}")
    result = suite.runpytest(*ONE_CASE, "--benchmark-save=x", f"--benchmark-storage={storage}", f"--benchmark-json={out / 'run.json'}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert result.parseoutcomes()["passed"] == 1
    lines = [line for line in result.outlines if line.startswith("backbone-bench:")]
    unsaved = Path(lines[1].removeprefix("backbone-bench: the run was written to "))
    moved = Path(lines[4].removeprefix("backbone-bench: the run was written to "))
    key = unsaved.parent.name
    assert lines == [
        f"backbone-bench: could not save the run to {storage / key}: Not a directory (errno 20)",
        f"backbone-bench: the run was written to {unsaved}",
        "backbone-bench: once the storage is fixed, move it into place with: "
        + shlex.join(["python", "-m", "harness", "storage", "adopt", str(unsaved), "--benchmark-storage", str(storage), "--name", "x"]),
        f"backbone-bench: could not save the run to {out / 'run.json'}: File exists (errno 17)",  # mkdir of its folder, now a file
        f"backbone-bench: the run was written to {moved}",
        f"backbone-bench: once the storage is fixed, move it into place with: mv {moved} {out / 'run.json'}",
    ]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    run = json.loads(unsaved.read_text())
    assert [b["extra_info"]["backbone"] for b in run["benchmarks"]] == ["resnet18"] and moved.read_text() == unsaved.read_text()
    storage.unlink()  # the storage fixed: the printed command saves the run there
    capsys.readouterr()
    assert main(shlex.split(lines[2].split(": ", 2)[2])[3:]) == 0
    assert capsys.readouterr().out == f"saved {unsaved} as {storage / key / '0001_x.json'}; {unsaved} can be deleted\n"
    assert (storage / key / "0001_x.json").read_bytes() == unsaved.read_bytes()


def test_the_next_save_recovers_a_killed_saves_run_and_says_so(suite: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    storage = tmp_path_factory.mktemp("storage")
    assert suite.runpytest(*ONE_CASE, "--benchmark-save=first", f"--benchmark-storage={storage}").ret == 0
    [first] = storage.glob("*/0001_first.json")
    folder = first.parent
    (folder / ".0002_killed.json.abcd1234.tmp").write_bytes(first.read_bytes())  # a save killed before its link
    (folder / ".0002_cut.json.efgh5678.tmp").write_bytes(first.read_bytes()[:500])  # one killed while writing
    result = suite.runpytest(*ONE_CASE, "--benchmark-save=second", f"--benchmark-storage={storage}")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "backbone-bench: removed .0002_cut.json.efgh5678.tmp, a run a killed save left cut short",
        "backbone-bench: recovered .0002_killed.json.abcd1234.tmp, a complete run a killed save left, as 0002_killed.json",
        f"backbone-bench: saved 1 case(s) to {folder / '0003_second.json'}",
    ])
    assert sorted(p.name for p in folder.iterdir()) == ["0001_first.json", "0002_killed.json", "0003_second.json"]
    assert (folder / "0002_killed.json").read_bytes() == first.read_bytes()
