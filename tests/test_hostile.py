"""Hostile inputs (issue #27): a table of what a user in a hurry, or an attacker who controls a run file
or a dataset, hands the suite, and the one line each gets back, before any case runs where it can.

Each table row is an input and the message that must name it; the good rows beside them must pass.
"""

from __future__ import annotations

import io
import json
import math
import os
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from harness.config.options import OPTIONS, default_settings
from harness.config.parsers import number
from harness.config.preflight import check_available
from harness.errors import SettingError
from harness.kinds import outcome
from harness.results.runs import RunError, load_run, read_run_file
from harness.results.storage import NAME_OVERHEAD, StorageError, check_json_path, check_run_name
from harness.training.checkpoints import CheckpointUnreadable, load_checkpoint
from tests import datagen
from tests.projects import CONFTEST

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "baselines" / "Linux-CPython-3.11-64bit-cpu-amd-epyc" / "0010_smoke.json"
INFERENCE = "inference/convnextv2_tiny-cpu-bs1-32px-fp32"  # the smoke run's first case
TRAIN = "train/deit_small_patch16_224-digits_full-cpu-bs128-32px-fp32"
BENCH_TIME = next(o for o in OPTIONS if o.name == "bench-time").parse


# --- option values: a table of good ones and one of bad ones --------------------------------------

@pytest.mark.parametrize("text", ["0.01", "1", "3599", "1e3"])
def test_bench_time_takes_finite_seconds_under_an_hour(text: str) -> None:
    assert BENCH_TIME(text) == float(text)


@pytest.mark.parametrize(("text", "message"), [
    ("inf", r"bench-time must be a number in \(0, 3600\), got 'inf'"),
    ("Infinity", r"bench-time must be a number in \(0, 3600\), got 'Infinity'"),
    ("nan", r"bench-time must be a number in \(0, 3600\), got 'nan'"),
    ("3600", r"got '3600'"),
    ("1e9", r"got '1e9'"),
    ("0", r"got '0'"),
    ("-1", r"got '-1'"),
    ("1s", r"got '1s'"),
])
def test_bench_time_refuses_what_cannot_be_timed(text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        BENCH_TIME(text)


@pytest.mark.parametrize(("text", "message"), [
    ("inf", r"lr must be a finite number > 0, got 'inf'"),
    ("1e400", r"lr must be a finite number > 0, got '1e400'"),  # overflows to inf
    ("-inf", r"lr must be a number > 0, got '-inf'"),
    ("nan", r"lr must be a number > 0, got 'nan'"),
])
def test_a_float_option_is_finite(text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        number("lr")(text)
    assert number("lr")("1e30") == 1e30  # absurd but finite: a training that diverges on it fails its case


def _option(name: str) -> Callable[[str], Any]:
    return next(o for o in OPTIONS if o.name == name).parse


@pytest.mark.parametrize(("option", "text", "value"), [
    ("img-sizes", "32,4096", [32, 4096]),
    ("train-img-sizes", "native,4096", ["native", 4096]),
    ("num-classes", "1000000", 1_000_000),
    ("plan-budget", "1MiB", 2**20),
    ("plan-budget", "1GB", 10**9),
])
def test_sizes_at_their_bounds(option: str, text: str, value: object) -> None:
    assert _option(option)(text) == value


@pytest.mark.parametrize(("option", "text", "message"), [
    ("img-sizes", "32,100000", r"img-sizes entry must be a positive integer of at most 4096, got '100000'"),
    ("train-img-sizes", "99999", r"train-img-sizes entry \(or native\) must be a positive integer of at most 4096, got '99999'"),
    ("num-classes", "1000000000", r"num-classes must be a positive integer of at most 1000000, got '1000000000'"),
    ("plan-budget", "1B", r"plan-budget '1B' is 1 bytes, less than any backbone's weights; write the unit in full, e.g. 512MiB or 1GB"),
    ("plan-budget", "1000KB", r"plan-budget '1000KB' is 1000000 bytes"),
])
def test_sizes_no_case_can_mean(option: str, text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message):
        _option(option)(text)


@pytest.mark.parametrize(("content", "message"), [
    ("cat\n" * 10, r"class name 'cat' \(entry 2\) repeats entry 1; give every class its own name"),
    ("cat\ndog\nCat\n", r"class name 'Cat' \(entry 3\) repeats entry 1"),  # CLIP's tokenizer lower-cases: the same prompts
    (b"\xff\xfe\x00garbage", r"not UTF-8 text \(byte 0\); save it as UTF-8"),
    (None, r"a FIFO \(named pipe\), not a file"),
])
def test_classnames_that_zero_shot_cannot_use(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "names.txt"
    if content is None:
        os.mkfifo(path)  # reading it would hang the session's start
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SettingError, match=message):
        _option("classnames")(str(path))


@pytest.mark.parametrize("name", ["main", "a", "x" * (255 - NAME_OVERHEAD), "v1.2_rc-3"])
def test_run_names_that_fit(name: str, tmp_path: Path) -> None:
    assert check_run_name(name) == name
    assert check_run_name(name, tmp_path) == name


@pytest.mark.parametrize(("name", "message"), [
    ("x" * (256 - NAME_OVERHEAD), rf"run name of {256 - NAME_OVERHEAD} characters is too long: .* use a name of at most {255 - NAME_OVERHEAD} characters"),
    ("x" * 300, r"run name of 300 characters is too long"),
    ("x" * 250, r"run name of 250 characters is too long"),  # a file name on its own, but not with NNNN_, .json and the temporary names
    ("my run", r"invalid run name 'my run'"),
    ("../up", r"invalid run name '../up'"),
    ("-x", r"invalid run name '-x'"),
])
def test_run_names_that_cannot_be_files(name: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=message):
        check_run_name(name, tmp_path)


def test_the_name_limit_is_the_storage_file_system_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.results.storage as storage

    monkeypatch.setattr(storage.os, "pathconf", lambda path, key: 64)  # a file system of short names
    with pytest.raises(StorageError, match=rf"{tmp_path} takes file names of at most 64 characters.*at most {64 - NAME_OVERHEAD} characters"):
        check_run_name("x" * 30, tmp_path)


def test_a_json_path_that_is_no_file_or_too_long(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere" / "x.json")
    for path, what in (("pipe.json", "a FIFO \\(named pipe\\)"), ("dir.json", "a folder"), ("dangling.json", "a broken link")):
        with pytest.raises(StorageError, match=rf"--benchmark-json {tmp_path / path}: {what} is there, not a file"):
            check_json_path(tmp_path / path)
    with pytest.raises(StorageError, match=r"a file name of 245 characters is too long"):
        check_json_path(tmp_path / ("j" * 240 + ".json"))
    assert check_json_path(tmp_path / "run.json") == tmp_path / "run.json"


# --- run files an attacker wrote: never a verdict on them ----------------------------------------

def _run(tmp_path: Path, mutate: Callable[[dict[str, Any]], None], name: str = "run.json") -> Path:
    doc = json.loads(SMOKE.read_text(encoding="utf-8"))
    mutate(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc), encoding="utf-8")  # json writes NaN and Infinity as they came
    return path


def _set(case_id: str, key: str, value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(doc: dict[str, Any]) -> None:
        (bench,) = [b for b in doc["benchmarks"] if b["extra_info"]["case_id"] == case_id]
        if "[" in key:
            sample_key, position = key[:-1].split("[")
            bench["extra_info"][sample_key][int(position)] = value
        else:
            bench["extra_info"][key] = value
    return mutate


@pytest.mark.parametrize(("case", "key", "value", "message"), [
    (INFERENCE, "latency_p50_ms", math.nan, r"latency_p50_ms is nan, not a number"),
    (INFERENCE, "latency_p50_ms", math.inf, r"latency_p50_ms is inf, not a number"),
    (INFERENCE, "latency_p90_ms", -math.inf, r"latency_p90_ms is -inf, not a number"),
    (INFERENCE, "latency_p50_ms", 1e308, r"latency_p50_ms is 1e\+308 ms, outside \[1e-09, 1e\+09\]"),
    (INFERENCE, "latency_p50_ms", 0.0, r"latency_p50_ms is 0 ms, outside"),  # noise divides by latencies
    (INFERENCE, "latency_mean_ms", -2.0, r"latency_mean_ms is -2 ms, outside"),
    (INFERENCE, "params", 1e30, r"params is 1e\+30 count, outside \[0, 1e\+13\]"),
    (INFERENCE, "gmacs", 1e308, r"gmacs is 1e\+308 GMACs, outside"),
    (INFERENCE, "peak_mem_bytes", -1, r"peak_mem_bytes is -1 bytes, outside"),
    (INFERENCE, "throughput_ips", math.inf, r"throughput_ips is inf"),
    (INFERENCE, "latency_samples_ms[3]", math.nan, r"latency_samples_ms\[3\] is nan, not a number"),
    (INFERENCE, "latency_samples_ms[0]", 1e300, r"latency_samples_ms\[0\] is 1e\+300 ms, outside"),
    (TRAIN, "top1", 101.0, r"top1 is 101 %, outside \[0, 100\]"),
    (TRAIN, "top1", math.nan, r"top1 is nan"),
    (TRAIN, "macro_f1", 1.5, r"macro_f1 is 1.5 0-1, outside \[0, 1\]"),
    (TRAIN, "train_time_s", 1e7, r"train_time_s is 1e\+07 s, outside \[0, 1e\+06\]"),
    (TRAIN, "duration_s", math.inf, r"duration_s is inf"),
])
def test_a_value_that_is_no_measurement_refuses_the_run(tmp_path: Path, case: str, key: str, value: float, message: str) -> None:
    path = _run(tmp_path, _set(case, key, value))
    with pytest.raises(RunError, match=rf"^{path}: case '{case}': {message}.*no verdict is given on this run"):
        read_run_file(path)


@pytest.mark.parametrize(("case", "key", "value"), [
    (INFERENCE, "latency_p50_ms", None),  # null: a metric the case did not record
    (INFERENCE, "energy_mj_per_img", None),
    (INFERENCE, "params", 0),
    (INFERENCE, "latency_p50_ms", 1e9),  # the bounds themselves are measurements
    (TRAIN, "top1", 100.0),
    (TRAIN, "top1", 0.0),
    (TRAIN, "macro_f1", 1.0),
])
def test_null_and_values_at_the_bounds_are_read(tmp_path: Path, case: str, key: str, value: object) -> None:
    run = read_run_file(_run(tmp_path, _set(case, key, value)))
    assert run.cases[case].extra[key] == value


def test_every_reader_refuses_a_garbage_run_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    def garbage(doc: dict[str, Any]) -> None:
        for key, value in (("latency_p50_ms", math.nan), ("latency_p90_ms", math.inf), ("params", 1e308)):
            _set(INFERENCE, key, value)(doc)

    bad = _run(tmp_path, garbage, "garbage.json")
    storage = tmp_path / "storage"
    storage.mkdir()
    expected = f"error: {bad}: case '{INFERENCE}': latency_p50_ms is nan, not a number"
    for argv in (["compare", str(SMOKE), str(bad)], ["compare", str(bad), str(SMOKE)], ["report", str(bad), "--out", str(tmp_path / "report")],
                 ["storage", "adopt", str(bad), "--storage", str(storage)], ["merge", str(bad), "--json", str(tmp_path / "merged.json")]):
        assert main(argv) == 2, argv
        assert capsys.readouterr().err.startswith(expected), argv
    assert not any(storage.rglob("*.json")) and not (tmp_path / "merged.json").exists() and not (tmp_path / "report").exists()


def test_something_other_than_a_file_given_as_a_run_is_refused_unopened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.json")  # opening it would block forever
    (tmp_path / "folder").mkdir()
    with pytest.raises(RunError, match=rf"^{tmp_path / 'pipe.json'}: a FIFO \(named pipe\), not a run file"):
        load_run(str(tmp_path / "pipe.json"), tmp_path)
    with pytest.raises(RunError, match=r"^/dev/null: a character device, not a run file"):
        load_run("/dev/null", tmp_path)
    with pytest.raises(RunError, match=rf"^{tmp_path / 'folder'}: a folder, not a run file; pass a run file in it"):
        load_run(str(tmp_path / "folder"), tmp_path)


# --- datasets: scanned completely before any case ---------------------------------------------------

def _png(seed: int, size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(datagen.random_images(1, 3, size, size, seed)[0].transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tar(path: Path, samples: list[tuple[str, bytes, bytes]]) -> Path:
    """A shard of ``(key, png, cls)`` samples, as tarfile writes it (end marker included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for key, image, label in samples:
            for name, data in ((f"{key}.png", image), (f"{key}.cls", label)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _shards(root: Path, train: list[bytes] | None = None, test: list[bytes] | None = None) -> Path:
    """train-0.tar and test-0.tar of 4 samples each, of the classes given (default a, b, a, b)."""
    labels = {"train": train or [b"a", b"b", b"a", b"b"], "test": test or [b"a", b"b", b"a", b"b"]}
    for split, classes in labels.items():
        _tar(root / f"{split}-0.tar", [(f"{i:02d}", _png(i), c) for i, c in enumerate(classes)])
    return root / "train-0.tar"


def _cut_in_data(shard: Path) -> None:
    with tarfile.open(shard) as tar:
        member = tar.getmembers()[2]  # the second sample's image
    shard.write_bytes(shard.read_bytes()[: member.offset_data + member.size // 2])


def _cut_at_member(shard: Path) -> None:
    with tarfile.open(shard) as tar:
        member = tar.getmembers()[3]
    shard.write_bytes(shard.read_bytes()[: member.offset_data + -(-member.size // 512) * 512])


def _empty(shard: Path) -> None:
    tarfile.open(shard, "w").close()


def _fifo(shard: Path) -> None:
    shard.unlink()
    os.mkfifo(shard)


def _facts(root: Path, **facts: object) -> None:
    (root / "dataset.json").write_text(json.dumps(facts), encoding="utf-8")


SHARD_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("cut-in-data", lambda r: _cut_in_data(r / "train-0.tar"), r"train-0.tar is corrupt: member 01.png is cut short: \d+ bytes from offset \d+, the file ends"),
    ("cut-at-member", lambda r: _cut_at_member(r / "train-0.tar"), r"train-0.tar is corrupt: cut short after member 01.cls: the tar's end marker is missing"),
    ("empty", lambda r: _empty(r / "test-0.tar"), r"test-0.tar is corrupt: holds no sample \(an empty tar\)"),
    ("fifo", lambda r: _fifo(r / "train-0.tar"), r"train-0.tar is corrupt: a FIFO \(named pipe\), not a shard file"),
    ("one-class", lambda r: (_shards(r, train=[b"a"] * 4), _facts(r, classes=["a", "b"])), r"the training shards .* hold one class \(a\)"),
    ("label-out-of-range", lambda r: (_shards(r, train=[b"0", b"1", b"7", b"0"]), _facts(r, classes=["a", "b"])),
     r"train-0.tar is corrupt: member 02.cls is '7', not one of the 2 training classes \['a', 'b'\]"),
    ("unknown-test-class", lambda r: _shards(r, test=[b"a", b"b", b"zebra", b"a"]), r"test-0.tar is corrupt: member 02.cls is 'zebra', not one of the 2 training classes"),
    ("test-lacks-a-class", lambda r: _shards(r, test=[b"a"] * 4), r"the test shards .*test-0.tar and the training shards hold different classes \(missing from test: \['b'\]"),
    ("not-an-image", lambda r: _tar(r / "train-0.tar", [("00", b"GIF89a-no", b"a"), ("01", _png(1), b"b")]), r"member 00.png is not a readable image"),
    ("bomb", lambda r: _tar(r / "train-0.tar", [("00", _png(0, size=40), b"a"), ("01", _png(1), b"b")]), r"member 00.png is 40x40 pixels, over PIL's decompression limit of 1024"),
    ("bomb-over-twice", lambda r: _tar(r / "train-0.tar", [("00", _png(0, size=64), b"a"), ("01", _png(1), b"b")]),
     r"member 00.png is over PIL's decompression limit \(Image size \(4096 pixels\) exceeds limit of 2048 pixels"),
]


@pytest.mark.parametrize(("breakage", "message"), [pytest.param(b, m, id=i) for i, b, m in SHARD_CASES])
def test_bad_shards_are_refused_before_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breakage: Callable[[Path], None], message: str) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024)  # 32x32: a bomb of 64x64 costs nothing here
    root = tmp_path / "shards"
    _shards(root)
    breakage(root)
    settings = default_settings(datasets=[f"wds:{root / 'train-0.tar'}"], data_root=tmp_path)
    with pytest.raises(SettingError, match=rf"^--dataset wds:{root / 'train-0.tar'}: .*{message}"):
        check_available(settings)


def test_good_shards_pass_the_same_scan(tmp_path: Path) -> None:
    _shards(tmp_path / "shards")
    check_available(default_settings(datasets=[f"wds:{tmp_path / 'shards' / 'train-0.tar'}"], data_root=tmp_path))


def _folder(root: Path) -> Path:
    datagen.write_imagefolder(root / "train", ("a", "b"), 2, size=8)
    datagen.write_imagefolder(root / "test", ("a", "b"), 1, size=8, seed=61)
    return root


FOLDER_CASES: list[tuple[str, Callable[[Path], None], str]] = [
    ("fifo", lambda r: os.mkfifo(r / "train" / "a" / "zz.png"), r"train/a/zz.png is a FIFO \(named pipe\), not an image file"),
    ("device-link", lambda r: (r / "train" / "b" / "zz.jpg").symlink_to("/dev/zero"), r"train/b/zz.jpg is a character device, not an image file"),
    ("broken-link", lambda r: (r / "test" / "b" / "zz.png").symlink_to(r / "gone.png"), r"test/b/zz.png is a broken link, not an image file"),
    ("not-an-image", lambda r: (r / "train" / "a" / "img_000.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really"), r"train/a/img_000.png is corrupt: unreadable image"),
    ("bomb", lambda r: (r / "train" / "a" / "img_000.png").write_bytes(_png(0, size=40)), r"img_000.png is corrupt: 40x40 pixels, over PIL's decompression limit of 1024"),
    ("bomb-over-twice", lambda r: (r / "test" / "a" / "img_004.png").write_bytes(_png(0, size=64)), r"img_004.png is corrupt: over PIL's decompression limit"),
    ("test-classes-differ", lambda r: datagen.write_imagefolder(r / "test", ("c",), 1, size=8), r"test and .*train hold different classes \(missing from test: \[\], only in test: \['c'\]\)"),
]


@pytest.mark.parametrize(("breakage", "message"), [pytest.param(b, m, id=i) for i, b, m in FOLDER_CASES])
def test_bad_image_folders_are_refused_before_any_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breakage: Callable[[Path], None], message: str) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024)
    root = _folder(tmp_path / "imgs")
    breakage(root)
    with pytest.raises(SettingError, match=rf"^--dataset imagefolder:{root}: .*{message}"):
        check_available(default_settings(datasets=[f"imagefolder:{root}"], data_root=tmp_path))


def test_to_wds_refuses_a_broken_png_and_leaves_no_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    root = _folder(tmp_path / "imgs")
    broken = root / "train" / "b" / "img_003.png"
    data = bytearray(broken.read_bytes())
    data[-20] ^= 0xFF  # inside the image data: its chunk's checksum no longer holds, the header still opens
    broken.write_bytes(bytes(data))
    assert main(["data", "to-wds", str(root), str(tmp_path / "out")]) == 2
    assert f"{broken} is corrupt: not a readable image" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.tar"))


# --- training that diverges, checkpoints that are not ours -----------------------------------------

def test_a_diverging_training_fails_naming_the_step_and_the_lr() -> None:
    from harness.data.types import TensorSplit
    from harness.training.loop import train
    from harness.training.recipes import default_recipe
    from harness.training.trained import TrainingDiverged

    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    split = TensorSplit(images, torch.arange(64) % 4, ("a", "b", "c", "d"))
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
    recipe = default_recipe("cnn", epochs=2, batch_size=16, warmup_epochs=0, hflip=False, lr=1e30)
    with pytest.raises(TrainingDiverged, match=r"^training diverged: the loss is (nan|inf|\S+e\+\d+) at optimiser step \d+ of 8 \(lr \S+e\+\d+\); lower --lr") as caught:
        train(model, split, split, recipe, device=torch.device("cpu"), measure_memory=False)
    assert outcome(caught.value) == ("fail", str(caught.value))  # the case fails with that line, the session goes on


@pytest.mark.parametrize(("content", "why"), [
    (b"not a checkpoint", r"UnpicklingError: not a checkpoint, or cut short"),
    (None, r"RuntimeError: PytorchStreamReader failed reading zip archive"),  # a real checkpoint cut in half
    (b"", r"EOFError: not a checkpoint, or cut short"),
])
def test_resume_over_an_unreadable_checkpoint_is_one_line(tmp_path: Path, content: bytes | None, why: str) -> None:
    path = tmp_path / "last.pt"
    if content is None:
        torch.save({"model": torch.zeros(1000)}, path)
        content = path.read_bytes()[:2000]
    path.write_bytes(content)
    with pytest.raises(CheckpointUnreadable, match=rf"^--resume: checkpoint {path} is unreadable \(.*{why}.*\); delete {path} to train this case from the start, or run without --resume$") as caught:
        load_checkpoint(path, None, nn.Linear(1, 1), None, None, None, 1, torch.device("cpu"))  # type: ignore[arg-type]
    assert "weights_only" not in str(caught.value) and "\n" not in str(caught.value)
    assert outcome(caught.value) == ("fail", str(caught.value))


def test_resume_over_another_program_s_torch_file(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "last.pt")
    with pytest.raises(CheckpointUnreadable, match=r"is not a training checkpoint of backbone-bench"):
        load_checkpoint(tmp_path / "last.pt", None, nn.Linear(1, 1), None, None, None, 1, torch.device("cpu"))  # type: ignore[arg-type]


# --- a killed site build --------------------------------------------------------------------------

def _dead_pid() -> int:
    pid = 2**22 - 1  # above the kernel's default pid_max of 32768 and below its ceiling; checked to be free
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_a_build_removes_the_temporary_folders_of_killed_builds_only(tmp_path: Path) -> None:
    from harness.results.site import clear_stale

    out = tmp_path / "site"
    dead, alive = _dead_pid(), os.getppid()
    names = {
        f".site.{dead}.abcd1234.tmp": False,  # a killed build's half-written site
        f".site.{dead}.efgh5678.old": False,  # a killed swap's previous site
        f".site.{alive}.ijkl9012.tmp": True,  # a build that is running now
        ".site.mnop3456.tmp": True,  # the old naming, recent: maybe a running build
        ".site.qrst7890.tmp": False,  # the old naming, hours old
        f".other.{dead}.uvwx1234.tmp": True,  # another --out's
        f".site.{dead}.notours.tmp": True,  # not mkdtemp's 8 characters
    }
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "index.html").write_text("x")
    hours_ago = time.time() - 3 * 3600
    os.utime(tmp_path / ".site.qrst7890.tmp", (hours_ago, hours_ago))
    removed = clear_stale(out)
    assert sorted(removed) == sorted(name for name, kept in names.items() if not kept)
    assert {p.name for p in tmp_path.iterdir()} == {name for name, kept in names.items() if kept}


# --- end to end: refused at configure time, no case runs --------------------------------------------

@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    monkeypatch.setenv("BACKBONE_BENCH_UNSAVED", str(tmp_path_factory.mktemp("unsaved")))
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\naddopts = --strict-markers --benchmark-storage=file://baselines\n")
    pytester.makepyfile(test_inference=(ROOT / "benchmarks" / "test_inference.py").read_text())
    return pytester


ONE_CASE = ("--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cpu", "--bench-time", "0.02", "-p", "no:cacheprovider", "test_inference.py")


@pytest.mark.parametrize(("args", "error"), [
    (("--benchmark-save=" + "x" * 300,), "ERROR: run name of 300 characters is too long: file systems take file names of at most 255 characters"),
    (("--benchmark-save=" + "x" * 230,), "ERROR: run name of 230 characters is too long"),
    (("--benchmark-json=-",), "ERROR: --benchmark-json=-: writing the run to stdout is not supported"),
    (("--benchmark-json=" + "j" * 245 + ".json",), "ERROR: --benchmark-json " + "j" * 245 + ".json: a file name of 250 characters is too long"),
    # argparse names the program by sys.argv[0]: "pytest", or "-c" inside an xdist worker.
    (("--bench-time=inf",), "error: argument --bench-time: bench-time must be a number in (0, 3600), got 'inf'"),
])
def test_refused_before_any_case(suite: pytest.Pytester, args: tuple[str, ...], error: str) -> None:
    result = suite.runpytest(*ONE_CASE[:-1], *args, ONE_CASE[-1])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert any(line.startswith(error) or line.endswith(": " + error) for line in result.errlines), result.errlines
    assert "test_inference" not in result.stdout.str() and not (suite.path / "baselines").exists()


def test_a_work_folder_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    from harness.results.space import check_writable

    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match=rf"^--checkpoint-dir {tmp_path / 'file'}: cannot write there \(Not a directory \(errno 20\)\)"):
        check_writable(tmp_path / "file", "--checkpoint-dir")
    with pytest.raises(StorageError, match=rf"^--feature-cache {tmp_path / 'file' / 'feats'}: cannot write there"):
        check_writable(tmp_path / "file" / "feats", "--feature-cache")
    assert check_writable(tmp_path / "new" / "deeper", "--feature-cache") == tmp_path  # created later, where it can be


def test_a_build_killed_mid_swap_gets_its_previous_site_back(tmp_path: Path) -> None:
    from harness.results.site import clear_stale

    old = tmp_path / f".site.{_dead_pid()}.abcd1234.old"
    (old / "site").mkdir(parents=True)
    (old / "site" / "index.html").write_text("the previous site")
    (tmp_path / f".site.{_dead_pid()}.efgh5678.tmp").mkdir()  # the new site, never renamed into place
    removed = clear_stale(tmp_path / "site")
    assert (tmp_path / "site" / "index.html").read_text() == "the previous site"
    assert any("its site put back" in line for line in removed) and {p.name for p in tmp_path.iterdir()} == {"site"}


@pytest.mark.parametrize(("exc", "line"), [
    (FileExistsError(17, "File exists", "/o/report"), "/o/report: file exists (errno 17); something is already there; pass a new path or remove it"),
    (OSError(28, "No space left on device", "/o/x.json"), "/o/x.json: no space left on device (errno 28); the disk is full; free some space or pass a path on another disk"),
    (NotADirectoryError(20, "Not a directory", "/o/f/x"), "/o/f/x: not a directory (errno 20); a file stands where a folder is needed on this path; pass another path"),
    (OSError(30, "Read-only file system", "/ro/x"), "/ro/x: read-only file system (errno 30); the file system is read-only; pass a path on a writable one"),
    (StorageError("could not save the run to /s: full; it was written to /f instead"), "could not save the run to /s: full; it was written to /f instead"),
    (OSError(28, "No space left on device"), "[Errno 28] No space left on device"),  # no path to name: as it is
])
def test_a_bare_file_system_error_names_the_path_and_the_fix(exc: OSError, line: str) -> None:
    from harness.cli.main import os_error_line

    assert os_error_line(exc) == line


def test_a_verb_s_output_where_a_file_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli.main import main

    (tmp_path / "file").write_text("")
    assert main(["report", str(SMOKE), "--out", str(tmp_path / "file")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'file'}: file exists (errno 17); something is already there; pass a new path or remove it\n"


# A case whose record comes out NaN (a broken metric, a clock gone wrong): injected after the case, as
# the plugin receives it.
POISON = """
import pytest
@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logreport(report):
    for key, value in report.user_properties:
        if key == "backbone_bench" and isinstance(value, dict) and "record" in value:
            value["record"]["latency_p50_ms"] = float("nan")
"""


def test_a_session_whose_case_recorded_nan_keeps_the_run_and_says_which(suite: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    unsaved = tmp_path_factory.mktemp("kept")
    monkeypatch.setenv("BACKBONE_BENCH_UNSAVED", str(unsaved))
    suite.makeconftest(CONFTEST + POISON)
    result = suite.runpytest(*ONE_CASE[:-1], "--benchmark-save=poisoned", "--benchmark-json=run.json", ONE_CASE[-1])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    text = result.stdout.str()
    assert "backbone-bench: the run was not saved: the run cannot be written as JSON (Out of range float values are not JSON compliant" in text
    assert "case 'inference/resnet18-cpu-bs1-32px-fp32' recorded latency_p50_ms = nan" in text
    (kept,) = unsaved.rglob("poisoned.nonfinite-*.json")
    assert f"backbone-bench: it was kept for inspection in {kept}" in text
    assert json.loads(kept.read_text())["benchmarks"][0]["extra_info"]["latency_p50_ms"] != json.loads(kept.read_text())["benchmarks"][0]["extra_info"]["latency_p50_ms"]  # NaN
    # Nothing half-written: pytest-benchmark < 5.3 opens --benchmark-json when it parses it (an empty file
    # stays), 5.3+ takes a path and nothing is created.
    json_path = suite.path / "run.json"
    assert not list((suite.path / "baselines").rglob("*.json")) and (not json_path.exists() or not json_path.stat().st_size)
    assert "INTERNALERROR" not in text + "\n".join(result.errlines)


def test_an_image_folder_this_user_cannot_read_is_named_not_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _folder(tmp_path / "imgs")
    real = Path.iterdir

    def denied(self: Path) -> Any:  # as a folder of mode 0300 does for a user who is not root
        if self == root / "train":
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(SettingError, match=rf"^--dataset imagefolder:{root}: dataset '.*': cannot read {root / 'train'} \(permission denied\)\. "
                                           r"Fix: give this user read access"):
        check_available(default_settings(datasets=[f"imagefolder:{root}"], data_root=tmp_path))


def test_a_shard_is_not_gated_against_the_whole() -> None:
    from harness.scale.shards import parse_shard

    with pytest.raises(SettingError, match=r"^--gate with --shard 2/3: a shard runs part of the cases, so its gate would judge only them; "
                                           r"gate the merged run .* or run python -m harness launch --gate BASELINE$"):
        default_settings(shard=parse_shard("2/3"), gate="main")
    assert default_settings(shard=parse_shard("1/1"), gate="main").gate == "main"  # one shard of one is the whole selection
