"""Running one dense case: a linear segmentation probe on a frozen backbone, one record.

A case is backbone (with weights) x segmentation dataset x device x resolution x precision. Both splits
are read at the case's side (:mod:`harness.data.segmentation`); the frozen backbone's maps of every image
are extracted once (cached on disk under ``--feature-cache``/dense, keyed by the weights, the data's
bytes and everything that changes a map); per seed the head's lr is chosen on a validation split carved
from the training images, the head retrained on all of them and scored on the dataset's val split
(mIoU, pixel accuracy, per-class IoU). Latency is one forward of backbone + head + upsampling at batch 1
and the dense resolution, built and timed by the inference kind's path (the eager runner, round plan).
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
from itertools import product
from pathlib import Path
from typing import Any

import torch

from harness.contract import settings_digest
from harness.data.segmentation import SegSplit, load_seg_split, reader, resolve
from harness.files import write_atomic
from harness.matrix.cases import CaseSpec
from harness.matrix.expand import MatrixCase, backbone_ref, matrix_case
from harness.measure.timing import LatencyStats, plan_rounds, time_rounds
from harness.runtime.devices import DTYPES, synchronize
from harness.settings import Settings
from harness.training.dense import (
    DEFAULT_LR,
    LAYERS,
    LR_GRID,
    DenseModel,
    FeatureMaps,
    evaluate,
    extract_maps,
    train_head,
)
from harness.training.seg_metrics import iou_per_class, mean_iou, pixel_accuracy
from harness.training.selection import VAL_FRACTION, choose, tune_setting

# Bump when the cached maps' meaning changes (what is extracted, how images are normalised).
_CACHE_VERSION = 1


def seg_classes(name: str, data_root: Path | None) -> int:
    """The class count of segmentation dataset ``name`` (0 when it cannot be read here: the case says why)."""
    try:
        form, root = resolve(name, data_root)
        return len(reader(form).classes(root))
    except Exception:  # noqa: BLE001 - preflight or the case itself reports the reason with its fix
        return 0


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """The contract settings of a dense case."""
    from harness.backbones.weights import find_cached

    found = find_cached(spec.weights) if spec.weights is not None else None
    threads = settings.inference_threads or torch.get_num_threads() if torch.device(spec.device).type == "cpu" else None
    return {"threads": threads, "seeds": settings.seeds, "seg_steps": settings.seg_steps, "seg_layers": settings.seg_layers,
            "tune": tune_setting({"lr": list(LR_GRID)}, settings.tune) or {"lr": DEFAULT_LR}, "bench_time_s": settings.bench_time_s,
            "weights_sha256": found.sha256 if found is not None else None}


def cases(settings: Settings) -> list[MatrixCase]:
    """backbone (with weights) x segmentation dataset x device x resolution x precision; none without --seg-datasets."""
    out: dict[str, MatrixCase] = {}
    for token, dataset, device, size, precision in product(settings.backbones, settings.seg_datasets or [], settings.devices,
                                                           settings.img_sizes, settings.precisions):
        ref = backbone_ref(token)
        case = matrix_case("dense", ref.arch, device, precision, batch_size=1, img_size=size, dataset=dataset,
                           num_classes=seg_classes(dataset, settings.data_root), weights=ref if ref.pretrained else None)
        out.setdefault(case.spec.id, case)
    return list(out.values())


def _data_digest(split: SegSplit) -> str:
    h = hashlib.sha256()
    h.update(split.images.numpy().tobytes())
    h.update(split.masks.numpy().tobytes())
    return h.hexdigest()[:16]


class MapCache:
    """The frozen maps of one split for one backbone and weights: read back from disk, or extracted and saved."""

    def __init__(self, spec: CaseSpec, settings: Settings) -> None:
        from harness.backbones.weights import WeightsRef, locate, preprocess_of
        from harness.protocols.frozen import code_suffix

        self.spec, self.settings = spec, settings
        self.ref = spec.weights or WeightsRef(spec.backbone)
        stats = preprocess_of(self.ref)
        self.mean, self.std = stats.mean, stats.std
        self.resolved = locate(self.ref, download=settings.download) if spec.weights is not None else None
        self.backbone_key = spec.backbone_name + code_suffix(spec.backbone)
        self.device = torch.device(spec.device)
        self.layers = LAYERS[settings.seg_layers]
        self._model: FeatureMaps | None = None
        self._seed: int | None = None

    def model(self, init_seed: int | None) -> FeatureMaps:
        from harness.backbones.factory import create_model

        if self._model is None or self._seed != init_seed:
            torch.manual_seed(0 if init_seed is None else init_seed)
            backbone, _ = create_model(self.ref, num_classes=0, img_size=self.spec.img_size, download=self.settings.download)
            self._model = FeatureMaps(backbone, self.spec.backbone, self.layers).to(self.device, DTYPES[self.spec.precision]).eval()
            self._seed = init_seed
        return self._model

    def maps(self, split_name: str, split: SegSplit, init_seed: int | None) -> tuple[list[torch.Tensor], bool, float]:
        """(per-layer maps, read from the cache?, seconds)."""
        key = {"v": _CACHE_VERSION, "backbone": self.backbone_key, "weights": self.resolved.sha256 if self.resolved else None,
               "init_seed": init_seed, "data": _data_digest(split), "split": split_name, "img_size": self.spec.img_size,
               "layers": self.layers, "mean": list(self.mean), "std": list(self.std), "precision": self.spec.precision,
               "device_type": self.device.type, "torch": torch.__version__}
        path = Path(self.settings.feature_cache) / "dense" / f"{settings_digest(key)}.pt"
        start = time.perf_counter()
        if path.is_file():
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data.get("key") == json.dumps(key, sort_keys=True) and data["maps"][0].shape[0] == len(split):
                return list(data["maps"]), True, time.perf_counter() - start
        model = self.model(init_seed)
        maps = extract_maps(model, split.images, self.mean, self.std, self.device)
        synchronize(self.device)
        seconds = time.perf_counter() - start
        payload = {"key": json.dumps(key, sort_keys=True), "maps": maps}
        write_atomic(path, lambda tmp: torch.save(payload, tmp))
        return maps, False, seconds


def _split_indices(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """VTAB's 80/20 carve of the training images (the classification protocols' helper, one stratum)."""
    from harness.data.subsets import split_validation

    return split_validation(torch.arange(n), torch.zeros(n, dtype=torch.int64), fraction=VAL_FRACTION, seed=seed)


def run_dense_case(spec: CaseSpec, settings: Settings) -> dict[str, Any]:
    """Every seed of ``spec``; its flat record (``status`` ok). Raises the data layer's and the weights' errors."""
    wall = time.perf_counter()
    train = load_seg_split(str(spec.dataset), "train", img_size=spec.img_size, data_root=settings.data_root)
    val = load_seg_split(str(spec.dataset), "val", img_size=spec.img_size, data_root=settings.data_root)
    num_classes = train.num_classes
    cache = MapCache(spec, settings)
    device = cache.device
    pretrained = spec.weights is not None
    tuned = tune_setting({"lr": list(LR_GRID)}, settings.tune) is not None
    mious, accs, ious, choices, fit_s, feature_s, hits = [], [], [], [], [], [], []
    head0 = None
    for seed in range(settings.seeds):
        init_seed = None if pretrained else seed
        if seed == 0 or not pretrained:
            train_maps, hit_t, sec_t = cache.maps("train", train, init_seed)
            val_maps, hit_v, sec_v = cache.maps("val", val, init_seed)
            feature_s.append(sec_t + sec_v)
            hits.append({"train": "hit" if hit_t else "miss", "val": "hit" if hit_v else "miss"})
        lr = DEFAULT_LR
        if tuned:
            fit_idx, val_idx = _split_indices(len(train), seed)

            fit_maps, fit_masks = [m[fit_idx] for m in train_maps], train.masks[fit_idx]
            held_maps, held_masks = [m[val_idx] for m in train_maps], train.masks[val_idx]

            def score(value: float, fit_maps: list[torch.Tensor] = fit_maps, fit_masks: torch.Tensor = fit_masks,
                      held_maps: list[torch.Tensor] = held_maps, held_masks: torch.Tensor = held_masks, seed: int = seed) -> tuple[float, float]:
                fitted = train_head(fit_maps, fit_masks, num_classes, lr=value, steps=settings.seg_steps, seed=seed, device=device)
                conf, loss = evaluate(fitted.head, held_maps, held_masks, num_classes, device)
                return mean_iou(conf), loss

            # Ranked by validation mIoU, then cross-entropy; on a tie the smallest lr (the gentlest head).
            choice = choose("lr", "smallest", LR_GRID, score, fit_images=len(fit_idx), val_images=len(val_idx))
            choices.append({**choice.as_record(), "score": "validation mIoU % (then cross-entropy)"})
            lr = choice.chosen
        trained = train_head(train_maps, train.masks, num_classes, lr=lr, steps=settings.seg_steps, seed=seed, device=device)
        fit_s.append(trained.seconds)
        conf, _ = evaluate(trained.head, val_maps, val.masks, num_classes, device)
        mious.append(mean_iou(conf))
        accs.append(pixel_accuracy(conf))
        ious.append(iou_per_class(conf))
        if head0 is None:
            head0 = trained.head
    assert head0 is not None  # seeds >= 1 (the option's parser)
    record: dict[str, Any] = {
        **spec.identity(), "status": "ok",
        "miou": statistics.fmean(mious), "miou_per_seed": mious, "miou_std": statistics.stdev(mious) if len(mious) > 1 else None,
        "pixel_acc": statistics.fmean(accs),
        "iou_per_class": {name: _mean_or_none([row[i] for row in ious]) for i, name in enumerate(train.classes)},
        "classes": list(train.classes), "train_images": len(train), "val_images": len(val),
        "head": {"head": "BatchNorm + 1x1 conv on the resized, concatenated maps; logits bilinearly upsampled",
                 "layers": settings.seg_layers, "channels": [int(m.shape[1]) for m in train_maps],
                 "map_sides": [int(m.shape[-1]) for m in train_maps], "optimizer": "adamw", "steps": settings.seg_steps,
                 "lr": "chosen per seed (tuning)" if tuned else DEFAULT_LR},
        "tuning": choices or None, "pretrained": pretrained, "feature_cache": hits,
        "feature_time_s": statistics.fmean(feature_s), "train_time_s": statistics.fmean(fit_s),
    }
    record.update(_latency(spec, settings, cache.model(None if pretrained else 0), head0))
    if cache.resolved is not None:
        record.update(weights_file=str(cache.resolved.path), weights_source=cache.resolved.source, weights_sha256=cache.resolved.sha256)
    else:
        record["note"] = "dense probe on random weights: a baseline for pretrained features, not a transfer"
    record["case_wall_s"] = time.perf_counter() - wall
    return record


def _mean_or_none(values: list[float]) -> float | None:
    kept = [v for v in values if v == v]  # NaN: the class is absent from the val split's labels and predictions
    return statistics.fmean(kept) if kept else None


def _latency(spec: CaseSpec, settings: Settings, maps: FeatureMaps, head: torch.nn.Module) -> dict[str, Any]:
    """Latency of backbone + head at the dense resolution, batch 1: the inference kind's eager runner and round plan."""
    from harness.measure.runners import build_runner

    device, dtype = torch.device(spec.device), DTYPES[spec.precision]
    model = DenseModel(maps, head.to(device)).to(device, dtype).eval()  # type: ignore[arg-type]
    example = torch.randn(1, 3, spec.img_size, spec.img_size, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    with tempfile.TemporaryDirectory() as workdir:
        runner = build_runner(model, example, "eager", device=device, workdir=Path(workdir), threads=settings.inference_threads)
        try:
            setup = lambda: synchronize(device)  # noqa: E731
            plan = plan_rounds(runner.step, setup, settings.bench_time_s)
            samples = time_rounds(runner.step, setup, plan)
        finally:
            runner.close()
    stats = LatencyStats(samples, 1).as_record()
    return {**stats, "dense_img_size": spec.img_size}
