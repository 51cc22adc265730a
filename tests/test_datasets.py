"""Tests for harness.data.datasets: real on-disk formats in, exact uint8 tensors out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.data import datasets
from harness.data.convert import decode_images, resize_square
from harness.data.datasets import DatasetCorrupt, DatasetUnavailable, clear_cache, load_split
from harness.data.registry import DATASETS, dataset_names, default_data_root
from tests import datagen


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()  # every test writes its own files under a new tmp_path


def assert_split(split: datasets.TensorSplit, written: datagen.Written, classes: tuple[str, ...]) -> None:
    """Exact pixels (grey replicated to RGB), labels and class names."""
    expected = torch.from_numpy(written.images).expand(-1, 3, -1, -1)
    assert split.images.dtype == torch.uint8
    assert torch.equal(split.images, expected)
    assert split.labels.tolist() == written.labels.tolist()
    assert split.classes == classes


def test_registry_lists_every_dataset_with_official_sizes() -> None:
    assert dataset_names() == ["cifar10", "cifar100", "digits", "fashion_mnist", "flowers102", "mnist", "stl10", "svhn"]
    assert (DATASETS["cifar10"].train_size, DATASETS["cifar10"].test_size, DATASETS["cifar10"].num_classes) == (50_000, 10_000, 10)
    assert (DATASETS["svhn"].split_size("train"), DATASETS["flowers102"].split_size("test")) == (73_257, 6_149)


def test_cifar10_round_trip(tmp_path: Path) -> None:
    written = datagen.write_cifar10(tmp_path)
    for split in ("train", "test"):
        loaded = load_split("cifar10", split, root=tmp_path, img_size=32, verify_checksums=False)
        assert_split(loaded, written[split], datagen.CIFAR10_CLASSES)
    assert len(load_split("cifar10", "train", root=tmp_path, verify_checksums=False)) == 100


def test_cifar10_checks_official_md5_by_default(tmp_path: Path) -> None:
    datagen.write_cifar10(tmp_path)
    with pytest.raises(DatasetCorrupt, match=r"data_batch_1 is corrupt: md5 is [0-9a-f]{32}, the official file's is c99cafc152244af753f735de768cd75f.*--download") as info:
        load_split("cifar10", "train", root=tmp_path)
    assert info.value.path == tmp_path / "cifar-10-batches-py" / "data_batch_1"


def test_cifar10_upscaled_to_64(tmp_path: Path) -> None:
    written = datagen.write_cifar10(tmp_path)
    loaded = load_split("cifar10", "test", root=tmp_path, img_size=64, verify_checksums=False)
    expected = F.interpolate(torch.from_numpy(written["test"].images).float(), size=(64, 64), mode="bilinear", align_corners=False)
    assert loaded.images.shape == (30, 3, 64, 64)
    assert torch.equal(loaded.images, expected.round().clamp(0, 255).to(torch.uint8))


def test_cifar100_round_trip(tmp_path: Path) -> None:
    written = datagen.write_cifar100(tmp_path)
    loaded = load_split("cifar100", "train", root=tmp_path, verify_checksums=False)
    assert_split(loaded, written["train"], tuple(f"class_{k:03d}" for k in range(100)))


def test_truncated_cifar_pickle_is_corrupt_and_named(tmp_path: Path) -> None:
    datagen.write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    with pytest.raises(DatasetCorrupt, match=r"data_batch_3 is corrupt: .*Fix: delete .*data_batch_3 and download it again") as info:
        load_split("cifar10", "train", root=tmp_path, verify_checksums=False)
    assert info.value.path == batch
    assert info.value.__cause__ is not None  # the parser's own exception stays chained


def test_missing_dataset_names_path_and_fixes(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable) as info:
        load_split("cifar10", "train", root=tmp_path)
    message = str(info.value)
    for needle in ("'cifar10'", str(tmp_path / "cifar-10-batches-py" / "data_batch_1"), "--data-root PATH", "BACKBONE_BENCH_DATA", "--download"):
        assert needle in message
    assert info.value.dataset == "cifar10"


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_round_trip(tmp_path: Path, name: str, folder: str) -> None:
    written = datagen.write_mnist(tmp_path, folder=folder)
    loaded = load_split(name, "test", root=tmp_path, img_size=28)
    classes = ("0 - zero", "1 - one", "2 - two") if name == "mnist" else ("T-shirt/top", "Trouser", "Pullover")
    assert_split(loaded, written["test"], loaded.classes)
    assert loaded.classes[:3] == classes and len(loaded.classes) == 10


def test_mnist_resized_to_32(tmp_path: Path) -> None:
    datagen.write_mnist(tmp_path)
    loaded = load_split("mnist", "train", root=tmp_path, img_size=32)
    assert loaded.images.shape == (40, 3, 32, 32)
    assert torch.equal(loaded.images[:, 0], loaded.images[:, 2])


def test_mnist_bad_magic_is_corrupt(tmp_path: Path) -> None:
    datagen.write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(b"\x00\x00\x08\x01" + path.read_bytes()[4:])
    with pytest.raises(DatasetCorrupt, match=r"train-images-idx3-ubyte is corrupt: bad idx magic number 0x00000801, expected 0x00000803"):
        load_split("mnist", "train", root=tmp_path)


def test_mnist_truncated_is_corrupt(tmp_path: Path) -> None:
    datagen.write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetCorrupt, match=r"15691 bytes, but its header \[20, 28, 28\] needs 15696 \(truncated\?\)"):
        load_split("mnist", "test", root=tmp_path)


def test_svhn_maps_label_ten_to_zero(tmp_path: Path) -> None:
    written = datagen.write_svhn(tmp_path)
    loaded = load_split("svhn", "train", root=tmp_path, verify_checksums=False)
    assert_split(loaded, written["train"], tuple("0123456789"))
    assert loaded.labels[:3].tolist() == [0, 1, 2]


def test_stl10_round_trip_and_downscale(tmp_path: Path) -> None:
    written = datagen.write_stl10(tmp_path)
    native = load_split("stl10", "test", root=tmp_path, img_size=96, verify_checksums=False)
    assert_split(native, written["test"], ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"))
    small = load_split("stl10", "test", root=tmp_path, img_size=32, verify_checksums=False)
    expected = F.interpolate(torch.from_numpy(written["test"].images).float(), size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
    assert torch.equal(small.images, expected.round().clamp(0, 255).to(torch.uint8))


def test_flowers102_train_is_train_plus_val_centre_cropped(tmp_path: Path) -> None:
    written = datagen.write_flowers102(tmp_path, height=32, width=48)
    loaded = load_split("flowers102", "train", root=tmp_path, img_size=32, verify_checksums=False)
    # 32x48 at 32 px: the short side already fits, so the crop is exactly columns 8..39.
    assert torch.equal(loaded.images, torch.from_numpy(written["train"].images[:, :, :, 8:40].copy()))
    assert loaded.labels.tolist() == written["train"].labels.tolist()
    assert len(loaded.classes) == 102 and loaded.classes[0] == "pink primrose"
    assert len(load_split("flowers102", "test", root=tmp_path, img_size=32, verify_checksums=False)) == 3


def test_imagefolder_with_train_and_val(tmp_path: Path) -> None:
    classes = ("cone", "cube", "sphere")
    train = datagen.write_imagefolder(tmp_path / "robot" / "train", classes, 4, seed=1)
    val = datagen.write_imagefolder(tmp_path / "robot" / "val", classes, 2, seed=2)
    assert_split(load_split("imagefolder:robot", "train", root=tmp_path), train, classes)
    assert_split(load_split(f"imagefolder:{tmp_path / 'robot'}", "test", root=Path("/nonexistent")), val, classes)


def test_imagefolder_without_val_holds_out_a_stratified_fifth(tmp_path: Path) -> None:
    classes = ("a", "b")
    written = datagen.write_imagefolder(tmp_path / "imgs", classes, 10, seed=3)
    train = load_split("imagefolder:imgs", "train", root=tmp_path)
    test = load_split("imagefolder:imgs", "test", root=tmp_path)
    assert (train.labels.tolist().count(0), train.labels.tolist().count(1)) == (8, 8)
    assert (test.labels.tolist().count(0), test.labels.tolist().count(1)) == (2, 2)
    everything = {bytes(img.numpy()) for img in torch.cat([train.images, test.images])}
    assert everything == {bytes(img) for img in written.images}  # disjoint and complete
    clear_cache()
    assert torch.equal(load_split("imagefolder:imgs", "test", root=tmp_path).images, test.images)


def test_imagefolder_grey_and_odd_sizes_become_rgb_squares(tmp_path: Path) -> None:
    datagen.write_imagefolder(tmp_path / "grey" / "train", ("x", "y"), 2, size=20, channels=1)
    datagen.write_imagefolder(tmp_path / "grey" / "test", ("x", "y"), 1, size=20, channels=1)
    loaded = load_split("imagefolder:grey", "train", root=tmp_path, img_size=16)
    assert loaded.images.shape == (4, 3, 16, 16)
    assert torch.equal(loaded.images[:, 0], loaded.images[:, 1])


def test_imagefolder_unreadable_png_is_corrupt(tmp_path: Path) -> None:
    datagen.write_imagefolder(tmp_path / "bad", ("a", "b"), 5)
    broken = tmp_path / "bad" / "b" / "img_007.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DatasetCorrupt, match=r"img_007.png is corrupt: unreadable image .*Fix: delete or replace"):
        load_split("imagefolder:bad", "train", root=tmp_path)


def test_imagefolder_missing_or_mismatched(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match=r"folder .*nowhere does not exist"):
        load_split("imagefolder:nowhere", "train", root=tmp_path)
    datagen.write_imagefolder(tmp_path / "mm" / "train", ("a", "b"), 1)
    datagen.write_imagefolder(tmp_path / "mm" / "val", ("a", "c"), 1)
    with pytest.raises(DatasetCorrupt, match=r"missing from val: \['b'\], only in val: \['c'\]"):
        load_split("imagefolder:mm", "test", root=tmp_path)


def test_digits_counts_shape_and_pixels() -> None:
    train, test = load_split("digits", "train"), load_split("digits", "test")
    assert (len(train), len(test)) == (1347, 450)
    assert train.images.shape == (1347, 3, 32, 32) and train.images.dtype == torch.uint8
    assert train.classes == tuple(str(d) for d in range(10)) and train.num_classes == 10
    assert torch.bincount(test.labels).tolist() == [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]  # sklearn's stratified 25%
    from sklearn.datasets import load_digits

    native = load_split("digits", "train", img_size=8)
    # Every pixel is one of the 17 levels round(v * 255 / 16); v = 8 gives 127.5 -> 128.
    assert set(native.images.unique().tolist()) <= {round(v * 255 / 16) for v in range(17)}
    assert {0, 16, 128, 255} <= set(native.images.unique().tolist())
    first = torch.from_numpy(np.round(load_digits().images[0] * 255 / 16)).float()[None, None]
    assert torch.equal(native.images[0, 0], first[0, 0].to(torch.uint8))  # image 0 is in the train split
    up = F.interpolate(first, size=(32, 32), mode="bilinear", align_corners=False, antialias=False)
    assert torch.equal(train.images[0, 1], up.round().clamp(0, 255).to(torch.uint8)[0, 0])


def test_bad_names_splits_and_sizes() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'cifar-10' \(did you mean cifar10, cifar100\?\); valid: cifar10, cifar100, .*, or 'imagefolder:PATH'"):
        load_split("cifar-10", "train")
    with pytest.raises(ValueError, match=r"unknown split 'tset' \(did you mean test\?\); valid: train, test"):
        load_split("digits", "tset")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="img_size must be a positive integer"):
        load_split("digits", "train", img_size=0)


def test_default_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BACKBONE_BENCH_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    monkeypatch.delenv("BACKBONE_BENCH_DATA")
    assert default_data_root() == Path.home() / ".cache" / "backbone-bench" / "data"


def test_cache_returns_the_same_split_per_key() -> None:
    a = load_split("digits", "test", img_size=16)
    assert load_split("digits", "test", img_size=16) is a
    assert load_split("digits", "test", img_size=24) is not a


def test_resize_square_centre_crops_and_keeps_exact_sizes() -> None:
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.uint8).reshape(2, 3, 4, 6)
    assert resize_square(images, 4).tolist() == images[:, :, :, 1:5].tolist()
    same = torch.zeros(1, 3, 5, 5, dtype=torch.uint8)
    assert resize_square(same, 5) is same


def test_decode_images_keeps_order_across_mixed_sizes(tmp_path: Path) -> None:
    small = datagen.random_images(3, 3, 16, 16, seed=7)
    large = datagen.random_images(3, 3, 32, 32, seed=8)
    paths = []
    for k in range(3):  # interleave 16 px and 32 px files: small0, large0, small1, ...
        for tag, image in (("s", small[k]), ("l", large[k])):
            paths.append(tmp_path / f"{k}{tag}.png")
            datagen.write_png(paths[-1], image)
    out = decode_images(paths, 16, on_error=lambda p, e: e)
    assert torch.equal(out[0::2], torch.from_numpy(small))
    assert torch.equal(out[1::2], resize_square(torch.from_numpy(large), 16))


def test_failed_download_is_unavailable_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from urllib.error import URLError

    from torchvision.datasets import CIFAR10

    def offline(self: CIFAR10) -> None:
        raise URLError("no route to host")

    monkeypatch.setattr(CIFAR10, "download", offline)
    with pytest.raises(DatasetUnavailable, match=r"'cifar10': download into .*cifar-10-batches-py failed: <urlopen error no route to host>"):
        load_split("cifar10", "train", root=tmp_path, download=True)


def test_flips_are_a_dataset_fact_and_a_folder_states_its_own(tmp_path: Path) -> None:
    from harness.data.datasets import hflip_of

    assert (hflip_of("digits"), hflip_of("svhn"), hflip_of("cifar10")) == (False, False, True)
    folder = tmp_path / "glyphs"
    (folder / "a").mkdir(parents=True)
    assert hflip_of(f"imagefolder:{folder}") is True  # no dataset.json: natural images
    (folder / "dataset.json").write_text('{"hflip": false}')
    assert hflip_of(f"imagefolder:{folder}") is False
    (folder / "dataset.json").write_text('{"hflip": "no"}')
    with pytest.raises(ValueError, match="expected an object whose 'hflip' is true or false"):
        hflip_of(f"imagefolder:{folder}")
    (folder / "dataset.json").write_text("{hflip")
    with pytest.raises(ValueError, match="not readable JSON"):
        hflip_of(f"imagefolder:{folder}")


def test_imagefolder_empty_or_of_one_class_is_unusable(tmp_path: Path) -> None:
    from harness.data.errors import DatasetUnusable

    (tmp_path / "empty" / "a").mkdir(parents=True)  # a class folder without an image is no class
    with pytest.raises(DatasetUnusable, match=r"empty is empty: it holds no image\. Fix: put images of each class in "):
        load_split("imagefolder:empty", "train", root=tmp_path)
    datagen.write_imagefolder(tmp_path / "one", ("robot",), 4)
    with pytest.raises(DatasetUnusable, match=r"one holds one class \(robot\); a classifier needs at least 2 classes"):
        load_split("imagefolder:one", "train", root=tmp_path)
    datagen.write_imagefolder(tmp_path / "split" / "train", ("robot",), 2)
    datagen.write_imagefolder(tmp_path / "split" / "val", ("robot",), 2)
    with pytest.raises(DatasetUnusable, match=r"train holds one class \(robot\)"):
        load_split("imagefolder:split", "test", root=tmp_path)


def test_check_available_reads_no_file(tmp_path: Path) -> None:
    from harness.data.datasets import check_available

    check_available("digits", tmp_path)  # embedded
    with pytest.raises(DatasetUnavailable, match=r"'cifar10' \(train split\) is not available offline: .*cifar-10-batches-py does not exist"):
        check_available("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    check_available("cifar10", tmp_path)  # its files are checked when a case loads them
    with pytest.raises(DatasetUnavailable, match=r"folder .*nowhere does not exist"):
        check_available("imagefolder:nowhere", tmp_path)
