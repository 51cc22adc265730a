"""Option parsers: a table of good values and a table of bad ones, each bad one naming the fix."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from harness.config.options import GATE_OPTIONS, OPTIONS, check_subsets, default_settings, settings_from
from harness.config.parsers import choice_list, int_list, number, parse_backbones, parse_devices, parse_threads, run_name, tolerances
from harness.contract import PRECISIONS
from harness.errors import SettingError
from harness.settings import Settings

GOOD: list[tuple[Callable[[str], Any], str, Any]] = [
    (int_list("batch-sizes"), "1,32", [1, 32]),
    (int_list("batch-sizes"), " 8 , 8,2\n4", [8, 2, 4]),
    (parse_devices, "cpu", ["cpu"]),
    (parse_devices, "cpu,cuda:1", ["cpu", "cuda:1"]),
    (choice_list("precision", PRECISIONS), "FP32,bf16", ["fp32", "bf16"]),
    (run_name, "main-2.1_x", "main-2.1_x"),
    (parse_threads, "auto", None),
    (parse_threads, "4", 4),
    (parse_backbones, "resnet18,edge", None),  # checked below
]

BAD: list[tuple[Callable[[str], Any], str, str]] = [
    (int_list("batch-sizes"), "0", "positive integer, got '0'"),
    (int_list("batch-sizes"), "1.5", "positive integer, got '1.5'"),
    (int_list("img-sizes"), "", "needs at least one positive integer"),
    (parse_devices, "gpu", "unknown device 'gpu' (did you mean cpu"),
    (parse_devices, "cuda:x", "unknown device 'cuda:x'"),
    (choice_list("precision", PRECISIONS), "fp61", "unknown precision 'fp61' (did you mean fp16"),
    (run_name, "my run", "invalid run name 'my run'"),
    (run_name, "../x", "invalid run name '../x'"),
    (tolerances, "latency:banana", "unknown metric 'latency'"),
    (tolerances, "latency_p50_ms:ten%", "cannot read amount 'ten%'"),
    (parse_threads, "-2", "threads must be a positive integer"),
    (parse_backbones, "vit_base_patch16_2244", "(did you mean vit_base_patch16_224"),
    (parse_backbones, "hybird", "(did you mean hybrid"),
]


@pytest.mark.parametrize(("parse", "text", "expected"), [g for g in GOOD if g[2] is not None or g[1] == "auto"])
def test_good_values(parse: Callable[[str], Any], text: str, expected: Any) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("parse", "text", "message"), BAD)
def test_bad_values_name_the_fix(parse: Callable[[str], Any], text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


def test_groups_expand_and_deduplicate() -> None:
    names = parse_backbones("resnet18,edge,resnet18,timm/convnext_atto".replace("timm/", ""))
    assert names[0] == "resnet18" and names.count("resnet18") == 1
    assert "mobilenetv3_large_100" in names and names[-1] == "convnext_atto"


def test_settings_merge_cli_over_ini_over_default() -> None:
    cli = {"batch_sizes": [4]}
    ini = {"batch_sizes": "1,2", "img_sizes": "64", "backbones": "resnet18", "devices": "cpu"}
    settings = settings_from(lambda field: cli.get(field), lambda key: ini.get(key, ""))
    assert settings.batch_sizes == [4] and settings.img_sizes == [64] and settings.backbones == ["resnet18"]
    assert settings.precisions == ["fp32"] and settings.num_classes == 10 and settings.subsets == ["full"]


def test_settings_fields_are_exactly_the_table_rows() -> None:
    # One table: a Settings field without a row (or a row without a field) is a default written twice.
    assert [f.name for f in dataclasses.fields(Settings)] == [o.field for o in OPTIONS]
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in dataclasses.fields(Settings))


def test_defaults_come_from_the_table_and_the_environment() -> None:
    settings = default_settings(backbones=["resnet18"])
    assert (settings.threads, settings.bench_time_s, settings.num_classes, settings.seeds) == (1, 1.0, 10, 1)
    assert settings.batch_sizes == [1, 32] and settings.devices == parse_devices("auto") and settings.augment is None
    assert str(settings.fail_on) == str(tolerances(""))
    env = {"BACKBONE_BENCH_CHECKPOINTS": "/tmp/ckpt"}
    from_env = settings_from(lambda field: None, lambda key: None, env=env)
    assert str(from_env.checkpoint_dir) == "/tmp/ckpt"
    with pytest.raises(TypeError, match="not settings fields: bench_time"):
        default_settings(bench_time=2.0)


def test_gate_rows_are_shared_with_the_compare_command() -> None:
    from harness.cli.main import parser as _parser

    compare = _parser()._subparsers._group_actions[0].choices["compare"]  # type: ignore[union-attr]
    flags = {s for action in compare._actions for s in action.option_strings}
    assert {f"--{o.name}" for o in GATE_OPTIONS} <= flags
    assert [o.name for o in GATE_OPTIONS] == ["fail-on", "fail-on-missing", "force", "no-history"]


def test_every_option_has_a_metavar_or_is_a_flag_and_a_default_or_none() -> None:
    for option in OPTIONS:
        assert option.flag or option.metavar, option.name
        if option.default is not None:
            option.parse(option.default)  # every default parses


@pytest.mark.parametrize(
    ("datasets", "subsets", "message"),
    [
        (["digits"], ["2k"], "subset 2k asks for 2000 images but digits has 1347 training images in 10 classes"),
        (["cifar100"], ["50"], "smaller than the number of classes: cifar100 has 50000 training images in 100 classes"),
        (["digits"], ["200pc"], "asks for 2000 images"),
    ],
)
def test_subset_sizes_checked_against_the_dataset(datasets: list[str], subsets: list[str], message: str) -> None:
    with pytest.raises(SettingError, match=message):
        check_subsets(datasets, subsets)
    check_subsets(["cifar10"], ["5k", "10k", "50k", "full", "50pc"])  # all fit


@pytest.mark.parametrize(
    ("parse", "good", "bad", "message"),
    [
        (number("bench-time"), "0.5", "0", "bench-time must be a number > 0, got '0'"),
        (number("weight-decay", low_inclusive=True), "0", "-1e-4", "weight-decay must be a number >= 0, got '-1e-4'"),
        (number("val-fraction", high=1.0), "0.1", "1", "val-fraction must be a number in (0, 1), got '1'"),
        (number("lr"), "3e-4", "nan", "lr must be a number > 0, got 'nan'"),
    ],
)
def test_number_bounds(parse: Callable[[str], float], good: str, bad: str, message: str) -> None:
    assert parse(good) == float(good)
    with pytest.raises(SettingError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(bad)


def test_every_help_screen_renders() -> None:
    # argparse %-formats help strings: an unescaped "10%" in an option's help crashed `--help`.
    import subprocess
    import sys

    commands = [["-m", "pytest", "--help"], *(["-m", "harness", verb, "--help"] for verb in ("compare", "report", "merge", "launch", "contract"))]
    for command in commands:
        done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr[-2000:])
    assert "latency_p50_ms:10%," in subprocess.run([sys.executable, "-m", "harness", "compare", "--help"], capture_output=True, text=True).stdout
