"""A save the storage refuses lands in a fallback file; what a killed save left is recovered; a
destination that cannot take a run is refused before any case (harness.results.storage, .space,
``python -m harness storage``)."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import tempfile
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.results.space import CASE_BYTES, case_bytes, check_destination
from harness.results.storage import SaveFailed, StorageError, dumps, find_orphans, save_failure_lines, save_run

DATA = Path(__file__).parent / "data"
RUN = json.loads((DATA / "run_cpu_base.json").read_text())
KEY = str(RUN["machine_info"]["baseline_key"])


@pytest.fixture
def unsaved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "unsaved"
    monkeypatch.setenv("BACKBONE_BENCH_UNSAVED", str(folder))
    return folder


def _refusing_storage(tmp_path: Path) -> Path:
    """A storage below a plain file: every write into it fails with ENOTDIR, as a read-only mount fails with EROFS."""
    (tmp_path / "file").write_text("")
    return tmp_path / "file" / "baselines"


def test_a_refused_save_is_written_to_the_fallback_with_the_command_that_moves_it(tmp_path: Path, unsaved: Path,
                                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    storage = _refusing_storage(tmp_path)
    with pytest.raises(SaveFailed) as caught:
        save_run(storage, KEY, "main", RUN)
    exc = caught.value
    assert exc.fallback.parent == unsaved / KEY and exc.fallback.name.startswith("main-") and exc.fallback.suffix == ".json"
    assert exc.fallback.read_text() == dumps(RUN)
    assert exc.reason == "Not a directory (errno 20)"
    assert exc.command == shlex.join(["python", "-m", "harness", "storage", "adopt", str(exc.fallback), "--benchmark-storage", str(storage), "--name", "main"])
    assert save_failure_lines(exc) == [
        f"backbone-bench: could not save the run to {storage / KEY}: Not a directory (errno 20)",
        f"backbone-bench: the run was written to {exc.fallback}",
        f"backbone-bench: once the storage is fixed, move it into place with: {exc.command}",
    ]
    # The storage fixed, the printed command puts the run in place, byte for byte, under the next free number.
    (tmp_path / "file").unlink()
    save_run(storage, KEY, "older", RUN)
    argv = shlex.split(exc.command)[3:]
    assert main(argv) == 0
    assert capsys.readouterr().out == f"saved {exc.fallback} as {storage / KEY / '0002_main.json'}; {exc.fallback} can be deleted\n"
    assert (storage / KEY / "0002_main.json").read_text() == dumps(RUN)


def test_the_system_temp_folder_is_the_last_fallback_and_then_the_error_names_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _refusing_storage(tmp_path)
    monkeypatch.setenv("BACKBONE_BENCH_UNSAVED", str(tmp_path / "file" / "unsaved"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    with pytest.raises(SaveFailed) as caught:
        save_run(storage, KEY, "main", RUN)
    assert caught.value.fallback.parent == tmp_path / "tmp" / "backbone-bench-unsaved" / KEY
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "file" / "tmp"))
    with pytest.raises(StorageError, match=r"could not save the run to .*baselines/.* \(Not a directory \(errno 20\)\), nor to a fallback "
                                           r"\(.*\); set BACKBONE_BENCH_UNSAVED=DIR to a writable folder and re-run") as refused:
        save_run(storage, KEY, "main", RUN)
    assert not isinstance(refused.value, SaveFailed)


def test_adopt_refuses_a_file_that_is_no_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.json").write_text('{"benchmarks": ')
    assert main(["storage", "adopt", str(tmp_path / "x.json"), "--storage", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'x.json'}: corrupt JSON at line 1 column 16")
    assert not (tmp_path / "s").exists()


def _orphans(folder: Path) -> dict[str, Path]:
    """One temporary file of each kind a killed save leaves, as write_atomic names them."""
    folder.mkdir(parents=True)
    saved = save_run(folder.parent, folder.name, "kept", RUN)
    files = {"complete": folder / ".0002_killme.json.abc123.tmp", "incomplete": folder / ".0003_killme.json.def456.tmp",
             "duplicate": folder / ".0001_kept.json.ghi789.tmp", "foreign": folder / ".0004_other.json.jkl012.tmp",
             "empty": folder / ".0005_killme.json.mno345.tmp"}
    files["complete"].write_text(dumps(RUN))
    files["incomplete"].write_text(dumps(RUN)[:1000])
    os.link(saved, files["duplicate"])
    files["foreign"].write_text('{"a": 1}')
    files["empty"].write_text("")
    return files


def test_the_next_save_recovers_what_killed_saves_left(tmp_path: Path) -> None:
    folder = tmp_path / KEY
    files = _orphans(folder)
    before = (folder / "0001_kept.json").read_bytes()
    lines: list[str] = []
    path = save_run(tmp_path, KEY, "next", RUN, on_recover=lines.append)
    assert lines == [
        "removed .0001_kept.json.ghi789.tmp, a run a killed save left already saved under its number",
        "recovered .0002_killme.json.abc123.tmp, a complete run a killed save left, as 0002_killme.json",
        "removed .0003_killme.json.def456.tmp, a run a killed save left cut short",
        "left .0004_other.json.jkl012.tmp: it holds JSON but no run; move or delete it by hand",
        "removed .0005_killme.json.mno345.tmp, a run a killed save left cut short",
    ]
    assert path.name == "0003_next.json"
    assert sorted(p.name for p in folder.iterdir()) == [".0004_other.json.jkl012.tmp", "0001_kept.json", "0002_killme.json", "0003_next.json"]
    assert (folder / "0002_killme.json").read_text() == dumps(RUN)
    assert (folder / "0001_kept.json").read_bytes() == before
    assert not files["complete"].exists()


def test_a_temporary_file_still_being_written_is_left_alone(tmp_path: Path) -> None:
    folder = tmp_path / KEY
    folder.mkdir()
    busy = folder / ".0001_live.json.xyz.tmp"
    busy.write_text("{")
    fd = os.open(busy, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what write_atomic holds while it writes
    try:
        assert find_orphans(folder) == []
        save_run(tmp_path, KEY, "other", RUN)
        assert busy.exists()
    finally:
        os.close(fd)
    assert [o.state for o in find_orphans(folder)] == ["incomplete"]


def test_storage_check_lists_and_repair_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / KEY
    _orphans(folder)
    (folder / "0009_broken.json").write_text("")
    assert main(["storage", "check", "--storage", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{folder}/.0001_kept.json.ghi789.tmp: a killed save's temporary copy of a run already in place (--repair removes it)",
        f"{folder}/.0002_killme.json.abc123.tmp: a complete run a killed save left, never put in place (--repair saves it under the next free number)",
        f"{folder}/.0003_killme.json.def456.tmp: a run a killed save cut short (--repair removes it): Unterminated string starting at: line 32 column 25 (char 956)",
        f"{folder}/.0004_other.json.jkl012.tmp: a temporary file that holds JSON but no run; move or delete it by hand: "
        "not a pytest-benchmark run (no 'benchmarks' list); pass a file written by pytest --benchmark-json=FILE or --benchmark-save=NAME",
        f"{folder}/.0005_killme.json.mno345.tmp: a run a killed save cut short (--repair removes it): Expecting value: line 1 column 1 (char 0)",
        f"{folder}/0009_broken.json: the file is empty; the benchmark session that wrote it probably crashed, re-run it; not touched (nothing in the "
        "storage is overwritten or deleted): restore it from git, or move it out",
        f"storage {tmp_path}: 2 run(s), 6 problem(s); python -m harness storage check --repair --benchmark-storage {tmp_path} fixes the leftovers",
    ]
    (folder / "0009_broken.json").unlink()
    (folder / ".0004_other.json.jkl012.tmp").unlink()
    assert main(["storage", "check", "--repair", "--storage", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"{folder}: removed .0005_killme.json.mno345.tmp, a run a killed save left cut short",
        f"storage {tmp_path}: 2 run(s), 0 problem(s)",
    ]
    assert sorted(p.name for p in folder.iterdir()) == ["0001_kept.json", "0002_killme.json"]
    assert main(["storage", "check", "--storage", str(tmp_path)]) == 0


def test_storage_check_of_a_missing_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["storage", "check", "--storage", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: --benchmark-storage {tmp_path / 'nowhere'}: no such folder\n"


def test_a_destination_that_cannot_take_a_run_is_refused_with_the_fix(tmp_path: Path) -> None:
    storage = _refusing_storage(tmp_path)
    with pytest.raises(StorageError) as caught:
        check_destination(storage, "--benchmark-storage")
    assert str(caught.value) == (f"--benchmark-storage {storage}: cannot write there (Not a directory (errno 20)); "
                                 "pass a writable folder with space (--benchmark-storage DIR) or fix this one")
    with pytest.raises(StorageError, match=rf"^--benchmark-storage {tmp_path}: [\d.]+ [GT]iB free, a run of 1000000000 case\(s\) needs about "
                                           r"29.8 TiB \(32.0 KiB per case\); free some space or pass a writable folder with space"):
        check_destination(tmp_path, "--benchmark-storage", 10**9)
    check_destination(tmp_path / "new" / "folder", "--benchmark-storage", 100)  # created when saved: its parent is probed
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_a_cases_share_is_measured_on_the_stored_runs(tmp_path: Path) -> None:
    assert case_bytes(tmp_path) == CASE_BYTES
    path = save_run(tmp_path, KEY, "main", RUN)
    cases = len(RUN["benchmarks"]) + len(RUN.get("backbone_bench", {}).get("failed", []))
    assert case_bytes(tmp_path) == path.stat().st_size // cases


def test_a_machine_folder_taken_by_a_file_is_a_refused_save_not_a_search_for_numbers(tmp_path: Path, unsaved: Path) -> None:
    (tmp_path / KEY).write_text("")
    with pytest.raises(SaveFailed) as caught:
        save_run(tmp_path, KEY, "main", RUN)
    assert caught.value.reason == "Not a directory (errno 20)" and caught.value.fallback.read_text() == dumps(RUN)
