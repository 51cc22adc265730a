"""Transfer protocols end to end: weights trained here, saved as a team's checkpoint and placed in
the Hugging Face cache layout, then used by every protocol on classes they never saw; each run is
saved and read back; features are extracted once; bad input is refused before any case runs.

One project (real benchmark files, real plugin) shared by the module: the weights are a resnet10t
trained for two epochs on digits 0-4; the transfer target is digits 5-9 as an image folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.config.options import default_settings
from harness.data.registry import held_size
from harness.kinds.train import cases as train_cases
from harness.matrix.cases import CaseSpec
from harness.protocols.recipe import batch_for, recipe_for
from harness.runtime.distributed import World
from tests.projects import write_project

pytestmark = pytest.mark.xdist_group("transfer")
ROOT = Path(__file__).resolve().parents[1]
TAG = "resnet10t.c3_in1k"  # a real timm tag of the architecture; the test's own weights stand in for it


class Project:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.weights = path / "weights" / "resnet10t_digits04.safetensors"
        self.target = path / "digits59"
        self.hf_cache = path / "hf"

    def pytest(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self._run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *args], env)

    def harness(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run([sys.executable, "-m", "harness", *args], None)

    def _run(self, command: list[str], extra: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
        env.update(PYTHONPATH=str(ROOT), BACKBONE_BENCH_CHECKPOINTS=str(self.path / "checkpoints"),
                   BACKBONE_BENCH_FEATURES=str(self.path / "features"), HF_HUB_CACHE=str(self.hf_cache), HF_HUB_OFFLINE="1",
                   TORCH_HOME=str(self.path / "torch"))
        env.update(extra or {})
        return subprocess.run(command, cwd=self.path, capture_output=True, text=True, env=env, timeout=900)

    def cases(self, name: str) -> dict[str, dict[str, Any]]:
        [run] = sorted((self.path / "baselines").glob(f"*/*_{name}.json"))
        return {b["extra_info"]["case_id"]: b["extra_info"] for b in json.loads(run.read_text())["benchmarks"]}


def _digits_folders(root: Path) -> None:
    """Digits 5-9 of the suite's split as an image folder of 32 px PNGs (the imagefolder loader's layout)."""
    from PIL import Image

    from harness.data.datasets import load_split

    for split in ("train", "test"):
        data = load_split("digits", split, img_size=32)  # type: ignore[arg-type]
        for i, (image, label) in enumerate(zip(data.images, data.labels.tolist(), strict=True)):
            if label >= 5:
                folder = root / split / str(label)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")


def _pretrain(path: Path) -> None:
    """resnet10t trained for two epochs on digits 0-4 (a real, short run), saved as safetensors."""
    import timm
    from safetensors.torch import save_file

    from harness.data.datasets import load_split
    from harness.training.loop import train
    from harness.training.recipes import default_recipe

    train_split, test_split = (load_split("digits", s, img_size=32) for s in ("train", "test"))  # type: ignore[arg-type]
    keep = [torch.nonzero(s.labels < 5).flatten() for s in (train_split, test_split)]
    source, held_out = train_split.take(keep[0]), test_split.take(keep[1])
    source = type(source)(source.images, source.labels, source.classes[:5])
    held_out = type(held_out)(held_out.images, held_out.labels, held_out.classes[:5])
    torch.manual_seed(0)
    model = timm.create_model("resnet10t", num_classes=5)
    result = train(model, source, held_out, default_recipe("cnn", epochs=2, batch_size=64, hflip=False), device=torch.device("cpu"), measure_memory=False)
    assert result.top1 > 50.0  # it learnt something from digits 0-4
    path.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def _hf_layout(cache: Path, weights: Path) -> None:
    """``weights`` under ``TAG`` exactly as huggingface_hub lays out a download: blob, snapshot, ref."""
    repo = cache / f"models--timm--{TAG}"
    data = weights.read_bytes()
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    commit = "0" * 39 + "1"
    snapshot = repo / "snapshots" / commit / "model.safetensors"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


MATRIX = ("-m", "train", "--protocols", "scratch,finetune,linear,knn", "--subsets", "5pc,20pc", "--seeds", "1", "--epochs", "2",
          "--train-batch-sizes", "64", "--devices", "cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    path = write_project(tmp_path_factory.mktemp("transfer"))
    project = Project(path)
    _digits_folders(project.target)
    _pretrain(project.weights)
    _hf_layout(project.hf_cache, project.weights)
    done = project.pytest(*MATRIX, "--backbones", f"resnet10t@{project.weights}", "--dataset", f"imagefolder:{project.target}",
                          "--benchmark-save=transfer")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield project


def test_every_protocol_is_saved_with_its_weights_and_read_back(project: Project) -> None:
    from harness.results.runs import load_run

    cases = project.cases("transfer")
    sha = hashlib.sha256(project.weights.read_bytes()).hexdigest()
    ids = {f"train/resnet10t{'' if p == 'scratch' else '@resnet10t_digits04'}-imagefolder-digits59_{s}{'' if p == 'scratch' else '-' + p}-cpu-bs64-32px-fp32"
           for p in ("scratch", "finetune", "linear", "knn") for s in ("5pc", "20pc")}
    assert set(cases) == ids
    for case in cases.values():
        pretrained = case["protocol"] != "scratch"
        assert case["settings"]["weights_sha256"] == (sha if pretrained else None)
        assert case.get("weights_sha256") == (sha if pretrained else None) and case["weights"] == ("resnet10t_digits04" if pretrained else None)
        assert case["train_size"] == (25 if "_5pc" in case["case_id"] else 100) and len(case["top1_per_seed"]) == 1
    finetune = cases["train/resnet10t@resnet10t_digits04-imagefolder-digits59_5pc-finetune-cpu-bs64-32px-fp32"]
    assert finetune["train_batch_used"] == 25  # 25 images: the subset's own size, not a traceback
    assert (finetune["recipe"]["backbone_lr_scale"], finetune["recipe"]["optimizer"], finetune["weights_source"]) == (1.0, "adamw", "file")
    assert finetune["head_init"] == "linear probe (LP-FT)" and finetune["recipe"]["freeze_norm_stats"] is True
    assert [set(seed) for seed in finetune["tuning"]] == [{"head_l2", "lr"}]
    scratch = cases["train/resnet10t-imagefolder-digits59_20pc-cpu-bs64-32px-fp32"]
    assert scratch["train_batch_used"] == 64 and scratch["recipe"]["backbone_lr_scale"] == 1.0 and scratch["eval_time_s"] > 0
    run = load_run("transfer", project.path / "baselines")
    assert set(run.cases) == ids and {c.settings["weights_sha256"] for c in run.cases.values()} == {sha, None}


def test_features_are_extracted_once_and_read_back_by_every_later_case(project: Project) -> None:
    cases = project.cases("transfer")
    frozen = {cid: c for cid, c in cases.items() if c["protocol"] in ("linear", "knn")}
    # LP-FT reads the training split's features too (its head starts from the probe): the cached split
    # when a linear or knn case wrote it first, else only its own images ("subset", nothing cached).
    readers = [c for c in cases.values() if c["protocol"] != "scratch"]
    uses = [use for c in readers for split in ("train", "test") for use in c["feature_cache"].get(split, [])]
    finetunes = [c for c in readers if c["protocol"] == "finetune"]
    assert all(c["feature_cache"] in ({"train": ["subset"]}, {"train": ["hit"]}) for c in finetunes)
    subsets = uses.count("subset")
    assert uses.count("miss") == 2 and uses.count("hit") == len(uses) - 2 - subsets  # one train and one test split, once
    assert len(list((project.path / "features").rglob("*.pt"))) == 2
    for case in frozen.values():
        assert case["pretrained"] is True and "note" not in case and case["feature_dim"] == 512
    knn = next(c for c in frozen.values() if c["protocol"] == "knn")
    assert "train_time_s" not in knn and knn["probe"]["k"] == "chosen per seed (tuning)"
    [search] = knn["tuning"]  # one seed; k capped at the fit images (20 of 25, or 80 of 100)
    assert search["param"] == "k" and search["chosen"] in search["grid"] and search["grid"][0] == 10


def test_compare_and_report_read_a_transfer_run(project: Project, tmp_path: Path) -> None:
    same = project.harness("compare", "transfer", "transfer", "--storage", "baselines")
    assert same.returncode == 0, same.stdout + same.stderr
    out = tmp_path / "report"
    report = project.harness("report", "transfer", "--storage", "baselines", "--out", str(out), "--min-top1", "50")
    assert report.returncode == 0, report.stderr
    [curves] = out.glob("accuracy_vs_subset_imagefolder_*digits59.png")
    assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "resnet10t@resnet10t_digits04" in text and "linear" in text and "knn" in text


def test_a_tag_in_the_hugging_face_cache_loads_offline_and_an_absent_one_is_refused_naming_the_fetch(project: Project) -> None:
    args = ("-m", "train", "--protocols", "knn", "--subsets", "5pc", "--devices", "cpu", "--backbones", TAG,
            "--dataset", f"imagefolder:{project.target}")
    done = project.pytest(*args, "--benchmark-save=tagged")
    assert done.returncode == 0, done.stdout[-3000:]
    [case] = project.cases("tagged").values()
    assert case["case_id"] == f"train/{TAG}-imagefolder-digits59_5pc-knn-cpu-bs128-32px-fp32"
    assert (case["weights_source"], case["weights_sha256"]) == ("hf-cache", hashlib.sha256(project.weights.read_bytes()).hexdigest())
    empty_cache = {"HF_HUB_CACHE": str(project.path / "empty-hf")}
    refused = project.pytest(*args, env=empty_cache)  # named explicitly: a usage error before any case runs
    assert refused.returncode == 4, refused.stdout[-3000:]
    assert refused.stderr.startswith(f"ERROR: --backbones {TAG}: not cached; looked in ")
    assert f"models--timm--{TAG}" in refused.stderr and f"python -m harness weights --download {TAG}, or pass --download" in refused.stderr
    skipped = project.pytest(*args, "--skip-unavailable", env=empty_cache)  # opted in: a skip, and a session of skips exits 5
    assert skipped.returncode == 5 and "1 skipped" in skipped.stdout
    assert f"models--timm--{TAG}" in skipped.stdout and f"python -m harness weights --download {TAG}" in skipped.stdout


@pytest.mark.parametrize(
    ("option", "text", "message"),
    [
        ("protocols", "linaer", "unknown protocol 'linaer' (did you mean linear?); valid: scratch, finetune, linear, knn"),
        ("backbones", "resnet10t.c3_in1", "unknown pretrained tag 'resnet10t.c3_in1' (did you mean resnet10t.c3_in1k"),
        ("backbones", "resnet10t@/nonexistent/w.safetensors", "no checkpoint file /nonexistent/w.safetensors; write resnet10t@PATH"),
        ("train_img_sizes", "224,big", "train-img-sizes entry (or native)"),
    ],
)
def test_bad_transfer_input_is_a_setting_error_naming_the_fix(option: str, text: str, message: str) -> None:
    """What the option table's parsers refuse is a usage error (exit 4) before any case runs: the
    subprocess test below shows that path once, for a checkpoint of another architecture."""
    from harness.config.options import OPTIONS
    from harness.errors import SettingError

    [row] = [o for o in OPTIONS if o.field == option]
    with pytest.raises(SettingError) as info:
        row.parse(text)
    assert message in str(info.value)


def test_weights_of_another_architecture_are_refused_before_any_case_runs_with_the_key_counts(project: Project) -> None:
    import timm
    from safetensors.torch import load_file

    done = project.pytest("-m", "train", "--protocols", "linear", "--subsets", "5pc", "--backbones", f"resnet18@{project.weights}",
                          "--dataset", f"imagefolder:{project.target}")
    heads = {"fc.weight", "fc.bias"}
    want, have = set(timm.create_model("resnet18").state_dict()) - heads, set(load_file(str(project.weights))) - heads
    assert done.returncode == 4 and "passed" not in done.stdout
    assert f"does not fit resnet18: {len(want - have)} missing keys" in done.stderr
    assert f", {len(have - want)} unexpected keys" in done.stderr and len(want - have) > 0


def test_the_matrix_drops_weights_for_scratch_and_skips_a_finetune_of_random_weights() -> None:
    settings = default_settings(backbones=["resnet18", "resnet18.a1_in1k"], protocols=["scratch", "finetune", "linear"],
                                subsets=["full"], devices=["cpu"], train_img_sizes=["native", 32])
    ids = {c.spec.id: c.skip for c in train_cases(settings)}
    assert sorted(ids) == sorted([
        "resnet18-digits_full-cpu-bs128-224px-fp32", "resnet18-digits_full-cpu-bs128-32px-fp32",
        "resnet18-digits_full-finetune-cpu-bs128-224px-fp32", "resnet18-digits_full-finetune-cpu-bs128-32px-fp32",
        "resnet18-digits_full-linear-cpu-bs128-224px-fp32", "resnet18-digits_full-linear-cpu-bs128-32px-fp32",
        "resnet18.a1_in1k-digits_full-finetune-cpu-bs128-224px-fp32", "resnet18.a1_in1k-digits_full-finetune-cpu-bs128-32px-fp32",
        "resnet18.a1_in1k-digits_full-linear-cpu-bs128-224px-fp32", "resnet18.a1_in1k-digits_full-linear-cpu-bs128-32px-fp32",
    ])
    assert ids["resnet18-digits_full-finetune-cpu-bs128-32px-fp32"].startswith("finetune starts from pretrained weights and resnet18 names none")
    assert ids["resnet18.a1_in1k-digits_full-finetune-cpu-bs128-32px-fp32"] is None


@pytest.mark.parametrize(("dataset", "img_size", "held"), [("digits", 32, 32), ("digits", 224, 32), ("cifar10", 16, 16), ("mnist", 224, 32),
                                                           ("stl10", 224, 96), ("flowers102", 224, 224), ("imagefolder:/x", 160, 160)])
def test_splits_are_held_small_and_resized_on_the_device(dataset: str, img_size: int, held: int) -> None:
    assert held_size(dataset, img_size) == held


def test_a_subset_smaller_than_the_batch_trains_at_its_own_size() -> None:
    spec = next(c.spec for c in train_cases(default_settings(backbones=["resnet18"], subsets=["full"], devices=["cpu"])))
    recipe = recipe_for(spec, default_settings(), seed=0)
    assert batch_for(recipe, 1347, World(), "full") == 128 and batch_for(recipe, 100, World(), "full") == 100
    assert batch_for(recipe, 101, World(rank=0, size=2), "full") == 100  # two ranks split it evenly
    mixup = recipe_for(spec, default_settings(augment=("standard", "mixup")), seed=0)
    assert batch_for(mixup, 25, World(), "full") == 24  # mixup pairs images
    from harness.data.subsets import SubsetError

    with pytest.raises(SubsetError, match="use a larger subset"):
        batch_for(recipe, 1, World(rank=0, size=2), "full")
    assert isinstance(spec, CaseSpec)
    # A subset that leaves one image per batch: refused for a BatchNorm arch, with the fix; not for a ViT.
    with pytest.raises(SubsetError) as info:
        batch_for(recipe, 1, World(), "2", arch="resnet18")
    assert str(info.value) == ("2 leaves 1 training image(s): batches of one image per process, on which resnet18's BatchNorm cannot train; "
                               "use a larger subset (at least 2 images per batch)")
    assert batch_for(recipe, 1, World(), "2", arch="deit_tiny_patch16_224") == 1
    assert batch_for(recipe, 2, World(), "2", arch="resnet18") == 2
