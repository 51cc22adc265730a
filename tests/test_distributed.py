"""Training one case on several processes (torchrun, DistributedDataParallel over gloo on the CPU).

Unit tests of the world, the rank shares, identity and the refusals; then two real two-process
runs: the training loop against the single-process step at the same global batch, and the real
benchmark files under ``torchrun --nproc-per-node 2 -m pytest``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.config.options import default_settings
from harness.errors import SettingError
from harness.matrix.cases import CaseSpec
from harness.results.schema import RecordError, check_record, world_size
from harness.runtime.distributed import World, check_global_batches, check_session, rank_share, threads_per_rank, world_from_env
from tests.projects import CONFTEST

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2")
TORCHRUN_ENV = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}


# -- the world and the rank shares ------------------------------------------------------------

def test_world_is_read_from_torchrun_environment() -> None:
    assert world_from_env({}) == World(rank=0, size=1, local_rank=0, local_size=1)
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}) == World(3, 4, 1, 2)
    assert world_from_env({"RANK": "1", "WORLD_SIZE": "2"}).local_size == 2  # one machine unless torchrun says otherwise
    assert World(1, 2).distributed and not World(1, 2).is_main and World().is_main and not World().distributed


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "two"}, {"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "0"}])
def test_a_broken_torchrun_environment_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingError, match="torchrun"):
        world_from_env(env)


@pytest.mark.parametrize(("n", "size"), [(10, 1), (10, 2), (11, 2), (100, 3), (7, 4), (3, 4)])
def test_rank_shares_are_equal_and_disjoint(n: int, size: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    shares = [rank_share(order, World(rank, size)) for rank in range(size)]
    assert {len(s) for s in shares} == {n // size}  # the same number of steps on every rank
    seen = torch.cat(shares).tolist()
    assert len(seen) == len(set(seen)) and set(seen) <= set(order.tolist())  # each index at most once
    assert len(seen) == n - n % size  # only the tail that does not split is dropped


def test_rank_batches_together_are_the_single_process_batch() -> None:
    order, batch, size = torch.randperm(100, generator=torch.Generator().manual_seed(0)), 8, 2
    shares = [rank_share(order, World(rank, size)).split(batch // size) for rank in range(size)]
    for step in range(100 // batch):
        together = sorted(torch.cat([share[step] for share in shares]).tolist())
        assert together == sorted(order[step * batch : (step + 1) * batch].tolist())


def test_threads_share_the_machine_cores() -> None:
    assert threads_per_rank(World(0, 2, 0, 2), cores=16) == 8
    assert threads_per_rank(World(0, 4, 0, 4), cores=2) == 1
    assert threads_per_rank(World(), cores=2) == 2


# -- identity ---------------------------------------------------------------------------------

def _train_spec(**changes: object) -> CaseSpec:
    base = CaseSpec(kind="train", backbone="resnet18", family="cnn", edge=True, device="cpu", batch_size=128, img_size=32,
                    precision="fp32", dataset="digits", subset="full")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_world_size_is_part_of_a_train_case_id() -> None:
    assert _train_spec().id == "resnet18-digits_full-cpu-bs128-32px-fp32"  # one process: ids (and baselines) unchanged
    two = _train_spec(world_size=2)
    assert two.id == "resnet18-digits_full-cpu-bs128-32px-fp32-ws2" and two.case_id == "train/" + two.id
    assert two.identity()["world_size"] == 2 and _train_spec().identity()["world_size"] == 1
    with pytest.raises(ValueError, match="only train cases run on several processes"):
        CaseSpec(kind="inference", backbone="resnet18", family="cnn", edge=True, device="cpu", batch_size=1, img_size=32, precision="fp32", world_size=2)


def test_matrix_under_torchrun_names_the_world_and_skips_single_process_kinds(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.kinds import build

    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    settings = default_settings(backbones=["resnet10t"], devices=["cpu"], batch_sizes=[1])
    [train] = build("train", settings)
    assert train.spec.id.endswith("-ws2") and train.skip is None
    for kind in ("inference", "plan"):
        assert all(case.skip and "run them without torchrun" in case.skip for case in build(kind, settings))
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not build("train", settings)[0].spec.id.endswith("-ws2") and build("inference", settings)[0].skip is None


def test_records_without_world_size_are_one_process() -> None:
    old = {"kind": "train", "case_id": "train/resnet18-digits_full-cpu-bs128-32px-fp32"}
    assert world_size(old) == 1 and check_record(old, failed=False) == ("train", "ok")
    assert check_record({"kind": "train", "case_id": old["case_id"] + "-ws2", "world_size": 2}, failed=False) == ("train", "ok")
    with pytest.raises(RecordError, match="does not match world_size 2"):
        check_record({**old, "world_size": 2}, failed=False)
    with pytest.raises(RecordError, match="world_size must be a positive integer"):
        world_size({"world_size": "2"})


# -- refusals ---------------------------------------------------------------------------------

def test_a_global_batch_the_world_cannot_split_is_refused() -> None:
    check_global_batches([128, 64], World(0, 2))
    check_global_batches([7], World())  # one process splits anything
    with pytest.raises(SettingError, match=r"--train-batch-sizes 100 is the global batch .* 3 processes .*multiple of 3, e.g. 99, 102"):
        check_global_batches([126, 100], World(0, 3))
    with pytest.raises(SettingError, match="2 processes × 4 accumulation steps; use a multiple of 8"):
        check_global_batches([12], World(0, 2), grad_accum=4)


def test_xdist_under_torchrun_is_refused() -> None:
    with pytest.raises(SettingError, match=r"drop -n"):
        check_session(World(0, 2), default_settings(devices=["cpu"]), xdist=True)
    check_session(World(), default_settings(devices=["cpu"]), xdist=True)


def test_more_ranks_than_gpus_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SettingError, match="2 processes on this machine but 1 GPU.*torchrun --nproc-per-node 1, or --devices cpu"):
        check_session(World(0, 2, 0, 2), default_settings(devices=["cuda"]), xdist=False)
    check_session(World(0, 2, 0, 2), default_settings(devices=["cpu"]), xdist=False)


def test_training_several_ranks_without_a_process_group_is_refused() -> None:
    from harness.training.loop import train
    from harness.training.recipes import default_recipe

    split = _digits(0, 64)
    with pytest.raises(RuntimeError, match="call harness.runtime.distributed.init_distributed"):
        train(torch.nn.Linear(1, 10), split, split, default_recipe("cnn", epochs=1, batch_size=32), device=torch.device("cpu"), world=World(0, 2))


def test_a_checkpoint_resumes_only_on_its_world_size(tmp_path: Path) -> None:
    from harness.training.loop import CHECKPOINT, train
    from harness.training.recipes import default_recipe

    recipe = default_recipe("cnn", epochs=1, batch_size=32, warmup_epochs=0, hflip=False)
    train(_mlp(), _digits(0, 64), _digits(64, 128), recipe, device=torch.device("cpu"), checkpoint_dir=tmp_path, measure_memory=False)
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["world_size"] == 1
    torch.save({**ckpt, "world_size": 2}, tmp_path / CHECKPOINT)
    with pytest.raises(ValueError, match="written by 2 process.*torchrun --nproc-per-node 2 or resume=False"):
        train(_mlp(), _digits(0, 64), _digits(64, 128), recipe, device=torch.device("cpu"), checkpoint_dir=tmp_path, resume=True, measure_memory=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-n", "2"), "pytest-xdist (-n) cannot run under torchrun"),
        (("--train-batch-sizes", "33"), "--train-batch-sizes 33 is the global batch"),
    ],
)
def test_the_plugin_refuses_before_any_rank_waits(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """A usage error (exit 4) on every rank, raised before the process group: no rank hangs."""
    _project(tmp_path)
    env = {**_env(tmp_path), **TORCHRUN_ENV}  # rank 0 of two, as torchrun starts it
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "--devices", "cpu", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr and "Traceback" not in result.stderr


# -- two real processes -----------------------------------------------------------------------

_LOOP = """
import json, sys, torch
from harness.runtime.distributed import init_distributed, shutdown_distributed
from tests.test_distributed import equivalence_run
world = init_distributed(["cpu"])
result = equivalence_run()
if world.is_main:
    open(sys.argv[1], "w").write(json.dumps(result))
shutdown_distributed()
"""


@pytest.mark.xdist_group("distributed")
def test_two_ranks_train_exactly_the_single_process_steps(tmp_path: Path) -> None:
    """Without augmentation, DDP at global batch 32 over 2 ranks is the single-process run at 32, BatchNorm
    included: its statistics are pooled over the ranks (per-rank statistics of 16 images would differ)."""
    script = tmp_path / "loop.py"
    script.write_text(_LOOP)
    result = _torchrun(tmp_path, str(script), str(tmp_path / "ranks.json"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    two = json.loads((tmp_path / "ranks.json").read_text())
    one = equivalence_run()
    assert two["train_ips"] > 0 and len(two["losses"]) == len(one["losses"]) == 2
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-4)
    assert two["weights"] == pytest.approx(one["weights"], rel=1e-3, abs=1e-5)
    assert two["top1"] == pytest.approx(one["top1"], abs=1.0)  # at most a borderline image or two of 64 flips


def equivalence_run() -> dict[str, object]:
    """Two epochs of an MLP with BatchNorm on 8 px digits at global batch 32, no augmentation."""
    from harness.training.loop import train
    from harness.training.recipes import default_recipe

    torch.set_num_threads(1)
    model = _mlp()
    recipe = default_recipe("cnn", epochs=2, batch_size=32, warmup_epochs=0, hflip=False, augment=("none",), lr=0.1)
    result = train(model, _digits(0, 320), _digits(320, 384), recipe, device=torch.device("cpu"), measure_memory=False)
    return {
        "losses": [row["loss"] for row in result.curve],
        "top1": result.top1,
        "train_ips": result.train_ips,
        "weights": [float(v) for v in model[1].weight.detach().flatten()[:64]],
    }


@pytest.mark.xdist_group("distributed")
def test_torchrun_trains_one_case_on_two_cpu_processes(tmp_path: Path) -> None:
    _project(tmp_path)
    args = ("-m", "pytest", "-q", "-rs", "--backbones", "resnet10t", "--dataset", "digits", "--subsets", "500", "--epochs", "1",
            "--train-batch-sizes", "32", "--img-sizes", "32", "--batch-sizes", "1", "--devices", "cpu",
            "--benchmark-save=ddp", "--benchmark-json=ddp.json")
    result = _torchrun(tmp_path, *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    runs = sorted((tmp_path / "baselines").glob("*/*.json"))
    assert [p.name for p in runs] == ["0001_ddp.json"]  # rank 0 alone saved
    [case] = [b["extra_info"] for b in json.loads(runs[0].read_text())["benchmarks"]]
    assert case["case_id"] == "train/resnet10t-digits_500-cpu-bs32-32px-fp32-ws2"
    assert (case["world_size"], case["global_batch"], case["per_rank_batch"], case["backend"], case["batchnorm"]) == (2, 32, 16, "gloo", "whole batch")
    assert case["lr"] == pytest.approx(0.1 * 32 / 256)  # the recipe's rate for the global batch
    assert case["train_ips"] > 0 and case["settings"]["threads"] >= 1
    assert json.loads((tmp_path / "ddp.json").read_text())["benchmarks"][0]["extra_info"]["case_id"] == case["case_id"]
    output = result.stdout + result.stderr
    assert "inference cases are measured in a single process; run them without torchrun" in output
    assert "plan cases are measured in a single process" in output
    assert output.count("backbone-bench: saved 1 case(s)") == 1  # rank 1 neither saves nor prints it


# -- helpers ----------------------------------------------------------------------------------

def _digits(start: int, stop: int):  # type: ignore[no-untyped-def]
    """Native 8x8 digits as 3-channel uint8 (as tests/test_train.py builds them)."""
    from sklearn.datasets import load_digits

    from harness.data.types import TensorSplit

    d = load_digits()
    images = torch.round(torch.from_numpy(d.images[start:stop]).float() * 255 / 16).to(torch.uint8)[:, None].expand(-1, 3, -1, -1).contiguous()
    return TensorSplit(images, torch.from_numpy(d.target[start:stop]).long(), tuple(str(i) for i in range(10)))


def _mlp() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _project(path: Path) -> None:
    (path / "conftest.py").write_text(CONFTEST)
    (path / "pytest.ini").write_text("[pytest]\naddopts = --strict-markers -p no:cacheprovider --benchmark-storage=file://baselines\n")
    for source in (ROOT / "benchmarks").glob("test_*.py"):
        (path / source.name).write_text(source.read_text())


def _env(path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST") and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["PYTHONPATH"] = str(ROOT)
    env["BACKBONE_BENCH_CHECKPOINTS"] = str(path / "checkpoints")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2`` in ``path``; on a timeout the whole process group is killed."""
    command = [*TORCHRUN, "--master-port", str(_free_port()), *args]
    with subprocess.Popen(command, cwd=path, env=_env(path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and the ranks it started
            out, err = proc.communicate()
            pytest.fail(f"torchrun did not finish in 300 s:\n{out[-2000:]}\n{err[-2000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def test_a_pass_over_part_of_the_split_is_sized_by_that_part() -> None:
    # A rank iterates its share of the order: the pass must not run past it into empty batches.
    from harness.data.batches import Batches
    from harness.data.types import TensorSplit

    split = TensorSplit(torch.zeros(10, 3, 4, 4, dtype=torch.uint8), torch.arange(10) % 2, ("a", "b"))
    for on_device in (True, False):
        batches = Batches(split, torch.device("cpu"), on_device=on_device, num_workers=0)
        share = torch.tensor([0, 2, 4, 6, 8])
        assert [labels.tolist() for _, labels in batches.iterate(2, order=share, drop_last=True)] == [[0, 0], [0, 0]]
        assert [len(labels) for _, labels in batches.iterate(2, order=share)] == [2, 2, 1]
        assert [len(labels) for _, labels in batches.iterate(4)] == [4, 4, 2]
