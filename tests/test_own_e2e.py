"""A team's own backbone through the whole path: the real cases run beside resnet18 from the team's
repository root, a code change between two runs read as "code digest changed" by compare while the
metrics are still judged, bad factories refused before any case, and ``python -m harness bench``'s command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from harness.__main__ import main
from harness.cli.bench import command
from tests.projects import write_project

TEAMNET = '''from torch import nn


def build(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))


build.family = "cnn"
build.edge = True


def wrong(num_classes=10):
    return build(3)


wrong.family = "cnn"
'''
FAST = ("--bench-time", "0.02", "-p", "no:cacheprovider", "--devices", "cpu", "--batch-sizes", "1", "--img-sizes", "32")


@pytest.fixture
def team(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytest project of the real cases whose root also holds the team's ``teamnet/model.py``."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    write_project(pytester.path)
    (pytester.path / "teamnet").mkdir()
    (pytester.path / "teamnet" / "__init__.py").write_text("")
    (pytester.path / "teamnet" / "model.py").write_text(TEAMNET)
    return pytester


def _cases(team: pytest.Pytester, save: str) -> dict[str, dict[str, object]]:
    run = json.loads(next((team.path / "baselines").glob(f"*/*_{save}.json")).read_text())
    return {b["extra_info"]["case_id"]: b["extra_info"] for b in run["benchmarks"]}


def test_an_own_backbone_is_profiled_beside_resnet18_and_a_code_change_is_named_by_compare(
        team: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("-m", "inference", "--backbones", "teamnet.model:build,resnet18", *FAST)
    assert team.runpytest_subprocess(*args, "--benchmark-save=first").ret == 0
    first = _cases(team, "first")
    own = first["inference/teamnet.model:build-cpu-bs1-32px-fp32"]
    assert (own["params"], own["family"], own["edge"], own["feature_layer"]) == (8 * 27 + 8 + 8 * 10 + 10, "cnn", True, "4")
    assert own["backbone_source"] == "teamnet.model:build" and own["backbone_file"] == str(team.path / "teamnet" / "model.py")
    assert "backbone_code_digest" not in first["inference/resnet18-cpu-bs1-32px-fp32"]
    (team.path / "teamnet" / "model.py").write_text(TEAMNET.replace("nn.ReLU()", "nn.GELU()"))  # same parameters, other code
    assert team.runpytest_subprocess(*args, "--benchmark-save=second").ret == 0
    second = _cases(team, "second")["inference/teamnet.model:build-cpu-bs1-32px-fp32"]
    assert second["backbone_shape_digest"] == own["backbone_shape_digest"] and second["params"] == own["params"]
    changed = f"code digest changed ({own['backbone_code_digest']} → {second['backbone_code_digest']})"
    capsys.readouterr()
    main(["compare", "first", "second", "--benchmark-storage", str(team.path / "baselines"), "--no-history"])
    rows = [line for line in capsys.readouterr().out.splitlines() if "teamnet.model:build" in line]
    assert rows and all(changed in row for row in rows)  # every metric row of the case judged, each saying so
    assert any(" params " in row and "not comparable" not in row for row in rows)
    assert not any(changed in line for line in capsys.readouterr().out.splitlines() if "resnet18" in line)


def test_a_factory_with_the_wrong_logits_stops_the_session_before_any_case(team: pytest.Pytester) -> None:
    result = team.runpytest_subprocess("-m", "inference", "--backbones", "resnet18,teamnet.model:wrong", *FAST)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert ("--backbones teamnet.model:wrong: built with num_classes=10, its forward at 32px returned (2, 3), not logits [N, 10]; "
            "size the classifier from the num_classes keyword") in result.stderr.str()
    assert "passed" not in result.stdout.str() and not (team.path / "baselines").exists()


def test_bench_runs_the_installed_cases_rooted_in_the_team_repository(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nbackbones = teamnet.model:build\n")
    cmd = command(["--", "-m", "inference"], tmp_path)
    cases = str(Path(__import__("backbone_bench_cases").__path__[0]))
    assert cmd[:4] == [sys.executable, "-m", "pytest", "-pharness.plugin"]
    assert cmd[-6:] == [f"--rootdir={tmp_path}", "-c", str(tmp_path / "pytest.ini"), cases, "-m", "inference"]
    assert "-pbackbone_bench_fixtures.train" in cmd
    assert "-c" not in command(["-c", "other.ini"], tmp_path)[4:-2]


def test_scratch_then_finetune_linear_knn_from_the_teams_own_checkpoint(team: pytest.Pytester) -> None:
    import hashlib

    common = ("-m", "train", "--dataset", "digits", "--subsets", "100", "--train-batch-sizes", "16", "--steps", "5", "--tune", "off", *FAST)
    assert team.runpytest_subprocess(*common, "--backbones", "teamnet.model:build", "--checkpoint-dir", "ckpt", "--benchmark-save=scratch").ret == 0
    checkpoint = next((team.path / "ckpt").glob("*/seed0/last.pt"))
    token = f"teamnet.model:build@{checkpoint}"
    result = team.runpytest_subprocess(*common, "--backbones", token, "--protocols", "finetune,linear,knn", "--benchmark-save=transfer")
    assert result.ret == 0
    cases = {e["protocol"]: e for e in _cases(team, "transfer").values()}
    assert sorted(cases) == ["finetune", "knn", "linear"]
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert {(e["backbone_name"], e["weights_sha256"], e["feature_layer"]) for e in cases.values()} == {("teamnet.model:build@last", sha, "4")}
    assert cases["finetune"]["head_init"] == "linear probe (LP-FT)" and all(0 <= e["top1"] <= 100 for e in cases.values())
