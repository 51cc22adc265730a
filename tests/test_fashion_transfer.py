"""scripts/fashion_transfer.py, the second real transfer: it reads the idx files exactly (gzipped or not),
pads the 28 px images to 32 px without interpolating, and writes the folders the peer and the suite read."""

from __future__ import annotations

import gzip
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fashion_transfer.py"


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fashion_transfer", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _idx(images: np.ndarray, labels: np.ndarray, folder: Path, split: str, zipped: bool) -> None:
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    for name, array, code in ((names[0], images, 3), (names[1], labels, 1)):
        raw = bytes([0, 0, 8, code]) + b"".join(n.to_bytes(4, "big") for n in array.shape) + array.astype(np.uint8).tobytes()
        (folder / (name + ".gz" if zipped else name)).write_bytes(gzip.compress(raw) if zipped else raw)


def test_the_folders_hold_the_idx_images_padded_and_capped(script: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    labels = np.arange(40) % 10  # 4 images a class
    _idx(images, labels, tmp_path, "train", zipped=True)
    _idx(images[:20], labels[:20], tmp_path, "test", zipped=False)  # 2 a class, not gzipped
    out = tmp_path / "out"
    script.write_folders(tmp_path, out, 3, 1)
    train7 = sorted((out / "fmnist59" / "train" / "7").iterdir())
    assert [f.name for f in train7] == ["00007.png", "00017.png", "00027.png"]  # the first 3 of class 7, by index
    with Image.open(train7[1]) as img:
        pixels = np.array(img)
    assert pixels.shape == (32, 32) and (pixels[2:30, 2:30] == images[17]).all() and pixels[:2].sum() == pixels[:, :2].sum() == 0
    assert [f.name for f in sorted((out / "fmnist59" / "test" / "5").iterdir())] == ["00005.png"]
    assert sorted(d.name for d in (out / "fmnist04" / "test").iterdir()) == ["0", "1", "2", "3", "4"]
    assert not (out / "fmnist04" / "train").exists()  # the pretraining reads the arrays
    with pytest.raises(SystemExit, match="neither t10k-images-idx3-ubyte nor t10k-images-idx3-ubyte.gz"):
        script.read_idx(tmp_path / "out", "t10k-images-idx3-ubyte")
