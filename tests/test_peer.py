"""scripts/peer_transfer.py, the hand check of the suite's transfer numbers: it must train on exactly
the images the suite trains on (its own code, not the suite's), and its comparison must read both files."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from harness.data.subsets import parse_subset, split_validation, subset_indices
from harness.training.selection import VAL_FRACTION

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "peer_transfer.py"


@pytest.fixture(scope="module")
def peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("peer_transfer", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_peer_shares_no_code_with_the_suite() -> None:
    assert "harness" not in SCRIPT.read_text().replace("no ``harness`` import", "")


def test_the_peer_trains_and_selects_on_the_suite_s_images(peer: ModuleType) -> None:
    # Digits 5-9 of the suite's training split, relabelled 0-4, as the transfer study's image folder holds them.
    from harness.data.datasets import load_split

    digits = load_split("digits", "train", img_size=8)  # type: ignore[arg-type]
    labels = (digits.labels[digits.labels >= 5] - 5).long()
    for per_class in (5, 20, 60):
        for seed in (0, 1, 2):
            ours = subset_indices(labels, parse_subset(f"{per_class}pc"), seed=seed, num_classes=5, dataset="digits59")
            fit, val = split_validation(ours, labels, fraction=VAL_FRACTION, seed=seed)
            theirs = peer.per_class_subset(labels.numpy(), per_class, seed)
            their_fit, their_val = peer.split_validation(theirs, labels.numpy(), seed)
            assert np.array_equal(ours.numpy(), theirs) and len(theirs) == 5 * per_class
            assert np.array_equal(fit.numpy(), their_fit) and np.array_equal(val.numpy(), their_val)
            assert len(their_val) == 5 * ((2 * per_class + 5) // 10)  # 20 % of each class, halves up: 1, 4, 12 a class


def _suite_case(backbone: str, protocol: str, subset: str, seeds: list[float]) -> dict[str, object]:
    return {"extra_info": {"kind": "train", "status": "ok", "backbone": backbone, "protocol": protocol,
                           "subset": f"digits59_{subset}", "train_size": 100, "top1_per_seed": seeds}}


def test_compare_prints_the_suite_against_the_peer(peer: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    peer_file, suite_file = tmp_path / "peer.json", tmp_path / "run.json"
    peer_file.write_text(json.dumps({"summary": [
        {"arch": "resnet18", "protocol": "linear", "subset": "20pc", "top1_mean": 90.0, "top1_std": 1.0},
        {"arch": "resnet18", "protocol": "finetune", "subset": "20pc", "top1_mean": 92.0, "top1_std": 0.5},
        {"arch": "resnet18", "protocol": "finetune", "subset": "60pc", "top1_mean": 95.0, "top1_std": 0.0}]}))
    suite_file.write_text(json.dumps({"benchmarks": [
        _suite_case("resnet18@resnet18_digits04", "linear", "20pc", [91.0, 92.0, 90.0]),
        _suite_case("resnet18@resnet18_digits04", "finetune", "20pc", [90.0, 91.0, 92.0]),
        {"extra_info": {"kind": "inference", "backbone": "resnet18"}}]}))
    monkeypatch.setattr(sys, "argv", ["peer_transfer.py", "--compare", str(peer_file), "--suite", str(suite_file)])
    peer.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[2:] == ["| resnet18 | linear | 20pc | 100 | 90.0 ± 1.0 | 91.0 ± 1.0 | +1.0 |",
                         "| resnet18 | finetune | 20pc | 100 | 92.0 ± 0.5 | 91.0 ± 1.0 | -1.0 |"]  # 60pc: the suite has no such case


def test_compare_needs_both_files(peer: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["peer_transfer.py", "--compare", str(tmp_path / "peer.json")])
    with pytest.raises(SystemExit) as exited:
        peer.main()
    assert exited.value.code == 2 and "--compare PEER.json needs --suite RUN.json" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["peer_transfer.py", "--compare", str(tmp_path / "peer.json"), "--suite", str(tmp_path / "run.json")])
    with pytest.raises(SystemExit) as exited:
        peer.main()
    assert exited.value.code == 2 and f"{tmp_path / 'peer.json'}: no such file" in capsys.readouterr().err
