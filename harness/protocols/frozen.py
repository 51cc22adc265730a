"""What the frozen-feature protocols share (``linear``, ``knn``: :class:`Probe` is what each of them
defines): features, the search on a validation split, the seed loop and the record.

Features of each whole split are extracted once per (backbone and weights, dataset, split,
resolution, precision, device type) and cached on disk (:mod:`harness.data.features`); a case's
subset indexes into them, so every other subset, seed and protocol that needs the same features
reads them back instead of running the backbone again. Pretrained weights give one set of features
for every seed; random weights (a baseline, said so in the record) give one per seed, since the
initialisation is the seed's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from harness.backbones.factory import create_model
from harness.backbones.weights import WeightsRef, locate, preprocess_of
from harness.contract import CORRUPTION_SEED
from harness.data.corruptions import corrupted_split
from harness.data.datasets import dataset_source
from harness.data.features import FeatureCache, FeatureKey, Features, extract
from harness.data.subsets import class_counts, parse_subset, split_validation, subset_indices
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.protocols import Progress
from harness.protocols.keys import case_keys, seed_keys
from harness.runtime.devices import synchronize
from harness.runtime.distributed import World
from harness.settings import Settings
from harness.training.classification import macro_f1, per_class_accuracy, topk_accuracy
from harness.training.loop import EVAL_BATCH
from harness.training.recipes import autocast_dtype
from harness.training.robustness import Scorer, SeedRobustness, corruption_top1, robustness_keys
from harness.training.selection import VAL_FRACTION, Choice, Prefer, choose, tune_setting
from harness.training.trained import TrainResult

RANDOM_WEIGHTS_NOTE = "{protocol} on random weights: a baseline for pretrained features, not a transfer"


class Fitted(Protocol):
    """A fitted probe: its fit's seconds (``None``: nothing is fitted) and its scores of new features."""

    @property
    def seconds(self) -> float | None: ...

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """Class scores ``[N, C]`` of ``queries`` (logits, or k-NN votes)."""
        ...


class Probe(Protocol):
    """A frozen-feature protocol: what it fits on a subset's features and how it scores others."""

    name: str
    # The hyperparameter searched (``--tune on``) and its fixed value (``--tune off``).
    param: str
    default: float
    prefer: Prefer

    def grid_values(self, fit_images: int) -> tuple[float, ...]:
        """The values searched for ``fit_images`` fitting images."""
        ...

    def grid(self) -> Mapping[str, object] | None:
        """The search as digested (``tune``); ``None`` when the probe has nothing to search."""
        ...

    def recipe(self, searched: bool) -> tuple[str, float | None]:
        """``(optimizer, weight_decay)`` settings: the probe's fixed choices (a searched one is ``None``)."""
        ...

    def keys(self, tuned: bool) -> dict[str, object]:
        """What the record says of the probe."""
        ...

    def fit(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, value: float, device: torch.device) -> Fitted:
        """The probe fitted on the features ``x`` and labels ``y`` at the hyperparameter ``value``."""
        ...

    def score(self, scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
        """``(top-1 %, loss)`` of validation ``scores``: the search's ranking."""
        ...


def probe_settings(probe: Probe, tune: str) -> dict[str, object]:
    """The train kind's training settings for a frozen-feature protocol: the probe's fixed choices
    (in ``optimizer`` and ``weight_decay``; searched ones are unset and ``tune`` holds their grid),
    nothing of a network's training."""
    searched = tune_setting(probe.grid(), tune)
    optimizer, decay = probe.recipe(searched is not None)
    return {"schedule": None, "optimizer": optimizer, "lr": None, "weight_decay": decay, "label_smoothing": None, "augment": None,
            "hflip": None, "early_stop": None, "val_fraction": None, "grad_accum": None, "clip_grad": None, "tune": searched}


def search_probe(probe: Probe, train_f: Features, indices: torch.Tensor, num_classes: int, seed: int,
                 device: torch.device) -> Choice:
    """The probe's hyperparameter chosen on a stratified validation split of the subset ``indices``.

    Each grid point is fitted on the other 80 % of the subset and scored by validation top-1; only
    the training split's features are read (the test split plays no part in the choice).
    """
    fit_idx, val_idx = split_validation(indices, train_f.labels, fraction=VAL_FRACTION, seed=seed)
    x_fit, y_fit = train_f.take(fit_idx)
    x_val, y_val = train_f.take(val_idx)

    def score(value: float) -> tuple[float, float]:
        return probe.score(probe.fit(x_fit, y_fit, num_classes, value, device).scores(x_val), y_val)

    return choose(probe.param, probe.prefer, probe.grid_values(len(fit_idx)), score, fit_images=len(fit_idx), val_images=len(val_idx))


def code_suffix(backbone: str) -> str:
    """``#code=DIGEST`` for a team's own backbone (another version of its code is another feature extractor,
    under the same name and weights), ``""`` for a timm or registry name."""
    from harness.backbones.own import code_digest, code_files, is_own, own_backbone

    return f"#code={code_digest(code_files(own_backbone(backbone)))}" if is_own(backbone) else ""


class Extractor:
    """The features of one split for one set of weights: from the cache, or by running the backbone once."""

    def __init__(self, spec: CaseSpec, options: Settings, held_size: int) -> None:
        self.spec, self.options = spec, options
        self.device = torch.device(spec.device)
        self.cache = FeatureCache(options.feature_cache)
        self.ref = spec.weights or WeightsRef(spec.backbone)
        stats = preprocess_of(self.ref)  # random weights: the suite's from-scratch normalisation
        self.mean, self.std = stats.mean, stats.std
        self.resolved = locate(self.ref, download=options.download) if spec.weights is not None else None
        self.dataset = dataset_source(str(spec.dataset), options.data_root)  # a folder by its resolved path
        self.held_size = held_size
        self.amp = autocast_dtype(spec.precision, self.device)
        self._model: torch.nn.Module | None = None
        self._model_seed: int | None = None

    def key(self, split: str, init_seed: int | None) -> FeatureKey:
        return FeatureKey(
            backbone=self.spec.backbone_name + code_suffix(self.spec.backbone), weights_sha256=self.resolved.sha256 if self.resolved else None, init_seed=init_seed,
            dataset=self.dataset, split=split, held_size=self.held_size, img_size=self.spec.img_size, mean=self.mean, std=self.std,
            precision=self.spec.precision, device_type=self.device.type,
        )

    def features(self, split_name: str, split: TensorSplit, init_seed: int | None) -> Features:
        key = self.key(split_name, init_seed)
        cached = self.cache.get(key, labels=split.labels.cpu())  # looked up before the backbone is built
        if cached is not None:
            return cached
        return self.cache.extract_and_save(key, self._backbone(init_seed), split, device=self.device, batch_size=EVAL_BATCH, autocast_dtype=self.amp)

    def corrupted_features(self, test_split: TensorSplit, name: str, severity: int, init_seed: int | None) -> Features:
        """Features of the test split under corruption ``name`` at ``severity`` (cached like the clean split's;
        on a hit nothing is corrupted and no backbone is built)."""
        key = dataclasses.replace(self.key("test", init_seed), held_size=self.spec.img_size,
                                  corruption=f"{name}-s{severity}-seed{CORRUPTION_SEED}")
        cached = self.cache.get(key, labels=test_split.labels.cpu())
        if cached is not None:
            return cached
        split = corrupted_split(test_split.to(self.device), name, severity, self.spec.img_size, seed=CORRUPTION_SEED)
        return self.cache.extract_and_save(key, self._backbone(init_seed), split, device=self.device, batch_size=EVAL_BATCH, autocast_dtype=self.amp)

    def _backbone(self, init_seed: int | None) -> torch.nn.Module:
        """The pooled-feature model (``num_classes=0``), built only when some split is not cached."""
        if self._model is None or self._model_seed != init_seed:
            torch.manual_seed(0 if init_seed is None else init_seed)
            model, _ = create_model(self.ref, num_classes=0, img_size=self.spec.img_size, download=self.options.download)
            self._model, self._model_seed = model.to(self.device).eval(), init_seed
        return self._model


def extract_train_features(spec: CaseSpec, options: Settings, train_split: TensorSplit,
                           only: torch.Tensor | None = None) -> tuple[Features, torch.device]:
    """The pretrained backbone's features of the training split, and the device, for LP-FT.

    The whole split's cached features when the cache has them. Otherwise, given ``only`` (the indices
    the case's seeds train on), just those images run through the backbone and nothing is cached:
    a fine-tune of 100 images drawn from Fashion-MNIST's 60,000 extracts 100 images, not 60,000
    (:func:`harness.data.features.extract` is per image, so those rows equal the whole split's, up
    to the float rounding of another batch). The other rows are NaN, so a read outside ``only``
    cannot pass unseen. ``hit`` is then false and ``path`` the file a whole-split extraction would write.
    """
    extractor = Extractor(spec, options, held_size=int(train_split.images.shape[-1]))
    if only is None or len(only) == len(train_split):
        return extractor.features("train", train_split, None), extractor.device
    key = extractor.key("train", None)
    cached = extractor.cache.get(key, labels=train_split.labels.cpu())
    if cached is not None:
        return cached, extractor.device
    part, used, seconds = extract(extractor._backbone(None), train_split.take(only), key, device=extractor.device,
                                  batch_size=EVAL_BATCH, autocast_dtype=extractor.amp)
    rows = torch.full((len(train_split), part.shape[1]), float("nan"), dtype=part.dtype)
    rows[only] = part
    return Features(rows, train_split.labels.cpu(), key, False, seconds, extractor.cache.path_for(key), used), extractor.device


def run_frozen_case(probe: Probe, spec: CaseSpec, options: Settings, train_split: TensorSplit, test_split: TensorSplit) -> dict[str, Any]:
    """Every seed of a frozen-feature case (``probe``) on cached features; the flat record of the train kind.

    Raises ``WeightsUnavailable`` (a skip) before any feature is extracted when the weights are not
    cached offline.
    """
    extractor = Extractor(spec, options, held_size=int(train_split.images.shape[-1]))
    subset = parse_subset(str(spec.subset))
    pretrained = spec.weights is not None
    results: list[TrainResult] = []
    cache_use: dict[str, list[str]] = {"train": [], "test": []}
    feature_s: list[float] = []
    fit_s: list[float] = []
    counts: dict[str, int] = {}
    tuned = tune_setting(probe.grid(), options.tune) is not None
    choices: list[dict[str, object]] = []
    robust: list[SeedRobustness] = []
    clean_eval_s: list[float] = []
    wall = time.perf_counter()
    for seed in range(options.seeds):
        init_seed = None if pretrained else seed
        if pretrained and seed > 0:  # one set of features serves every seed
            seed_feature_s = 0.0
        else:
            train_f, test_f = extractor.features("train", train_split, init_seed), extractor.features("test", test_split, init_seed)
            cache_use["train"].append("hit" if train_f.hit else "miss")
            cache_use["test"].append("hit" if test_f.hit else "miss")
            seed_feature_s = train_f.seconds + test_f.seconds
        feature_s.append(seed_feature_s)
        indices = subset_indices(train_split.labels, subset, seed=seed, num_classes=train_split.num_classes, dataset=str(spec.dataset))
        counts = class_counts(train_split.labels, indices, train_split.classes)
        x, y = train_f.take(indices)
        device = extractor.device
        choice = search_probe(probe, train_f, indices, train_split.num_classes, seed, device) if tuned else None
        if choice is not None:
            choices.append(choice.as_record())
        fitted = probe.fit(x, y, train_split.num_classes, probe.default if choice is None else choice.chosen, device)
        if fitted.seconds is not None:
            fit_s.append(fitted.seconds)
        start = time.perf_counter()  # evaluation: the test split's scores, not the fit
        scores = fitted.scores(test_f.features).float().cpu()
        synchronize(device)
        eval_s = time.perf_counter() - start
        labels = test_f.labels
        if options.robustness:
            robust.append(corruption_top1(_frozen_scorer(extractor, fitted, test_split, init_seed), options.robustness,
                                          options.robust_severities, device))
            clean_eval_s.append(test_f.seconds + eval_s)  # the clean split through the same path: features, then the head
        results.append(TrainResult(
            top1=topk_accuracy(scores, labels, k=1), top5=topk_accuracy(scores, labels, k=5), macro_f1=macro_f1(scores, labels),
            per_class_acc=per_class_accuracy(scores, labels), curve=[], curve_split="test", epochs_to_target=None,
            train_time_s=fit_s[-1] if fit_s else 0.0, train_ips=0.0, peak_train_mem_bytes=0, epochs_run=0, best_epoch=0,
            eval_time_s=eval_s,
        ))
    wall = time.perf_counter() - wall
    record: dict[str, Any] = {
        **case_keys(spec, train_split, test_split, counts, options.seeds),
        **seed_keys(results),
        "probe": probe.keys(tuned),
        "tuning": choices or None,
        "pretrained": pretrained,
        "feature_dim": int(train_f.features.shape[1]),
        "feature_cache": cache_use,
        "feature_files": [str(train_f.path), str(test_f.path)],
        "feature_time_s": sum(feature_s) / len(feature_s),
        "eval_time_s": sum(r.eval_time_s for r in results) / len(results),
        "held_img_size": extractor.held_size,
        "case_wall_s": wall,
    }
    if fit_s:
        record["train_time_s"] = sum(fit_s) / len(fit_s)
    if robust:
        record.update(robustness_keys(robust, options.robust_severities, sum(clean_eval_s) / len(clean_eval_s)))
    return {**record, **weights_keys(extractor, spec.protocol)}


def _frozen_scorer(extractor: Extractor, fitted: Fitted, test_split: TensorSplit, init_seed: int | None) -> Scorer:
    """The fitted head's scores of each corrupted test split's features: robustness costs their extraction only."""
    def score(name: str, severity: int) -> tuple[torch.Tensor, torch.Tensor]:
        features = extractor.corrupted_features(test_split, name, severity, init_seed)
        return fitted.scores(features.features), features.labels

    return score


def weights_keys(extractor: Extractor, protocol: str) -> dict[str, Any]:
    """What a frozen-feature record says of its weights: the file, its source and sha256, or, on
    random weights, that the case is a baseline and no transfer."""
    r = extractor.resolved
    if r is None:
        return {"note": RANDOM_WEIGHTS_NOTE.format(protocol=protocol)}
    return {"weights_file": str(r.path), "weights_source": r.source, "weights_sha256": r.sha256}


class FrozenProtocol:
    """A frozen-feature protocol's module functions (``grid``, ``settings_of``, ``run``) for its probe:
    a module binds them from one instance (``_PROTOCOL = FrozenProtocol(PROBE)``), and that is all it exports."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def grid(self, settings: Settings) -> Mapping[str, object] | None:
        return self.probe.grid()

    def settings_of(self, spec: CaseSpec, settings: Settings) -> dict[str, object]:
        return probe_settings(self.probe, settings.tune)

    def run(self, spec: CaseSpec, settings: Settings, train_split: TensorSplit, test_split: TensorSplit, world: World,
            progress: Progress | None) -> dict[str, Any]:
        return run_frozen_case(self.probe, spec, settings, train_split, test_split)
