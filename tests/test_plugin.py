"""End-to-end tests of the pytest plugin with ``pytester``: matrix, ids, markers, bad input, saving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.projects import CONFTEST

ROOT = Path(__file__).resolve().parents[1]
# Short timing keeps each end-to-end case well under a second on a busy 2-core machine.
FAST = ("--bench-time", "0.02", "-p", "no:cacheprovider")


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A copy of the real benchmark cases with the project's conftest, storage in the tmp dir."""
    # When this suite itself runs under xdist, the inner sessions must still time with
    # pytest-benchmark (which disables itself whenever it sees an xdist worker variable).
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\naddopts = --strict-markers --benchmark-storage=file://baselines\n")
    for name in ("test_inference.py", "test_train.py"):
        pytester.makepyfile(**{name[:-3]: (ROOT / "benchmarks" / name).read_text()})
    return pytester


def _ids(result: pytest.RunResult) -> list[str]:
    return sorted(line.split("[", 1)[1].rstrip("]") for line in result.outlines if "::test_inference[" in line)


def test_ids_read_backbone_device_batch_size_precision(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--collect-only", "-q", "--backbones", "resnet18,deit_small_patch16_224", "--batch-sizes", "1,8", "--devices", "cpu", "test_inference.py")
    assert _ids(result) == [
        "deit_small_patch16_224-cpu-bs1-32px-fp32",
        "deit_small_patch16_224-cpu-bs8-32px-fp32",
        "resnet18-cpu-bs1-32px-fp32",
        "resnet18-cpu-bs8-32px-fp32",
    ]


def test_keyword_and_marker_selection(suite: pytest.Pytester) -> None:
    args = ("--collect-only", "-q", "--backbones", "resnet18,resnet50,pvt_v2_b0", "--batch-sizes", "1,32", "--devices", "cpu", "test_inference.py")
    assert _ids(suite.runpytest(*args, "-k", "cpu and bs1")) == ["pvt_v2_b0-cpu-bs1-32px-fp32", "resnet18-cpu-bs1-32px-fp32", "resnet50-cpu-bs1-32px-fp32"]
    # jetson: edge-tagged backbones (resnet18, pvt_v2_b0; not resnet50) at batch 1.
    assert _ids(suite.runpytest(*args, "-m", "jetson")) == ["pvt_v2_b0-cpu-bs1-32px-fp32", "resnet18-cpu-bs1-32px-fp32"]
    assert _ids(suite.runpytest(*args, "-m", "transformer")) == ["pvt_v2_b0-cpu-bs1-32px-fp32", "pvt_v2_b0-cpu-bs32-32px-fp32"]
    assert len(_ids(suite.runpytest(*args, "-m", "smoke"))) == 3


def test_family_groups_expand_from_the_registry(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--collect-only", "-q", "--backbones", "hybrid", "--batch-sizes", "1", "--devices", "cpu", "test_inference.py")
    assert [i.split("-")[0] for i in _ids(result)] == ["coatnet_0_rw_224", "fastvit_t8", "mobilevit_xs", "poolformer_s12"]


def test_ini_pins_the_matrix_and_the_command_line_overrides_it(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\nbackbones = resnet18\nbatch_sizes = 4\nimg_sizes = 64\ndevices = cpu\n")
    assert _ids(suite.runpytest("--collect-only", "-q", "test_inference.py")) == ["resnet18-cpu-bs4-64px-fp32"]
    assert _ids(suite.runpytest("--collect-only", "-q", "--batch-sizes", "2", "test_inference.py")) == ["resnet18-cpu-bs2-64px-fp32"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--backbones", "resnet19"), "unknown backbone 'resnet19' (did you mean resnet18, "),
        (("--backbones", "convnext_tinyy"), "convnext_tiny"),
        (("--batch-sizes", "0"), "batch-sizes entry must be a positive integer, got '0'"),
        (("--batch-sizes", "1,x"), "batch-sizes entry must be a positive integer, got 'x'"),
        (("--img-sizes", "-32"), "img-sizes entry must be a positive integer"),
        (("--devices", "tpu"), "unknown device 'tpu' (did you mean cpu?); valid: cpu, cuda, cuda:N, mps"),
        (("--precisions", "fp64"), "unknown precision 'fp64'"),
        (("--runtimes", "tensorrt"), "valid: eager, compile, onnxruntime, onnxruntime-int8"),
        (("--subsets", "5q"), "'500', '5k'"),
        (("--subsets", "5"), "smaller than the number of classes"),
        (("--subsets", "2k"), "digits has 1347 training images"),
        (("--dataset", "cifar11"), "cifar10"),
    ],
)
def test_bad_input_is_a_usage_error_naming_the_fix(suite: pytest.Pytester, args: tuple[str, ...], message: str) -> None:
    result = suite.runpytest("--collect-only", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_bad_ini_value_names_the_key(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\nbatch_sizes = 1,zero\n")
    result = suite.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "pytest.ini [batch_sizes]" in result.stderr.str()


NO_CUDA = "no CUDA device is visible (torch.cuda.is_available() is False)"
FIX_DEVICES = "use --devices auto to run what this machine has, or --devices cpu (or --skip-unavailable to skip its cases)"
ALL_SKIPPED_LINE = "*1 skipped, 1 run measured nothing: every benchmark case skipped in *"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:5"])
def test_an_explicit_device_this_machine_lacks_is_a_usage_error_before_any_case(suite: pytest.Pytester, device: str) -> None:
    result = suite.runpytest("--backbones", "resnet18", "--batch-sizes", "1", "--devices", device, "test_inference.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == f"ERROR: --devices {device}: {NO_CUDA}; {FIX_DEVICES}"
    assert "test_inference" not in result.stdout.str()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_skip_unavailable_skips_the_device_and_a_session_of_skips_exits_5(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-rs", "--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cuda", "--skip-unavailable", "test_inference.py")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["backbone-bench: all 1 selected benchmark case(s) skipped, nothing was measured (exit 5); -rs shows each reason",
                                 f"SKIPPED [[]1[]] test_inference.py: {NO_CUDA}"])
    assert result.outlines[-1].strip("= ").startswith("1 skipped, 1 run measured nothing: every benchmark case skipped in ")


def test_auto_runs_what_the_machine_has_and_exits_0(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--backbones", "resnet18", "--batch-sizes", "1", "--devices", "auto", "-m", "not gpu", *FAST, "test_inference.py")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)
    assert "measured nothing" not in result.stdout.str()


def test_cpu_fp16_is_a_skip_with_the_reason_and_nothing_measured_exits_5(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-rs", "--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cpu", "--precisions", "fp16", "test_inference.py")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*fp16 is not a deployment precision on CPU*", ALL_SKIPPED_LINE])


def test_a_session_with_one_case_measured_exits_0_though_others_skipped(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cpu", "--precisions", "fp32,fp16", *FAST, "test_inference.py")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)


CONTRACT_KEYS = {
    "kind", "backbone", "family", "device", "batch_size", "img_size", "num_classes", "precision", "threads", "params",
    "gmacs", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_ips", "peak_mem_bytes",
}


def _saved(suite: pytest.Pytester) -> list[Path]:
    return sorted((suite.path / "baselines").glob("*/*.json"))


def test_save_writes_the_contract_and_never_overwrites(suite: pytest.Pytester) -> None:
    args = ("--backbones", "resnet18,regnetx_002", "--batch-sizes", "1", "--devices", "cpu", *FAST, "test_inference.py")
    suite.runpytest(*args, "--benchmark-save=first").assert_outcomes(passed=2)
    [first] = _saved(suite)
    assert first.name == "0001_first.json"
    run = json.loads(first.read_text())
    assert run["machine_info"]["baseline_key"] == first.parent.name
    assert {"torch", "torchvision", "timm", "fvcore", "cpu_model", "cuda", "gpu_name"} <= set(run["machine_info"])
    cases = {b["extra_info"]["case_id"]: b for b in run["benchmarks"]}
    assert set(cases) == {"inference/resnet18-cpu-bs1-32px-fp32", "inference/regnetx_002-cpu-bs1-32px-fp32"}
    resnet = cases["inference/resnet18-cpu-bs1-32px-fp32"]["extra_info"]
    assert CONTRACT_KEYS <= set(resnet)
    assert resnet["params"] == 11_181_642  # resnet18 with a 10-class head
    assert resnet["latency_p50_ms"] <= resnet["latency_p90_ms"] <= resnet["latency_p99_ms"]
    assert len(resnet["latency_samples_ms"]) == cases["inference/resnet18-cpu-bs1-32px-fp32"]["stats"]["rounds"] >= 20
    before = first.read_bytes()

    suite.runpytest(*args, "--benchmark-save=first").assert_outcomes(passed=2)
    assert [p.name for p in _saved(suite)] == ["0001_first.json", "0002_first.json"]
    assert first.read_bytes() == before


def test_pytest_benchmark_compare_reads_the_saved_run(suite: pytest.Pytester) -> None:
    suite.runpytest("--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cpu", *FAST, "--benchmark-save=x", "test_inference.py")
    listing = subprocess.run(
        [sys.executable, "-m", "pytest_benchmark", "--storage", "file://baselines", "compare", "0001", "--columns=median,rounds"],
        cwd=suite.path, capture_output=True, text=True, check=True,
    )
    assert "test_inference[resnet18-cpu-bs1-32px-fp32]" in listing.stdout


def test_a_failing_case_is_recorded_as_failed_and_the_session_goes_on(suite: pytest.Pytester) -> None:
    suite.makeconftest(
        CONFTEST
        + "import pytest, torch\n"
        "@pytest.fixture(autouse=True)\n"
        "def _oom_for_regnet(request, monkeypatch):\n"
        "    if 'regnetx_002' in request.node.name:\n"
        "        import harness.kinds.inference as inf\n"
        "        def boom(*a, **k): raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')\n"
        "        monkeypatch.setattr(inf, 'peak_bytes', boom)\n"
    )
    result = suite.runpytest("--backbones", "regnetx_002,resnet18", "--batch-sizes", "1", "--devices", "cpu", *FAST, "--benchmark-json=run.json", "test_inference.py")
    result.assert_outcomes(passed=1, failed=1)
    run = json.loads((suite.path / "run.json").read_text())
    assert [b["extra_info"]["backbone"] for b in run["benchmarks"]] == ["resnet18"]
    [failed] = run["backbone_bench"]["failed"]
    assert failed["extra_info"]["status"] == "failed"
    assert failed["extra_info"]["error"] == "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert failed["extra_info"]["settings"]["threads"] == 1 and failed["extra_info"]["settings_digest"]


def test_benchmark_json_writes_the_path_it_names_outside_the_working_directory(
        suite: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    # pytest-benchmark < 5.3 hands over an open file, 5.3+ a Path: both must write where the user
    # said, not the path's last component in the working directory. tox -e newest runs this on 5.3+.
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "nested" / "run.json"
    elsewhere.parent.mkdir()
    assert not elsewhere.is_relative_to(suite.path)
    result = suite.runpytest("--backbones", "resnet18", "--batch-sizes", "1", "--devices", "cpu", *FAST, f"--benchmark-json={elsewhere}",
                             "test_inference.py")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"backbone-bench: wrote 1 case(s) to {elsewhere}"])
    assert [b["extra_info"]["backbone"] for b in json.loads(elsewhere.read_text())["benchmarks"]] == ["resnet18"]
    assert not (suite.path / "run.json").exists() and not list(suite.path.glob("*.json"))


def test_xdist_saves_the_same_cases_and_keys_as_a_serial_run(suite: pytest.Pytester) -> None:
    args = ("--backbones", "resnet18,regnetx_002,lcnet_100", "--batch-sizes", "1", "--devices", "cpu", *FAST, "test_inference.py")
    suite.runpytest(*args, "--benchmark-save=serial").assert_outcomes(passed=3)
    suite.runpytest_subprocess(*args, "-n", "2", "--benchmark-save=parallel").assert_outcomes(passed=3)
    serial, parallel = (json.loads(p.read_text()) for p in _saved(suite))
    keys = lambda run: {b["extra_info"]["case_id"]: sorted(b["extra_info"]) for b in run["benchmarks"]}  # noqa: E731
    assert keys(serial) == keys(parallel) and len(keys(serial)) == 3
    assert parallel["machine_info"]["baseline_key"] == serial["machine_info"]["baseline_key"]


TRAIN = ("-m", "train", "--backbones", "resnet18", "--devices", "cpu", "--epochs", "1", "--train-batch-sizes", "8", *FAST, "test_train.py")


def _train_record(suite: pytest.Pytester) -> dict[str, object]:
    [bench] = json.loads((suite.path / "run.json").read_text())["benchmarks"]
    return dict(bench["extra_info"])


def test_training_reads_generated_mnist_idx_files_through_data_root(suite: pytest.Pytester) -> None:
    from tests.datagen import write_mnist

    write_mnist(suite.path / "data", n_train=40, n_test=20)
    result = suite.runpytest(*TRAIN, "--dataset", "mnist", "--data-root", "data", "--subsets", "20", "--benchmark-json=run.json")
    result.assert_outcomes(passed=1)
    record = _train_record(suite)
    assert record["case_id"] == "train/resnet18-mnist_20-cpu-bs8-32px-fp32"
    assert record["train_size"] == 20 and record["test_size"] == 20
    counts = record["class_counts"]
    assert isinstance(counts, dict) and list(counts.values()) == [2] * 10 and "0 - zero" in counts  # torchvision's class names


def test_training_reads_generated_cifar10_batches_and_an_image_folder(suite: pytest.Pytester) -> None:
    from tests.datagen import write_cifar10, write_imagefolder

    write_cifar10(suite.path / "data", per_batch=20, n_test=30)  # 100 training images
    result = suite.runpytest(*TRAIN, "--dataset", "cifar10", "--data-root", "data", "--skip-checksums", "--subsets", "50", "--benchmark-json=run.json")
    result.assert_outcomes(passed=1)
    assert _train_record(suite)["train_size"] == 50
    classes = ("bin", "box", "can")
    write_imagefolder(suite.path / "robot" / "train", classes, 8)
    write_imagefolder(suite.path / "robot" / "val", classes, 4, seed=61)
    result = suite.runpytest(*TRAIN, "--dataset", f"imagefolder:{suite.path / 'robot'}", "--subsets", "full", "--benchmark-json=run.json")
    result.assert_outcomes(passed=1)
    record = _train_record(suite)
    assert record["case_id"] == "train/resnet18-imagefolder-robot_full-cpu-bs8-32px-fp32"
    assert record["class_counts"] == {"bin": 8, "box": 8, "can": 8} and record["test_size"] == 12


@pytest.mark.parametrize(("dataset", "message"), [
    ("cifar10", "ERROR: --dataset cifar10: dataset 'cifar10' (train split) is not available offline: nowhere/cifar-10-batches-py does not exist "
                "(expected layout: nowhere/cifar-10-batches-py). Fix: pass --data-root PATH, set the environment variable BACKBONE_BENCH_DATA=PATH, "
                "or pass --download to fetch it (about 163 MB) (or --skip-unavailable to skip its cases)"),
    ("imagefolder:/nonexistent",
     "ERROR: --dataset imagefolder:/nonexistent: dataset 'imagefolder:/nonexistent' (train split): folder /nonexistent does not exist "
     "(relative paths are taken under the data root nowhere). Fix: pass an absolute path after 'imagefolder:', or put the folder under "
     "the data root (--data-root PATH or BACKBONE_BENCH_DATA=PATH) (or --skip-unavailable to skip its cases)"),
])
def test_a_dataset_named_but_absent_is_a_usage_error_naming_the_path_and_the_fix(suite: pytest.Pytester, dataset: str, message: str) -> None:
    result = suite.runpytest(*TRAIN, "--dataset", dataset, "--data-root", "nowhere", "--subsets", "500")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == message


def test_skip_unavailable_keeps_a_missing_dataset_a_skip_naming_the_path_and_the_fix(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-rs", *TRAIN, "--dataset", "cifar10", "--data-root", "nowhere", "--subsets", "500", "--skip-unavailable")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*not available offline: nowhere/cifar-10-batches-py*--data-root PATH*--download*", ALL_SKIPPED_LINE])


def test_pretrained_weights_not_cached_are_a_usage_error(suite: pytest.Pytester) -> None:
    from harness.backbones.weights import find_cached, parse_backbone

    if find_cached(parse_backbone("resnet50.a1_in1k")) is not None:
        pytest.skip("resnet50.a1_in1k is cached on this machine")
    result = suite.runpytest(*TRAIN[:2], "--backbones", "resnet50.a1_in1k", "--protocols", "linear", "test_train.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = result.stderr.lines[0]
    assert line.startswith("ERROR: --backbones resnet50.a1_in1k: not cached; looked in ")
    assert line.endswith("; fetch: python -m harness weights --download resnet50.a1_in1k, or pass --download (or --skip-unavailable to skip its cases)")


def test_a_misspelt_marker_is_a_usage_error_naming_the_closest_markers(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "infrence and cpu", "test_inference.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        "ERROR: -m 'infrence and cpu': no marker named 'infrence' (did you mean inference?), 'cpu' (did you mean gpu?); "
        "the benchmark markers are inference, train, plan, dense, cnn, transformer, hybrid, edge, gpu, jetson, smoke, slow "
        "(pytest --markers lists all; -k selects by test id, e.g. -k cpu)")


def test_declared_markers_in_any_expression_select_as_before(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--collect-only", "-q", "--backbones", "resnet18", "--devices", "cpu", "-m", "not (slow or gpu) and inference", "test_inference.py")
    assert result.ret == pytest.ExitCode.OK


IMG_EXTENSIONS = ".jpg, .jpeg, .png, .ppm, .bmp, .pgm, .tif, .tiff, .webp"


def test_an_image_folder_of_one_class_is_refused_before_any_case(suite: pytest.Pytester) -> None:
    from tests.datagen import write_imagefolder

    folder = suite.path / "one"
    write_imagefolder(folder, ("robot",), 8)
    result = suite.runpytest(*TRAIN, "--dataset", f"imagefolder:{folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: --dataset imagefolder:{folder}: dataset 'imagefolder:{folder}': {folder} holds one class (robot); a classifier needs at "
        f"least 2 classes. Fix: add a folder of images per class, {folder}/<class name>/<image> with extensions {IMG_EXTENSIONS}")


def test_an_empty_image_folder_is_called_empty_even_with_skip_unavailable(suite: pytest.Pytester) -> None:
    folder = suite.path / "empty"
    folder.mkdir()
    result = suite.runpytest(*TRAIN, "--dataset", f"imagefolder:{folder}", "--skip-unavailable")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == (
        f"ERROR: --dataset imagefolder:{folder}: dataset 'imagefolder:{folder}': {folder} is empty: it holds no image. "
        f"Fix: put images of each class in {folder}/<class name>/<image> with extensions {IMG_EXTENSIONS}")


def test_a_corrupt_image_fails_its_case_with_one_message_naming_the_file(suite: pytest.Pytester) -> None:
    from tests.datagen import write_imagefolder

    folder = suite.path / "bad"
    write_imagefolder(folder, ("bin", "box"), 8)
    broken = sorted((folder / "bin").iterdir())[0]
    # Its header reads (so the session's scan, which reads headers only, lets it through); its pixels are cut off.
    # A file that is no image at all is refused before any case (tests/test_hostile.py).
    broken.write_bytes(broken.read_bytes()[:60])
    result = suite.runpytest(*TRAIN, "--dataset", f"imagefolder:{folder}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # Once in the failure's report (pytest's short summary repeats it, cut to the terminal's width unless CI is set).
    report = out.split("= FAILURES =")[1].split("short test summary info")[0]
    assert report.count("is corrupt: unreadable image") == 1, out
    assert "The above exception" not in out and "During handling" not in out
    result.stdout.fnmatch_lines([f"corrupt dataset: dataset 'imagefolder:{folder}': {broken} is corrupt: unreadable image (*). Fix: delete or replace {broken}."])


def test_a_training_batch_of_one_with_batchnorm_is_refused_before_any_case(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "train", "--backbones", "resnet18", "--train-batch-sizes", "1", "test_train.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == "ERROR: --train-batch-sizes 1: resnet18 has BatchNorm, which cannot train on one image per batch; use --train-batch-sizes 2 or more"


def test_micro_batches_of_one_with_batchnorm_are_refused(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "train", "--backbones", "resnet18", "--train-batch-sizes", "8", "--grad-accum", "8", "test_train.py")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == ("ERROR: --train-batch-sizes 8 with --grad-accum 8 (micro-batches of 1): resnet18 has BatchNorm, which cannot "
                                      "train on one image per batch; use --train-batch-sizes 16 or more (or a smaller --grad-accum)")


def test_a_training_batch_of_one_without_batchnorm_or_with_frozen_features_is_allowed(suite: pytest.Pytester) -> None:
    for args in (("--backbones", "deit_tiny_patch16_224"), ("--backbones", "resnet18", "--protocols", "linear")):
        result = suite.runpytest("--collect-only", "-q", "-m", "train", *args, "--train-batch-sizes", "1", "test_train.py")
        assert result.ret == pytest.ExitCode.OK, result.stderr.str()
