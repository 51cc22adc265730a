"""The dense kind: segmentation metrics, the three dataset layouts, the head, the bad inputs, and a run
written by the plugin and read back (report and site)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config.options import default_settings
from harness.config.preflight import check_available
from harness.data.errors import DatasetCorrupt
from harness.data.segmentation import IGNORE, check_dataset, load_seg_split
from harness.errors import SettingError
from harness.training.dense import LinearSegHead, NoDenseFeatures, evaluate, intermediates_of, train_head
from harness.training.seg_metrics import confusion, iou_per_class, mean_iou, pixel_accuracy
from tests.segscenes import SCENE_CLASSES, Scenes, compose, digit_objects, write_ade, write_folder, write_voc

# --- metrics: hand-computed values ----------------------------------------------------------------


def test_confusion_miou_and_pixel_accuracy_on_a_known_mask() -> None:
    target = torch.tensor([[0, 0, 1, 1], [0, 2, 2, IGNORE]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 0, 2]])
    conf = confusion(pred, target, 3)
    # true 0: predicted 0,1,0; true 1: 1,1; true 2: 2,0; the ignored pixel is not counted.
    assert conf.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    # IoU: class 0 2/(3+3-2)=1/2; class 1 2/(2+3-2)=2/3; class 2 1/(2+1-1)=1/2.
    assert iou_per_class(conf) == pytest.approx([50.0, 200 / 3, 50.0])
    assert mean_iou(conf) == pytest.approx((50 + 200 / 3 + 50) / 3)
    assert pixel_accuracy(conf) == pytest.approx(100 * 5 / 7)


def test_a_class_absent_from_labels_and_predictions_is_left_out_of_the_mean() -> None:
    conf = confusion(torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1]), 4)
    ious = iou_per_class(conf)
    assert ious[:2] == pytest.approx([50.0, 50.0]) and math.isnan(ious[2]) and math.isnan(ious[3])
    assert mean_iou(conf) == pytest.approx(50.0)


def test_labels_outside_the_classes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        confusion(torch.tensor([0, 1]), torch.tensor([0, 5]), 2)


# --- the three layouts, read back exactly ------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes() -> dict[str, Scenes]:
    objects, labels = digit_objects()
    return {"train": compose(objects, labels, SCENE_CLASSES, tuple(str(i) for i in range(10)), 6, side=32, seed=3, max_objects=2),
            "val": compose(objects, labels, SCENE_CLASSES, tuple(str(i) for i in range(10)), 4, side=32, seed=4, max_objects=2)}


@pytest.mark.parametrize("form, writer", [("voc", write_voc), ("ade", write_ade), ("segfolder", write_folder)])
def test_each_layout_reads_back_the_written_masks_exactly(form: str, writer: object, scenes: dict[str, Scenes], tmp_path: Path) -> None:
    writer(tmp_path, scenes)  # type: ignore[operator]
    name = f"{form}:{tmp_path}"
    check_dataset(name, None)
    for split, written in scenes.items():
        loaded = load_seg_split(name, split, img_size=32, data_root=None)
        assert loaded.classes == ("background", "0", "1", "7", "8")
        assert torch.equal(loaded.masks, torch.from_numpy(written.masks.astype(np.int64)))  # 255 stays the ignore index in every form
        expected = torch.from_numpy(written.images).permute(0, 3, 1, 2)
        if form == "segfolder":  # PNG: lossless
            assert torch.equal(loaded.images, expected)
        else:  # JPEG: the loader gives exactly what PIL decodes from each file (in the split's listed order)
            files = sorted(tmp_path.rglob("*.jpg"))
            decoded = [np.array(Image.open(f).convert("RGB")) for f in files if (split in f.name or {"train": "training", "val": "validation"}[split] in f.name)]
            assert torch.equal(loaded.images, torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2))


def test_resizing_keeps_labels_as_labels(scenes: dict[str, Scenes], tmp_path: Path) -> None:
    write_folder(tmp_path, scenes)
    loaded = load_seg_split(f"segfolder:{tmp_path}", "val", img_size=16, data_root=None)
    assert loaded.masks.shape == (4, 16, 16)
    assert set(loaded.masks.unique().tolist()) <= {0, 1, 2, 3, 4, IGNORE}  # nearest: no blended label
    # nearest-exact at a factor of 2 takes the pixel at (2i + 1, 2j + 1) (pixel centres).
    assert torch.equal(loaded.masks, torch.from_numpy(scenes["val"].masks.astype(np.int64))[:, 1::2, 1::2])


# --- bad input: one clear error each, before any case runs (preflight) -----------------------------


def _preflight(name: str) -> None:
    check_available(default_settings(seg_datasets=[name], backbones=["resnet18"], devices=["cpu"]))


def test_a_mask_label_outside_the_classes_is_refused_before_any_case(scenes: dict[str, Scenes], tmp_path: Path) -> None:
    write_voc(tmp_path, scenes)
    bad = tmp_path / "SegmentationClass" / "val_00002.png"
    mask = Image.open(bad)
    values = np.array(mask)
    values[0, 0] = 9
    out = Image.fromarray(values, mode="P")
    out.putpalette(mask.getpalette())
    out.save(bad)
    with pytest.raises(SettingError) as info:
        _preflight(f"voc:{tmp_path}")
    text = str(info.value)
    assert "val_00002.png" in text and "mask labels [9] are outside the 5 classes" in text and "Fix:" in text and "\n" not in text


def test_an_image_and_mask_of_different_sizes_are_refused(scenes: dict[str, Scenes], tmp_path: Path) -> None:
    write_ade(tmp_path, scenes)
    mask = tmp_path / "annotations" / "training" / "ADE_training_00000001.png"
    Image.open(mask).resize((24, 24)).save(mask)
    with pytest.raises(SettingError, match=r"mask is 24x24 px but its image ADE_training_00000001.jpg is 32x32 px.*Fix: write each mask at its image's size"):
        _preflight(f"ade:{tmp_path}")


def test_a_voc_mask_without_a_palette_is_refused(scenes: dict[str, Scenes], tmp_path: Path) -> None:
    write_voc(tmp_path, scenes)
    mask = tmp_path / "SegmentationClass" / "train_00003.png"
    Image.fromarray(np.array(Image.open(mask))).convert("L").save(mask)  # the same indices, no palette
    with pytest.raises(DatasetCorrupt, match=r"a VOC mask must be a palette PNG \(mode P\).*got mode L"):
        check_dataset(f"voc:{tmp_path}", None)
    with pytest.raises(SettingError, match=r"^--seg-datasets voc:"):
        _preflight(f"voc:{tmp_path}")


def test_a_backbone_without_multi_scale_features_is_refused() -> None:
    with pytest.raises(NoDenseFeatures, match=r"plainnet gives no multi-scale features: it has no forward_intermediates"):
        intermediates_of(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), "plainnet")


def test_preflight_names_a_backbone_without_multi_scale_features(scenes: dict[str, Scenes], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_folder(tmp_path / "data", scenes)
    (tmp_path / "plainnet.py").write_text(
        "import torch\n"
        "def build(num_classes=10):\n"
        "    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),\n"
        "                                torch.nn.Linear(8, num_classes) if num_classes else torch.nn.Identity())\n"
        "    return model\n"
        "build.family = 'cnn'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SettingError, match=r"^--seg-datasets with --backbones plainnet:build: plainnet:build gives no multi-scale features"):
        check_available(default_settings(seg_datasets=[f"segfolder:{tmp_path / 'data'}"], backbones=["plainnet:build"], devices=["cpu"]))


def test_a_name_in_no_segmentation_form_is_a_parse_error() -> None:
    from harness.config.parsers import seg_datasets

    with pytest.raises(SettingError, match=r"seg-datasets 'cityscapes:/data': name a segmentation dataset as voc:PATH"):
        seg_datasets("cityscapes:/data")


# --- the head -----------------------------------------------------------------------------------


def test_the_head_resizes_every_map_to_the_largest_and_concatenates() -> None:
    head = LinearSegHead([4, 6], num_classes=3)
    out = head([torch.randn(2, 4, 8, 8), torch.randn(2, 6, 2, 2)])
    assert out.shape == (2, 3, 8, 8) and head.bn.num_features == 10


def test_the_head_learns_a_separable_scene_exactly() -> None:
    # One channel says the class: 1 where the mask is class 1. The head must reach mIoU 100 on it.
    masks = (torch.rand(32, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).long()
    maps = [masks[:, None].float() * 2 - 1]
    trained = train_head(maps, masks, 2, lr=1e-1, steps=60, seed=0, device=torch.device("cpu"))
    conf, _ = evaluate(trained.head, maps, masks, 2, torch.device("cpu"))
    assert mean_iou(conf) == 100.0 and pixel_accuracy(conf) == 100.0


# --- a run written by the plugin and read back -------------------------------------------------------

CONFTEST = (f"import runpy, sys\nrunpy.run_path({str(Path(__file__).resolve().parents[1] / 'conftest.py')!r})\n"
            "pytest_plugins = ['harness.plugin', *sys.modules['backbone_bench_fixtures'].PLUGINS]\n")


def test_a_dense_run_is_saved_and_read_back_by_compare_report_and_site(pytester: pytest.Pytester, scenes: dict[str, Scenes]) -> None:
    from harness.results.report import write_report
    from harness.results.runs import load_run
    from harness.results.site import build_site
    from harness.results.transfer import ReportOptions

    data = pytester.path / "scenes"
    write_folder(data, scenes)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\naddopts = --strict-markers --benchmark-storage=file://baselines\n")
    pytester.makepyfile(test_dense=(Path(__file__).resolve().parents[1] / "benchmarks" / "test_dense.py").read_text())
    args = ["-m", "dense", f"--seg-datasets=segfolder:{data}", "--backbones=resnet18", "--img-sizes=32", "--devices=cpu",
            "--seg-steps=4", "--bench-time=0.01", f"--feature-cache={pytester.path / 'features'}", "-p", "no:randomly"]
    first = pytester.runpytest_subprocess(*args, "--benchmark-save=dense")
    first.assert_outcomes(passed=1)
    [saved] = sorted((pytester.path / "baselines").glob("*/*.json"))
    run = load_run(str(saved), pytester.path / "baselines")
    [case] = run.cases.values()
    record = case.extra
    assert record["case_id"] == "dense/resnet18-segfolder-scenes-cpu-32px-fp32"
    assert 0 <= record["miou"] <= 100 and record["miou_per_seed"] == [record["miou"]]
    assert set(record["iou_per_class"]) == {"background", "0", "1", "7", "8"}
    assert record["settings"]["seg_steps"] == 4 and record["settings"]["seg_layers"] == "last4"
    assert record["feature_cache"] == [{"train": "miss", "val": "miss"}] and record["latency_p50_ms"] > 0
    # The second run reads the frozen maps back and, seeded, repeats the mIoU exactly: the gate passes it.
    second = pytester.runpytest_subprocess(*args, "--benchmark-save=again", "--gate=0001", "--fail-on=latency_p50_ms:off")
    second.assert_outcomes(passed=1)
    [again] = [json.loads(p.read_text()) for p in sorted((pytester.path / "baselines").glob("*/0002_*.json"))]
    [record2] = [b["extra_info"] for b in again["benchmarks"]]
    assert record2["feature_cache"] == [{"train": "hit", "val": "hit"}] and record2["miou"] == record["miou"]
    report = write_report([run], pytester.path / "report", ReportOptions(min_miou=99.5))
    text = (pytester.path / "report" / "report.md").read_text()
    assert report.files and "## Dense: segmentation probe on frozen features" in text and "| mIoU (%) |" in text.replace(" ", " ")
    assert f"mIoU {record['miou']:.1f} < 99.5 %" in text and "Constraints: mIoU ≥ 99.5 %." in text
    site = build_site(pytester.path / "baselines", pytester.path / "site")
    assert "miou (%)" in (site.out / "index.html").read_text()
