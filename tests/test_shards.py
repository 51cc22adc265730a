"""``wds:PATTERN``: WebDataset shards written by ``python -m harness data to-wds`` read back as the
image folder they came from; the label index is cached; bad shards name the shard and the member."""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from harness.cli.main import main
from harness.config.options import default_settings
from harness.config.preflight import check_available
from harness.data import shard_index
from harness.data.datasets import clear_cache, dataset_source, hflip_of, load_split
from harness.data.errors import DatasetCorrupt, DatasetUnavailable, DatasetUnusable
from harness.data.subsets import parse_subset, subset_indices
from harness.errors import SettingError
from harness.matrix.cases import CaseSpec
from tests import datagen

# The first 120 training and 120 test digits (every class present), 50 to a shard: 3 shards a split.
LIMIT, SHARD_SIZE = 120, 50
TRAIN = "train-{000000..000002}.tar"


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The digits image folder and its shards, written by the verb."""
    base = tmp_path_factory.mktemp("digits")
    datagen.write_digits_folder(base / "folder", limit=LIMIT)
    assert main(["data", "to-wds", str(base / "folder"), str(base / "shards"), "--shard-size", str(SHARD_SIZE)]) == 0
    return base / "folder", base / "shards"


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(datagen.random_images(1, 3, 8, 8, seed)[0].transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_verb_writes_both_splits_and_the_facts(written: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, shards = written
    assert sorted(p.name for p in shards.glob("*.tar")) == [*(f"test-00000{i}.tar" for i in range(3)), *(f"train-00000{i}.tar" for i in range(3))]
    assert json.loads((shards / "dataset.json").read_text()) == {"hflip": False, "classes": [str(d) for d in range(10)], "test": "test-{000000..000002}.tar"}


def test_shards_load_as_the_folder_they_came_from(written: tuple[Path, Path], tmp_path: Path) -> None:
    folder, shards = written
    wds = f"wds:{shards / TRAIN}"
    for split in ("train", "test"):
        a, b = load_split(f"imagefolder:{folder}", split, root=tmp_path), load_split(wds, split, root=tmp_path)  # type: ignore[arg-type]
        assert (len(a), len(b)) == (LIMIT, LIMIT)
        assert a.classes == b.classes == tuple(str(d) for d in range(10))
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
        assert b.captions is None
    spec = parse_subset("50")
    train_a, train_b = load_split(f"imagefolder:{folder}", "train", root=tmp_path), load_split(wds, "train", root=tmp_path)
    picked = subset_indices(train_a.labels, spec, seed=1, num_classes=10, dataset="imagefolder")
    assert torch.equal(picked, subset_indices(train_b.labels, spec, seed=1, num_classes=10, dataset="wds"))
    assert len(picked) == 50 and hflip_of(wds) is False and hflip_of(f"imagefolder:{folder}") is False


def test_the_label_index_is_built_once_and_a_reread_does_not_scan(written: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, shards = written
    wds = f"wds:{shards / TRAIN}"
    clear_cache()  # the split itself is cached per process: read the shards
    first = load_split(wds, "test", root=tmp_path)
    assert len(list((tmp_path / shard_index.INDEX_DIR).glob("*.json"))) == 2  # the training shards' and the test shard's
    clear_cache()

    def no_scan(name: str, shards: list[Path]) -> list[shard_index.Entry]:
        raise AssertionError("scanned again")

    monkeypatch.setattr(shard_index, "scan", no_scan)
    again = load_split(wds, "test", root=tmp_path)
    assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)


def test_classes_are_the_sorted_cls_values_and_captions_are_kept(tmp_path: Path) -> None:
    for split, labels in (("train", ["10", "2", "2", "10"]), ("test", ["2", "10"])):
        _tar(tmp_path / "s" / f"{split}-0.tar", [m for i, c in enumerate(labels) for m in
                                                    ((f"{i:03d}.png", _png(i)), (f"{i:03d}.cls", c.encode()), (f"{i:03d}.txt", f"a {c}".encode()))])
    train = load_split(f"wds:{tmp_path / 's' / 'train-0.tar'}", "train", root=tmp_path)
    assert train.classes == ("2", "10") and train.labels.tolist() == [1, 0, 0, 1]
    assert train.captions == ("a 10", "a 2", "a 2", "a 10") and train.take(torch.tensor([1, 3])).captions == ("a 2", "a 10")


def test_a_csv_becomes_a_captioned_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for i in range(4):
        datagen.write_png(tmp_path / "img" / f"{i}.png", datagen.random_images(1, 3, 8, 8, i)[0])
    rows = [f"img/{i}.png,photo {i},{'cat' if i % 2 else 'dog'}" for i in range(4)]
    (tmp_path / "train.csv").write_text("filepath,caption,label\n" + "\n".join(rows) + "\n")
    (tmp_path / "test.csv").write_text("filepath,caption,label\n" + "\n".join(rows[:2]) + "\n")
    assert main(["data", "to-wds", str(tmp_path / "train.csv"), str(tmp_path / "out"), "--shard-size", "3"]) == 0
    assert main(["data", "to-wds", str(tmp_path / "test.csv"), str(tmp_path / "out"), "--split", "test"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "--dataset wds:" + str(tmp_path / "out" / "test-000000.tar")
    train = load_split(f"wds:{tmp_path / 'out' / 'train-{000000..000001}.tar'}", "train", root=tmp_path)
    assert train.classes == ("cat", "dog") and train.labels.tolist() == [1, 0, 1, 0]
    assert train.captions == ("photo 0", "photo 1", "photo 2", "photo 3")
    assert main(["data", "to-wds", str(tmp_path / "train.csv"), str(tmp_path / "out")]) == 2  # never overwrites shards


def _bad(tmp_path: Path, kind: str) -> str:
    """A shard set of one good training sample plus one bad thing; returns its --dataset name."""
    good = [("a.png", _png(0)), ("a.cls", b"0")]
    _tar(tmp_path / kind / "test-0.tar", good)
    train = tmp_path / kind / "train-0.tar"
    if kind == "nocls":
        _tar(train, [*good, ("b.png", _png(1)), ("b.txt", b"a one")])
    elif kind == "corrupt":
        _tar(train, [*good, ("b.png", b"no png at all"), ("b.cls", b"1")])
    else:
        train.write_bytes(b"no tar archive " * 50)
    return f"wds:{train}"


@pytest.mark.parametrize(("kind", "message"), [
    ("nocls", r"train-0.tar is corrupt: sample 'b' has no label member b.cls \(its members: b.png, b.txt\); every image needs its class. "
              r"Fix: write each sample's class index \(or class name\) as KEY.cls"),
    ("corrupt", r"train-0.tar is corrupt: member b.png is not a readable image \(UnidentifiedImageError: cannot identify image file 'b.png'\). "
                r"Fix: replace or drop sample 'b' and rewrite the shard"),
    ("nontar", r"train-0.tar is corrupt: not a readable tar archive at its first member \(ReadError: invalid header\). Fix: rewrite the shard"),
])
def test_a_bad_shard_names_the_shard_and_the_member(tmp_path: Path, kind: str, message: str) -> None:
    with pytest.raises(DatasetCorrupt, match=message):
        load_split(_bad(tmp_path, kind), "train", root=tmp_path)  # type: ignore[arg-type]
    settings = default_settings(datasets=[_bad(tmp_path / "again", kind)], data_root=tmp_path)
    with pytest.raises(SettingError, match=message):  # refused before any case runs (an image's header is read, not decoded)
        check_available(settings)


def test_a_pattern_matching_no_file_is_refused_before_any_case(tmp_path: Path) -> None:
    name = f"wds:{tmp_path / 'none' / TRAIN}"
    with pytest.raises(DatasetUnavailable, match=r"\(train split\): shard pattern .*/none/train-\{000000..000002\}.tar matches no file"):
        load_split(name, "train", root=tmp_path)
    with pytest.raises(SettingError, match=r"--dataset wds:.*/none/train-\{000000..000002\}.tar: .* matches no file. Fix: check the pattern"):
        check_available(default_settings(datasets=[name], data_root=tmp_path))
    _tar(tmp_path / "one" / "train-0.tar", [("a.png", _png(0)), ("a.cls", b"x")])
    _tar(tmp_path / "one" / "test-0.tar", [("a.png", _png(0)), ("a.cls", b"x")])
    with pytest.raises(DatasetUnusable, match=r"hold one class \(x\); a classifier needs at least 2 classes"):
        load_split(f"wds:{tmp_path / 'one' / 'train-0.tar'}", "train", root=tmp_path)


def test_a_missing_library_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "webdataset", None)  # import webdataset now raises ImportError
    with pytest.raises(DatasetUnavailable, match=r"needs the webdataset library, which is not installed. Fix: pip install -e '\.\[wds\]'\."):
        load_split(f"wds:{tmp_path / TRAIN}", "train", root=tmp_path)


def test_ids_name_the_shards_folder_and_sources_resolve_the_pattern(tmp_path: Path) -> None:
    base = CaseSpec(kind="train", backbone="resnet18", family="cnn", edge=False, device="cpu", batch_size=8, img_size=32, precision="fp32",
                    dataset="digits", subset="50")
    spec = dataclasses.replace(base, dataset="wds:/data/robot_bins/train-{000000..000009}.tar")
    assert spec.id == "resnet18-wds-robot_bins_50-cpu-bs8-32px-fp32"
    assert dataset_source("wds:bins/train-{0..1}.tar", tmp_path) == f"wds:{tmp_path.resolve()}/bins/train-{{0..1}}.tar"
