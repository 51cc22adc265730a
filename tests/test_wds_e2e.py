"""A training case on ``wds:`` shards is saved and read back by ``compare`` and ``report``, and gives the
top-1 of the image folder the shards were written from (same images, same subset, same seed)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests import datagen
from tests.projects import write_project
from tests.test_roundtrip import Project

pytestmark = pytest.mark.xdist_group("wds")
# 200 training digits; 50 of them at 20 steps of batch 16 train in seconds on 2 cores.
LIMIT = 200
MATRIX = ("-m", "train", "--backbones", "resnet10t", "--subsets", "50", "--seeds", "1", "--steps", "20", "--img-sizes", "32",
          "--train-batch-sizes", "16", "--devices", "cpu", "-p", "no:cacheprovider")
IDS = ("train/resnet10t-imagefolder-folder_50-cpu-bs16-32px-fp32", "train/resnet10t-wds-shards_50-cpu-bs16-32px-fp32")


def test_a_wds_run_is_saved_read_back_and_matches_its_folder(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    project = Project(write_project(tmp_path / "project"))
    folder, shards = tmp_path / "folder", tmp_path / "shards"
    datagen.write_digits_folder(folder, limit=LIMIT)
    written = project.harness("data", "to-wds", str(folder), str(shards), "--shard-size", "64")
    assert written.returncode == 0, written.stderr
    assert written.stdout.splitlines()[-1] == f"--dataset wds:{shards}/train-{{000000..000003}}.tar"
    dataset = f"imagefolder:{folder},wds:{shards}/train-{{000000..000003}}.tar"
    done = project.pytest(*MATRIX, "--dataset", dataset, "--data-root", str(tmp_path / "root"), "--benchmark-save=wds")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    [saved] = project.runs()
    cases = {b["extra_info"]["case_id"]: b["extra_info"] for b in json.loads(saved.read_text())["benchmarks"]}
    assert set(cases) == set(IDS)
    folder_case, shard_case = (cases[i] for i in IDS)
    assert folder_case["top1"] == shard_case["top1"] and folder_case["train_size"] == shard_case["train_size"] == 50
    assert folder_case["settings_digest"] == shard_case["settings_digest"]

    compared = project.harness("compare", "wds", "wds")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert all(re.search(rf"^{re.escape(case_id)} +top1 ", compared.stdout, re.MULTILINE) for case_id in IDS), compared.stdout
    report = project.harness("report", "wds", "--out", str(tmp_path / "report"))
    assert report.returncode == 0, report.stderr
    assert all(f"`{case_id}`" in (tmp_path / "report" / "report.md").read_text() for case_id in IDS)
