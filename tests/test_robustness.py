"""--robustness: corruptions are deterministic and exact where the truth is known, CE/mCE arithmetic on known
numbers, the option refuses bad names and severities before any case runs, and a run with robustness is
written, read back by compare (A/A passes, an injected drop is caught) and by the report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from harness.config import parsers
from harness.contract import CORRUPTION_GROUPS, CORRUPTIONS, METRICS
from harness.data.corruptions import FUNCTIONS, corrupt, corrupted_split, generator_seed, motion_kernel_size
from harness.data.types import TensorSplit
from harness.errors import SettingError
from harness.results.robustness import corruption_score, severity_curve
from harness.training.robustness import SeedRobustness, robustness_keys
from tests.test_roundtrip import Project, write_project


def _images(n: int = 6, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


# --- corruptions ---------------------------------------------------------------------------------

def test_every_row_has_its_function_and_every_group_names_rows() -> None:
    assert set(FUNCTIONS) == set(CORRUPTIONS)
    assert set(CORRUPTION_GROUPS["robot"]) == {"gaussian_noise", "shot_noise", "defocus_blur", "motion_blur", "fog", "brightness",
                                               "jpeg_compression", "low_light"}
    assert CORRUPTION_GROUPS["all"] == CORRUPTIONS and "low_light" not in CORRUPTION_GROUPS["imagenet-c"]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_a_corrupted_split_is_deterministic_and_changes_with_severity_and_seed(name: str) -> None:
    images = _images()
    first, again = corrupt(images, name, 3), corrupt(images, name, 3)
    assert first.dtype == torch.uint8 and first.shape == images.shape
    assert torch.equal(first, again)
    assert not torch.equal(first, images)
    assert not torch.equal(corrupt(images, name, 1), corrupt(images, name, 5))
    if name in ("gaussian_noise", "shot_noise", "impulse_noise", "fog", "low_light"):  # the random ones
        assert not torch.equal(first, corrupt(images, name, 3, seed=1))


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "low_light", "contrast", "defocus_blur", "motion_blur"])
def test_damage_grows_with_severity(name: str) -> None:
    images = _images(16)
    damage = [float((corrupt(images, name, s).float() - images.float()).abs().mean()) for s in (1, 3, 5)]
    assert damage[0] < damage[1] < damage[2]


def test_contrast_has_the_exact_cifar_c_value() -> None:
    # Half the pixels 0, half 255: the channel mean is 0.5, so severity 1 (c = 0.75) maps 0 -> 0.125, 1 -> 0.875.
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    images[..., 16:] = 255
    out = corrupt(images, "contrast", 1)
    assert set(out.unique().tolist()) == {32, 223}  # round(0.125 * 255) = 32, round(0.875 * 255) = 223


def test_a_flat_image_is_left_flat_by_blur_pixelate_and_contrast() -> None:
    images = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    for name in ("defocus_blur", "motion_blur", "pixelate", "contrast"):
        assert torch.equal(corrupt(images, name, 5), images), name


def test_the_seed_of_a_split_depends_on_corruption_severity_and_seed_only() -> None:
    seeds = {generator_seed(n, s, k) for n in CORRUPTIONS for s in (1, 2, 3, 4, 5) for k in (0, 1)}
    assert len(seeds) == len(CORRUPTIONS) * 10
    assert generator_seed("fog", 3, 0) == generator_seed("fog", 3, 0)


def test_motion_kernels_scale_with_the_evaluation_size() -> None:
    assert [motion_kernel_size(s, 1.0) for s in (1, 2, 3, 4, 5)] == [3, 5, 5, 7, 9]
    assert motion_kernel_size(5, 224 / 32) == 63  # 9 x 7 px at 224 px


def test_the_split_is_resized_before_it_is_corrupted() -> None:
    split = TensorSplit(_images(3, 28), torch.tensor([0, 1, 0]), ("a", "b"))
    out = corrupted_split(split, "brightness", 2, 32)
    assert out.images.shape == (3, 3, 32, 32) and torch.equal(out.labels, split.labels) and out.classes == ("a", "b")


def test_a_bad_name_or_severity_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown corruption 'fgo' \\(did you mean fog"):
        corrupt(_images(), "fgo", 1)
    with pytest.raises(ValueError, match="severity must be one of"):
        corrupt(_images(), "fog", 6)


# --- parse-time validation -------------------------------------------------------------------------

GOOD = [("robot", CORRUPTION_GROUPS["robot"]), ("fog, all", CORRUPTIONS), ("none", ()), ("JPEG_compression,fog", ("fog", "jpeg_compression"))]
BAD = [("fgo", "unknown corruption 'fgo' (did you mean fog?)"), ("robots", "did you mean robot"), ("", "robustness needs a corruption")]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_robustness_values(text: str, expected: tuple[str, ...]) -> None:
    assert parsers.robustness(text) == expected


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_robustness_values(text: str, message: str) -> None:
    with pytest.raises(SettingError, match=message.replace("(", "\\(").replace(")", "\\)").replace("?", "\\?")):
        parsers.robustness(text)


def test_severities() -> None:
    assert parsers.severities("5,1,3,3") == (1, 3, 5)
    for bad in ("0", "6", "x", "1.5", ""):
        with pytest.raises(SettingError, match="robust-severities"):
            parsers.severities(bad)


# --- the record and CE / mCE arithmetic ------------------------------------------------------------

def test_ce_mce_and_relative_mce_on_known_numbers() -> None:
    # a: errors 10 + 20 = 30 against the reference's 20 + 40 = 60 -> CE 50; above the clean errors (5 and 10):
    #    (5 + 15) / (10 + 30) -> 50. b: 100 / 50 -> CE 200; (45 + 45) / (15 + 15) -> 300.
    score = corruption_score({"a": [90, 80], "b": [50, 50]}, 95.0, {"a": [80, 60], "b": [75, 75]}, 90.0)
    assert score.ce == {"a": pytest.approx(50.0), "b": pytest.approx(200.0)}
    assert score.relative_ce == {"a": pytest.approx(50.0), "b": pytest.approx(300.0)}
    assert score.mce == pytest.approx(125.0) and score.relative_mce == pytest.approx(175.0)
    assert score.undefined == []


def test_the_reference_scores_100_and_an_undefined_ce_is_left_out() -> None:
    table = {"a": [80.0, 60.0], "b": [75.0, 75.0]}
    own = corruption_score(table, 90.0, table, 90.0)
    assert own.mce == pytest.approx(100.0) and own.relative_mce == pytest.approx(100.0)
    # The reference lost nothing under b (top-1 = clean): b's relative CE is undefined, the mean is a's alone.
    score = corruption_score({"a": [70, 70], "b": [80, 80]}, 90.0, {"a": [80, 80], "b": [90, 90]}, 90.0)
    assert score.relative_ce["b"] is None and score.undefined == ["b"]
    assert score.relative_mce == pytest.approx(200.0)  # (20 + 20) / (10 + 10)


def test_record_keys_fold_the_seeds() -> None:
    seeds = [SeedRobustness({"fog": [80.0, 60.0], "contrast": [90.0, 70.0]}, 2.0),
             SeedRobustness({"fog": [70.0, 50.0], "contrast": [90.0, 90.0]}, 4.0)]
    keys = robustness_keys(seeds, [1, 5], clean_eval_s=0.5)
    assert keys["robustness"]["top1"] == {"fog": [75.0, 55.0], "contrast": [90.0, 80.0]}
    assert keys["robust_top1_per_seed"] == [75.0, 75.0] and keys["robust_top1"] == 75.0
    assert keys["robust_worst"] == "fog" and keys["robust_worst_top1"] == 65.0
    assert keys["robust_time_s"] == 3.0 and keys["robust_cost_x"] == 6.0
    assert METRICS["robust_top1"].samples == "robust_top1_per_seed"
    row = {"table": keys["robustness"]["top1"], "severities": [1, 5], "top1": 95.0}
    assert severity_curve(row) == ([0, 1, 5], [95.0, 82.5, 67.5])


# --- end to end on the embedded digits -------------------------------------------------------------

ROBUST = ("-m", "train", "--backbones", "resnet10t", "--devices", "cpu", "--subsets", "100", "--protocols", "linear,scratch", "--steps", "4",
          "--tune", "off", "--robustness", "gaussian_noise,fog", "--robust-severities", "1,5", "-p", "no:cacheprovider")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    project = Project(write_project(tmp_path_factory.mktemp("robust")))
    first = project.pytest(*ROBUST, "--benchmark-save=robust")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    yield project


def test_a_run_with_robustness_is_written_and_read_back(project: Project, tmp_path: Path) -> None:
    [saved] = project.runs()
    cases = {b["extra_info"]["protocol"]: b["extra_info"] for b in json.loads(saved.read_text())["benchmarks"]}
    assert set(cases) == {"linear", "scratch"}
    for case in cases.values():
        assert case["settings"]["robustness"] == {"corruptions": ["gaussian_noise", "fog"], "severities": [1, 5], "seed": 0}
        table = case["robustness"]["top1"]
        assert list(table) == ["gaussian_noise", "fog"] and all(len(v) == 2 for v in table.values())
        assert case["robust_top1"] == pytest.approx(sum(v for values in table.values() for v in values) / 4)
        assert case["robust_worst"] in table and case["robust_time_s"] > 0
    features = {p.name for p in (project.path / ".bench-features").rglob("*.pt")}
    assert sum("-fog-s5-seed0-" in name for name in features) == 1  # the corrupted split's features are cached
    report = project.harness("report", "robust", "--out", str(tmp_path / "report"), "--max-mce", "1000")
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Robustness to camera corruptions" in text and "mCE (%)" in text and "reference resnet10t" in text
    assert (tmp_path / "report" / "robustness_digits.png").is_file()
    site = project.harness("site", "--out", str(tmp_path / "site"))
    assert site.returncode == 0, site.stderr
    [page] = (tmp_path / "site").glob("*/train/*_robust.html")
    html = page.read_text()
    assert "digits: robustness to camera corruptions" in html and "robust_0" in html and "Worst corruption" in html


def test_a_second_run_passes_the_gate_and_an_injected_drop_is_caught(project: Project) -> None:
    again = project.pytest(*ROBUST, "--gate", "robust", "--benchmark-save=again")
    assert again.returncode == 0, again.stdout[-3000:]
    assert "robust_top1" in again.stdout or "OK:" in again.stdout
    [_, second] = project.runs()
    doc = json.loads(second.read_text())
    for bench in doc["benchmarks"]:
        extra = bench["extra_info"]
        extra["robust_top1_per_seed"] = [v - 5.0 for v in extra["robust_top1_per_seed"]]
        extra["robust_top1"] -= 5.0
    dropped = project.path / "dropped.json"
    dropped.write_text(json.dumps(doc))
    compared = project.harness("compare", "robust", str(dropped))
    assert compared.returncode == 1, compared.stdout + compared.stderr
    assert "robust_top1" in compared.stdout and "regression" in compared.stdout


@pytest.mark.parametrize(("args", "message"), [
    (("--robustness", "fgo"), "unknown corruption 'fgo' (did you mean fog?)"),
    (("--robust-severities", "1,6"), "robust-severities entry '6' is not a severity: use integers 1-5"),
    (("--protocols", "zeroshot"), "runs none of them"),
])
def test_bad_robustness_input_is_refused_before_any_case_runs(project: Project, args: tuple[str, ...], message: str) -> None:
    result = project.pytest(*ROBUST, *args)
    assert result.returncode == 4, result.stdout[-2000:] + result.stderr[-2000:]
    assert message in result.stderr
    assert "passed" not in result.stdout and "failed" not in result.stdout
