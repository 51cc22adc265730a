"""``python -m harness launch``: refusals, the shard command, progress, the SLURM submission
submitit writes (against a fake ``sbatch``), and one end-to-end launch on this machine.

The end-to-end test runs the real benchmark file in a temporary project: a serial run saved as
the baseline, then ``launch --executor local --shards 3`` whose shard 2 crashes (a conftest
raises when a marker file exists), then ``--rerun 2`` that completes, merges, saves and gates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import harness.scale.launch as launch
from harness.__main__ import main
from harness.cli import launch as launch_cli
from harness.scale.launch import LaunchError, LaunchPlan, ShardOutcome, ShardTask, check_pytest_args, run_shards, shard_command
from tests.projects import CONFTEST as PROJECT_CONFTEST

# One worker runs the whole module: its end-to-end project is built once.
pytestmark = pytest.mark.xdist_group("launch")
ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def _launch(*args: str) -> int:
    return main(["launch", *args])


# --- refusals ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("pytest_args", "nproc", "message"), [
    (["--shard", "1/2"], None, "--shard after --: launch gives each shard its own --shard K/N; choose the count with launch --shards N"),
    (["--shard=1/2"], None, "--shard after --"),
    (["--benchmark-save=main"], None, "--benchmark-save after --: shards write into the job folder and launch saves the merged run: use launch --save NAME"),
    (["--benchmark-autosave"], None, "use launch --save NAME"),
    (["--benchmark-json", "run.json"], None, "--benchmark-json after --: each shard writes its run into the job folder: use launch --json FILE for the merged run"),
    (["--gate", "main"], None, "gate the merged run with launch --gate BASELINE"),
    (["-n", "2"], 2, "-n after --: pytest-xdist workers cannot run under --nproc-per-node 2 (torchrun starts the processes); drop -n/--numprocesses or --nproc-per-node"),
    (["-n2"], 2, "-n2 after --"),
    (["--numprocesses=auto"], 2, "--numprocesses=auto after --"),
])
def test_options_launch_owns_are_refused(pytest_args: list[str], nproc: int | None, message: str) -> None:
    with pytest.raises(LaunchError) as info:
        check_pytest_args(["-m", "inference", *pytest_args], nproc)
    assert message in str(info.value)


@pytest.mark.parametrize("pytest_args", [["-n", "2", "-m", "train"], ["-m", "not slow", "-k", "resnet"], []])
def test_other_pytest_args_pass(pytest_args: list[str]) -> None:
    check_pytest_args(pytest_args, None)


def test_a_refused_argument_is_one_line_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "job"
    assert _launch("--executor", "local", "--shards", "2", "--folder", str(folder), "--", "-m", "smoke", "--benchmark-save=x") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --benchmark-save after --")
    assert not folder.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "local"], "--shards N is required"),
    (["--executor", "local", "--shards", "0"], "--shards must be a positive integer"),
    (["--executor", "local", "--shards", "2", "--save", "my run"], "invalid run name 'my run'"),
    (["--executor", "local", "--shards", "2", "--partition", "gpu", "--qos", "high"], "--partition, --qos: SLURM option(s), which --executor local would ignore"),
    (["--executor", "local", "--rerun", "2"], "--rerun needs --folder DIR"),
    (["--executor", "local", "--rerun", "x"], "--rerun must be a positive integer"),
    (["--executor", "local", "--shards", "2", "--gate", "nosuchrun"], "--gate: storage directory"),
    (["--executor", "local", "--shards", "2", "--fail-on", "bogus:1%"], "argument --fail-on"),
    (["--executor", "mpi", "--shards", "2"], "invalid choice: 'mpi'"),
])
def test_bad_launch_options_are_refused(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _launch(*args, "--storage", str(tmp_path / "storage")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_slurm_needs_sbatch_and_srun(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert _launch("--executor", "slurm", "--shards", "2", "--folder", str(tmp_path / "job")) == 2
    assert "error: --executor slurm: sbatch and srun not found on PATH; launch from a SLURM login node, or use --executor local" in capsys.readouterr().err


def test_missing_submitit_is_one_line_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # `import submitit` raises ImportError
    folder = tmp_path / "job"
    assert _launch("--executor", "local", "--shards", "2", "--folder", str(folder), "--", "-m", "smoke") == 2
    assert capsys.readouterr().err == "error: python -m harness launch needs submitit: pip install -e '.[launch]'\n"
    assert not folder.exists()


def _old_launch(folder: Path, shards: int = 3) -> LaunchPlan:
    plan = LaunchPlan(("-m", "smoke"), shards, "local", None, str(folder.parent), PY, "2024-01-01T00:00:00+00:00")
    folder.mkdir()
    plan.write(folder)
    return plan


@pytest.mark.parametrize(("args", "message"), [
    (["--rerun", "2"], "shard(s) 1, 3 of {folder} have no run either: re-run them too (--rerun 1,2,3)"),
    (["--rerun", "4"], "--rerun 4: the launch in {folder} has shards 1 to 3"),
    (["--rerun", "2", "--shards", "4"], "--shards 4: the launch in {folder} has 3 shards"),
    (["--rerun", "2", "--", "-m", "train"], "--rerun runs the pytest arguments saved in {folder}/launch.json; pass none after --"),
])
def test_rerun_checks_the_job_folder(args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "job"
    _old_launch(folder)
    assert _launch("--executor", "local", "--folder", str(folder), *args) == 2
    assert message.format(folder=folder) in capsys.readouterr().err


def test_rerun_needs_a_launch_record_and_a_new_launch_a_new_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _launch("--executor", "local", "--folder", str(tmp_path), "--rerun", "1") == 2
    assert f"{tmp_path}/launch.json does not exist; --folder must name the job folder of an earlier launch" in capsys.readouterr().err
    _old_launch(tmp_path / "job")
    assert _launch("--executor", "local", "--shards", "3", "--folder", str(tmp_path / "job")) == 2
    assert "already holds a launch: re-run its shards with --rerun K, or pass another --folder" in capsys.readouterr().err


# --- what a shard runs ---------------------------------------------------------------------------

def test_the_shard_command() -> None:
    run = Path("/jobs/a/shard-2-of-3.json")
    assert shard_command(["-m", "inference", "-k", "resnet"], 2, 3, run, python="py") == [
        "py", "-m", "pytest", "-m", "inference", "-k", "resnet",
        "--shard=2/3", "--benchmark-json=/jobs/a/shard-2-of-3.json", "-p", "no:cacheprovider",
    ]


def test_the_shard_command_under_torchrun() -> None:
    run = Path("/jobs/a/shard-1-of-2.json")
    assert shard_command(["-m", "train"], 1, 2, run, nproc_per_node=4, python="py") == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "4", "-m", "pytest", "-m", "train",
        "--shard=1/2", "--benchmark-json=/jobs/a/shard-1-of-2.json", "-p", "no:cacheprovider",
    ]


def test_a_shard_task_runs_its_command_where_the_launch_ran(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BB_DROPPED", "x")
    script = "import os, sys; open('env.txt', 'w').write(repr((os.environ.get('BB_SET'), os.environ.get('BB_DROPPED')))); sys.exit(5)"
    task = ShardTask(1, 2, (PY, "-c", script), str(tmp_path), str(tmp_path / "run.json"), (("BB_SET", "1"), ("BB_DROPPED", None)))
    code, seconds = launch.run_shard(task)
    assert code == 5 and seconds >= 0
    assert (tmp_path / "env.txt").read_text() == "('1', None)"


def test_the_rerun_command_repeats_the_launch_options(tmp_path: Path) -> None:
    args = launch_args("--executor", "slurm", "--shards", "3", "--partition", "gpu", "--time", "90", "--save", "main",
                       "--gate", "base", "--fail-on", "latency_p50_ms:off", "--no-history", "--", "-m", "train")
    assert launch_cli.rerun_command(args, tmp_path, [2, 3]) == (
        f"python -m harness launch --executor slurm --folder {tmp_path} --rerun 2,3 --save main --partition gpu --gate base "
        "--time 90 --fail-on latency_p50_ms:off --no-history"
    )


def launch_args(*argv: str) -> Any:
    from harness.cli.main import parser as _parser

    return _parser().parse_args(["launch", *argv])


# --- waiting -------------------------------------------------------------------------------------

class FakePaths:
    def __init__(self, index: int) -> None:
        self.stdout = Path(f"/logs/{index}.out")
        self.stderr = Path(f"/logs/{index}.err")


class FakeJob:
    """A submitit job that is done after ``polls`` calls of done() and returns ``result``."""

    def __init__(self, index: int, polls: int, result: tuple[int, float]) -> None:
        self.job_id, self.paths, self.polls, self.value = f"77_{index}", FakePaths(index), polls, result
        self.state = "RUNNING"

    def done(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def result(self) -> tuple[int, float]:
        return self.value


def test_run_shards_reports_each_shard_and_keeps_the_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tasks = [ShardTask(k, 3, ("true",), str(tmp_path), str(tmp_path / f"shard-{k}-of-3.json")) for k in (1, 2, 3)]
    for k in (1, 2):
        Path(tasks[k - 1].run_file).write_text("{}")
    results = {1: (0, 41.0), 2: (3, 12.0), 3: (1, 30.0)}  # shard 3 exits 1 but leaves no run file
    batches: list[list[int]] = []

    def submit(batch: Any) -> list[FakeJob]:
        batches.append([task.index for task in batch])
        return [FakeJob(task.index, task.index, results[task.index]) for task in batch]

    outcomes = run_shards(tasks, submit, window=2, poll_s=0, heartbeat_s=3600)
    assert batches == [[1, 2], [3]]
    assert [o.ok for o in outcomes] == [True, False, False]
    assert capsys.readouterr().out.splitlines() == [
        "submitted shard 1 as job 77_1, 2 as job 77_2",
        "shard 1/3 done (exit 0, 41 s)",
        "submitted shard 3 as job 77_3",
        "shard 2/3 failed (exit 3, an internal error; 12 s)",
        "shard 3/3 failed (exit 1 but no run file; 30 s)",
    ]


def test_a_task_that_dies_without_an_exit_code_is_a_failed_shard(tmp_path: Path) -> None:
    from submitit.core.utils import UncompletedJobError

    class Killed(FakeJob):
        def result(self) -> tuple[int, float]:
            raise UncompletedJobError("Job 77_1 (task: 0) has not produced any output (state: TIMEOUT)")

    task = ShardTask(1, 1, ("true",), str(tmp_path), str(tmp_path / "run.json"))
    killed = Killed(1, 0, (0, 0.0))
    killed.state = "TIMEOUT"
    [outcome] = run_shards([task], lambda batch: [killed], poll_s=0)
    assert outcome == ShardOutcome(1, 1, None, outcome.seconds, False, Path("/logs/1.out"), Path("/logs/1.err"),
                              "the task ended without an exit code (state TIMEOUT)")


# --- SLURM, without a cluster ----------------------------------------------------------------------

SBATCH = """#!/bin/sh
echo "$@" >> "{argv}"
echo "Submitted batch job 4242"
"""


def test_slurm_array_submission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A fake ``sbatch`` (and ``srun``, which submitit looks for) on PATH: the launch submits one
    array job; the test stops it once submitted and reads the script submitit wrote."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(SBATCH.format(argv=tmp_path / "sbatch-argv.txt"))
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    submitted: list[Any] = []

    def submit_only(tasks: Any, submit: Any, **kwargs: Any) -> list[ShardOutcome]:
        submitted.extend(submit(tasks))
        raise LaunchError("stopped once submitted")

    monkeypatch.setattr(launch_cli, "run_shards", submit_only)
    folder = tmp_path / "job"
    assert _launch("--executor", "slurm", "--shards", "3", "--partition", "gpu", "--gpus-per-task", "1", "--cpus-per-task", "8",
                   "--time", "60", "--max-parallel", "2", "--account", "vision", "--qos", "normal", "--folder", str(folder),
                   "--", "-m", "train", "--devices", "cuda") == 2
    assert "stopped once submitted" in capsys.readouterr().err
    assert [job.job_id for job in submitted] == ["4242_0", "4242_1", "4242_2"]
    assert [job.paths.stdout for job in submitted] == [folder / "jobs" / "01" / f"4242_{k}_0_log.out" for k in range(3)]
    script = (folder / "jobs" / "01" / "4242_submission.sh").read_text()
    sbatch = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for flag in ("--array=0-2%2", "--partition=gpu", "--gpus-per-task=1", "--cpus-per-task=8", "--time=60",
                 "--account=vision", "--qos=normal", "--job-name=backbone-bench"):
        assert f"#SBATCH {flag}" in sbatch, script
    assert f"{sys.executable} -u -m submitit.core._submit {folder / 'jobs' / '01'}" in script  # this interpreter, whatever its name
    assert (tmp_path / "sbatch-argv.txt").read_text().strip().endswith(".sh")
    record = json.loads((folder / "launch.json").read_text())
    assert record["pytest_args"] == ["-m", "train", "--devices", "cuda"] and record["shards"] == 3 and record["executor"] == "slurm"


# --- end to end, on this machine ---------------------------------------------------------------------

CONFTEST = PROJECT_CONFTEST + '''
import os


def pytest_sessionstart(session):
    # The failure to recover from: shard 2 crashes while the marker file exists.
    shard = session.config.getoption("bb_shard", None)
    if os.path.exists("fail-shard-2") and getattr(shard, "index", None) == 2:
        raise RuntimeError("injected failure of shard 2")
'''
# Four cheap cases (two of the smallest CNNs, batch 1 and 2, 32 px, CPU), so three shards all have work.
MATRIX = ("-m", "inference", "--backbones", "resnet10t,mobilenetv3_small_050", "--batch-sizes", "1,2", "--devices", "cpu",
          "--bench-time", "0.05")
# Shards run side by side on a shared machine: latency is not what this test gates.
GATE = ("--gate", "serial", "--fail-on", "latency_p50_ms:off")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The real inference benchmark in a fresh folder, with a serial run saved as 'serial'."""
    path = tmp_path_factory.mktemp("launch")
    (path / "conftest.py").write_text(CONFTEST)
    (path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers --benchmark-storage=file://baselines\n")
    (path / "test_inference.py").write_text((ROOT / "benchmarks" / "test_inference.py").read_text())
    serial = subprocess.run([PY, "-m", "pytest", "-q", *MATRIX, "-p", "no:cacheprovider", "--benchmark-save=serial"], cwd=path, env=_env(path),
                            capture_output=True, text=True, timeout=600)
    assert serial.returncode == 0, serial.stdout[-3000:] + serial.stderr[-3000:]
    yield path


def _env(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    return {**env, "PYTHONPATH": str(ROOT), "BACKBONE_BENCH_CHECKPOINTS": str(path / "checkpoints")}


def _case_ids(run: Path) -> list[str]:
    return sorted(b["extra_info"]["case_id"] for b in json.loads(run.read_text())["benchmarks"])


def test_a_failed_shard_is_named_then_rerun_alone_merged_saved_and_gated(project: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in _env(project).items():
        monkeypatch.setenv(key, value)
    for key in [k for k in os.environ if k.startswith("PYTEST_XDIST")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(project)
    (project / "fail-shard-2").touch()
    folder = project / "job"

    code = _launch("--executor", "local", "--shards", "3", "--folder", str(folder), "--save", "sharded", *GATE, "--", *MATRIX, "-q")
    out, err = capsys.readouterr()
    print(out, err)  # shown with -s, and on failure
    assert code == 2
    assert "shard 2/3 failed (exit 3, an internal error;" in out
    logs = [Path(line.split(": ", 1)[1]) for line in out.splitlines() if line.startswith(("  stdout: ", "  stderr: "))]
    assert [log.suffix for log in logs] == [".out", ".err"]
    assert "RuntimeError: injected failure of shard 2" in logs[0].read_text()  # pytest reports an internal error on stdout
    assert "| INTERNALERROR> RuntimeError: injected failure of shard 2" in out
    assert f"nothing merged. Re-run them and merge: python -m harness launch --executor local --folder {folder} --rerun 2 --save sharded {' '.join(GATE)}" in err
    assert [p.name for p in (project / "baselines").glob("*/*.json")] == ["0001_serial.json"]  # the storage is untouched
    assert all(json.loads((folder / f"shard-{k}-of-3.json").read_text())["benchmarks"] for k in (1, 3))

    # A run saved between the launch and the re-run, with other durations, would split the
    # selection differently; the re-run shard splits by the launch's snapshot (costs/) instead.
    [serial] = (project / "baselines").glob("*/0001_serial.json")
    changed = json.loads(serial.read_text())
    for n, bench in enumerate(changed["benchmarks"]):
        bench["extra_info"]["duration_s"] = 1000.0 if n == 0 else 0.1
    (serial.parent / "0002_changed.json").write_text(json.dumps(changed))
    (project / "fail-shard-2").unlink()
    code = _launch("--executor", "local", "--folder", str(folder), "--rerun", "2", "--save", "sharded", *GATE)
    out, err = capsys.readouterr()
    print(out, err)
    assert code == 0, out + err
    assert "shard 2/3 done (exit 0," in out and "merged 4 case(s) from 3 shard(s)" in out
    assert "OK: 0 failing" in out
    [sharded] = (project / "baselines").glob("*/0003_sharded.json")
    assert _case_ids(sharded) == _case_ids(serial) and len(_case_ids(serial)) == 4
    assert json.loads((folder / "merged.json").read_text()) == json.loads(sharded.read_text())
