"""harness.data.features: key digests, cache hits and misses, damaged files, OOM halving, exactness."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from harness.data import features as features_module
from harness.data.augment import prepare
from harness.data.features import FeatureCache, FeatureKey, extract
from harness.data.types import TensorSplit

CPU = torch.device("cpu")
HELD = 16  # stored side of the synthetic images: small, and different from IMG so prepare resizes
IMG = 20
N = 24  # three batches of 8: enough to cover batching and a partial final batch at 10


def make_key(**changes: object) -> FeatureKey:
    base: dict[str, object] = {
        "backbone": "tiny@test.v1", "weights_sha256": None, "init_seed": 0, "dataset": "synthetic", "split": "train",
        "held_size": HELD, "img_size": IMG, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25),
        "precision": "fp32", "device_type": "cpu",
    }
    return FeatureKey(**{**base, **changes})  # type: ignore[arg-type]


def make_split(n: int = N, side: int = HELD, seed: int = 0) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)
    return TensorSplit(images, torch.arange(n, dtype=torch.int64) % 3, ("a", "b", "c"))


class Tiny(torch.nn.Module):
    """conv -> global average pool: a real [B, 4] feature extractor that counts its forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        return self.conv(x).mean(dim=(2, 3))


class OomAbove(Tiny):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"batch {x.shape[0]} > {self.limit}")
        return super().forward(x)


def run(cache: FeatureCache, model: torch.nn.Module, split: TensorSplit, key: FeatureKey | None = None, batch_size: int = 8):
    return cache.get_or_extract(key or make_key(), model, split, device=CPU, batch_size=batch_size, autocast_dtype=None)


# --- FeatureKey -------------------------------------------------------------------------------

PRETRAINED = {"weights_sha256": "a" * 64, "init_seed": None}
# (field, changes to the base key, the new value): each row changes exactly that one field.
FIELD_CHANGES = [
    ("backbone", {}, "tiny@test.v2"),
    ("weights_sha256", PRETRAINED, "b" * 64),
    ("init_seed", {}, 1),
    ("dataset", {}, "imagefolder:/data/other"),
    ("split", {}, "test"),
    ("held_size", {}, 32),
    ("img_size", {}, 224),
    ("mean", {}, (0.485, 0.456, 0.406)),
    ("std", {}, (0.229, 0.224, 0.225)),
    ("precision", {}, "bf16"),
    ("device_type", {}, "cuda"),
    ("corruption", {}, "fog-s3-seed0"),
]


def test_field_table_covers_every_field() -> None:
    assert sorted(name for name, _, _ in FIELD_CHANGES) == sorted(f.name for f in dataclasses.fields(FeatureKey))


@pytest.mark.parametrize(("field", "base", "value"), FIELD_CHANGES, ids=[row[0] for row in FIELD_CHANGES])
def test_digest_changes_with_every_field(field: str, base: dict[str, object], value: object) -> None:
    before = make_key(**base)
    after = dataclasses.replace(before, **{field: value})
    assert after.digest() != before.digest()
    assert after.describe()["digest"] == after.digest()


def test_digest_is_stable_and_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(features_module, "_library_versions", lambda: {"torch": "2.0.0", "timm": "1.0.0"})
    key = make_key()
    assert key.digest() == make_key(mean=[0.5, 0.5, 0.5]).digest()  # a list in, the same key
    assert len(key.digest()) == 16 and int(key.digest(), 16) >= 0
    # Pinned: the same key names the same file in every process and on every machine.
    assert key.digest() == "e39ca814fa53cc53"
    # A clean split's key digests without its corruption field: the files cached before --robustness keep their names.
    fields = {**dataclasses.asdict(key), "mean": [0.5] * 3, "std": [0.25] * 3, "torch": "2.0.0", "timm": "1.0.0"}
    assert fields.pop("corruption") is None
    assert key.digest() == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    monkeypatch.setattr(features_module, "_library_versions", lambda: {"torch": "2.0.1", "timm": "1.0.0"})
    assert key.digest() != "e39ca814fa53cc53"  # a torch release is another key


BAD_KEYS = [
    ({"weights_sha256": None, "init_seed": None}, "init_seed"),
    ({"weights_sha256": "a" * 64, "init_seed": 3}, "must be None"),
    ({"split": "val"}, "split"),
    ({"precision": "fp8"}, "precision"),
    ({"device_type": "tpu"}, "device_type"),
    ({"mean": (0.5, 0.5)}, "3 values"),
    ({"std": (0.5, 0.0, 0.5)}, "positive"),
    ({"held_size": 0}, "held_size"),
    ({"backbone": ""}, "non-empty"),
]


@pytest.mark.parametrize(("changes", "match"), BAD_KEYS, ids=[m for _, m in BAD_KEYS])
def test_bad_keys_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_key(**changes)


def test_path_is_readable_sanitised_and_under_root(tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path)
    key = make_key(backbone="resnet18@digits04", dataset="imagefolder:/data/my set/../x")
    path = cache.path_for(key)
    assert path.parent == tmp_path / "resnet18@digits04"
    assert path.name == f"imagefolder-data-my-set-..-x-train-{IMG}px-fp32-init0-{key.digest()}.pt"
    pretrained = cache.path_for(make_key(backbone="resnet50.a1_in1k", **PRETRAINED))
    assert pretrained.parent.name == "resnet50.a1_in1k" and "init" not in pretrained.name
    assert cache.path_for(make_key(backbone="../../etc")).parent.parent == tmp_path


# --- the cache --------------------------------------------------------------------------------

def test_miss_extracts_then_hit_reads_bit_identical(tmp_path: Path) -> None:
    cache, model, split = FeatureCache(tmp_path), Tiny(), make_split()
    assert cache.get(make_key()) is None
    first = run(cache, model, split)
    assert not first.hit and model.calls == [8, 8, 8]
    assert first.features.shape == (N, 4) and first.features.dtype == torch.float32
    assert torch.equal(first.labels, split.labels) and first.batch_size == 8 and first.seconds > 0
    second = run(cache, model, split)
    assert second.hit and model.calls == [8, 8, 8]  # no forward call on a hit
    assert torch.equal(second.features, first.features) and torch.equal(second.labels, first.labels)
    assert second.path == first.path == cache.path_for(make_key()) and second.batch_size == 8
    # Another seed is another key: extracted again, not served from the first file.
    assert not run(cache, model, split, make_key(init_seed=1)).hit


def test_write_leaves_only_the_feature_file(tmp_path: Path) -> None:
    result = run(FeatureCache(tmp_path), Tiny(), make_split())
    assert os.listdir(result.path.parent) == [result.path.name]  # no .*.tmp beside it
    data = torch.load(result.path, weights_only=True)
    assert data["key"] == make_key().describe() and data["batch_size"] == 8 and data["seconds"] == result.seconds


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign_key(path: Path) -> None:
    data = torch.load(path, weights_only=True)
    torch.save({**data, "key": make_key(init_seed=7).describe()}, path)


def _short_labels(path: Path) -> None:
    data = torch.load(path, weights_only=True)
    torch.save({**data, "labels": data["labels"][:-1]}, path)


DAMAGE = {
    "truncated": _truncate,
    "garbage": lambda path: path.write_bytes(b"not a torch file"),
    "empty": lambda path: path.write_bytes(b""),
    "foreign-key": _foreign_key,
    "short-labels": _short_labels,
    "not-a-dict": lambda path: torch.save([1, 2, 3], path),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_file_is_re_extracted_and_replaced(tmp_path: Path, damage) -> None:
    cache, model, split = FeatureCache(tmp_path), Tiny(), make_split()
    good = run(cache, model, split)
    damage(good.path)
    with pytest.warns(UserWarning, match="re-extracting"):
        again = run(cache, model, split)
    assert not again.hit and len(model.calls) == 6
    assert torch.equal(again.features, good.features)
    assert cache.get(make_key(), labels=split.labels) is not None  # the file was rewritten whole


def test_changed_labels_are_re_extracted(tmp_path: Path) -> None:
    cache, model, split = FeatureCache(tmp_path), Tiny(), make_split()
    run(cache, model, split)
    relabelled = TensorSplit(split.images, split.labels.flip(0), split.classes)
    with pytest.warns(UserWarning, match="labels differ"):
        again = run(cache, model, relabelled)
    assert not again.hit and torch.equal(again.labels, relabelled.labels)
    assert run(cache, model, relabelled).hit


def test_features_equal_a_direct_forward(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    split = make_split(n=20, side=HELD)
    key = make_key(backbone="resnet18", img_size=32)
    # The same batches as the extraction (8, 8, 4): CPU kernels may pick other algorithms per batch shape.
    got = run(FeatureCache(tmp_path), model, split, key, batch_size=8)
    with torch.inference_mode():
        parts = [model(prepare(split.images[i : i + 8], size=32, mean=key.mean, std=key.std)) for i in range(0, 20, 8)]
    assert got.features.shape == (20, 512)
    assert torch.equal(got.features, torch.cat(parts))


def test_out_of_memory_halves_the_batch_and_records_it(tmp_path: Path) -> None:
    cache, model, split = FeatureCache(tmp_path), OomAbove(limit=8), make_split()
    result = run(cache, model, split, batch_size=32)
    assert result.batch_size == 8 and model.calls == [8, 8, 8]  # 32 and 16 failed before any call counted
    assert torch.load(result.path, weights_only=True)["batch_size"] == 8
    assert run(cache, model, split).batch_size == 8  # a hit reports the batch that was used
    assert torch.equal(result.features, run(FeatureCache(tmp_path / "b"), Tiny(), split).features)


def test_out_of_memory_at_batch_one_is_raised(tmp_path: Path) -> None:
    with pytest.raises(torch.OutOfMemoryError):
        run(FeatureCache(tmp_path), OomAbove(limit=0), make_split(), batch_size=4)
    assert not any(tmp_path.rglob("*.pt"))


def test_extract_restores_training_mode_and_checks_inputs() -> None:
    model, split = Tiny().train(), make_split()
    extract(model, split, make_key(), device=CPU, batch_size=8, autocast_dtype=None)
    assert model.training
    with pytest.raises(ValueError, match="held_size"):
        extract(model, make_split(side=HELD + 1), make_key(), device=CPU, batch_size=8, autocast_dtype=None)
    with pytest.raises(ValueError, match="precision"):
        extract(model, split, make_key(), device=CPU, batch_size=8, autocast_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="num_classes=0"):
        extract(torch.nn.Conv2d(3, 2, 3), split, make_key(), device=CPU, batch_size=8, autocast_dtype=None)


def test_bf16_autocast_extraction_stores_float32(tmp_path: Path) -> None:
    key = make_key(precision="bf16")
    result = FeatureCache(tmp_path).get_or_extract(key, Tiny(), make_split(), device=CPU, batch_size=8, autocast_dtype=torch.bfloat16)
    assert result.features.dtype == torch.float32 and result.path.name.split("-")[-3] == "bf16"


def test_take_indexes_the_full_split(tmp_path: Path) -> None:
    result = run(FeatureCache(tmp_path), Tiny(), make_split())
    idx = torch.tensor([5, 0, 17])
    feats, labels = result.take(idx)
    assert torch.equal(feats, result.features[idx]) and labels.tolist() == [2, 0, 2]
