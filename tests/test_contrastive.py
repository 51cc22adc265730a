"""The contrastive protocol: a CLIP trained by the suite on image–caption pairs, saved so that the
zero-shot protocol reads the very model it trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.config.options import default_settings
from harness.kinds.train import cases, run_train_case
from harness.settings import Settings
from tests.test_clip import TINY

pytestmark = pytest.mark.xdist_group("clip")


def _settings(tmp: Path, token: str, protocols: list[str]) -> Settings:
    return default_settings(backbones=[token], protocols=protocols, subsets=["100"], devices=["cpu"], seeds=1, steps=6,
                            train_batch_sizes=[32], feature_cache=tmp / "features", checkpoint_dir=tmp / "ckpt")


def test_a_trained_clip_is_saved_and_zero_shot_reads_it_back_to_the_same_top1(tmp_path: Path) -> None:
    config = tmp_path / "tinyclip.json"
    config.write_text(json.dumps(TINY))
    settings = _settings(tmp_path, f"clip:{config}", ["contrastive"])
    [case] = [c.spec for c in cases(settings)]
    record = run_train_case(case, settings)
    assert record["steps_run"] == 6 and record["captions"] == "templates of the class names" and record["train_ips"] > 0
    assert 0 <= record["linear_top1"] <= 100 and record["head_init"] == "text tower (zero-shot)"
    checkpoint = Path(record["clip_checkpoint"])
    sidecar = json.loads(checkpoint.with_name(checkpoint.name + ".json").read_text())
    assert sidecar == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "input_size": 32, "interpolation": "bilinear"}  # random init: 0.5/0.5
    # The saved model, named by the record's token, gives the zero-shot protocol the same top-1.
    again = _settings(tmp_path, record["clip_token"], ["zeroshot"])
    [zero] = [c.spec for c in cases(again)]
    assert run_train_case(zero, again)["top1"] == record["top1"]


def test_contrastive_needs_a_text_tower(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "resnet10t", ["contrastive"])
    [case] = cases(settings)
    assert case.skip is not None and case.skip.startswith("contrastive needs a text tower and resnet10t is an image backbone")
