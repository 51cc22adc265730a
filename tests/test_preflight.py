"""The preflight: what a session names that this machine lacks, or cannot train, refused before any case."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.config.options import default_settings
from harness.config.preflight import check_available
from harness.errors import SettingError


def test_defaults_and_auto_pass() -> None:
    check_available(default_settings(backbones=["resnet18"]))


def test_a_device_the_machine_lacks_is_refused_unless_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SettingError) as info:
        check_available(default_settings(backbones=["resnet18"], devices=["cpu", "cuda:5"]))
    assert str(info.value) == ("--devices cuda:5: no CUDA device is visible (torch.cuda.is_available() is False); use --devices auto to run "
                               "what this machine has, or --devices cpu (or --skip-unavailable to skip its cases)")
    check_available(default_settings(backbones=["resnet18"], devices=["cuda"], skip_unavailable=True))


def test_a_dataset_missing_is_refused_unless_downloaded_or_skipped(tmp_path: Path) -> None:
    settings = dict(backbones=["resnet18"], datasets=["mnist"], data_root=tmp_path, subsets=["full"])
    with pytest.raises(SettingError, match=r"^--dataset mnist: dataset 'mnist' \(train split\) is not available offline: "):
        check_available(default_settings(**settings))
    check_available(default_settings(**settings, download=True))
    check_available(default_settings(**settings, skip_unavailable=True))


def test_batch_of_one_with_batchnorm_only_where_the_backbone_trains() -> None:
    with pytest.raises(SettingError, match=r"^--train-batch-sizes 1: resnet18 has BatchNorm"):
        check_available(default_settings(backbones=["resnet18"], train_batch_sizes=[32, 1]))
    check_available(default_settings(backbones=["resnet18"], train_batch_sizes=[1], protocols=["linear", "knn"]))
    check_available(default_settings(backbones=["deit_tiny_patch16_224"], train_batch_sizes=[1]))
    check_available(default_settings(backbones=["resnet18"], train_batch_sizes=[4], grad_accum=2))
