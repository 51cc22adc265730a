"""The run contract: vocabularies, the rows of every open set, and what makes two cases comparable.

Everything the suite writes and judges is described here once, and this module imports nothing
else of the project. The record builder, the run reader, compare, the noise history, the gate,
the report and the manual's tables (``python -m harness contract``) all read it:

- a new metric is one :class:`Metric` row in :data:`METRICS` (and its key in its kind's row);
- a new kind is one :class:`Kind` row plus its module :mod:`harness.kinds`.<name> (and its fixture
  and benchmark file); a new protocol one :class:`Protocol` row plus :mod:`harness.protocols`.<name>;
  a new runtime one :class:`Runtime` row plus :mod:`harness.measure.runners`.<name>; a new family
  one :class:`Family` row;
- a new axis is one :class:`~harness.matrix.cases.CaseSpec` field, or one entry of a kind's
  ``settings`` (what a case records under ``settings`` and digests into ``settings_digest``).

Two cases are comparable when their ``case_id`` (every identity axis) and their settings digest
agree; otherwise compare answers "not comparable: <what differs>", never a regression.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

# Version 2 added the per-case ``settings`` and ``settings_digest``; version 3 the train setting
# ``weights_sha256`` (and the identity keys protocol, weights, backbone_name). Older runs are read by
# filling in the settings they ran with (harness.results.schema).
# Version 4 counts training in optimiser steps: the train setting ``epochs`` became ``schedule`` (the
# rule that sets the steps), ``tune`` (the hyperparameter search) and ``hflip`` (a dataset's flips,
# an image folder's from its dataset.json) were added.
# Version 5 added the train setting ``robustness`` (--robustness: corruptions, severities, seed; unset before).
SCHEMA_VERSION = 5

# --- vocabularies: each defined here once --------------------------------------------------
STATUSES = ("ok", "failed")
DEVICE_TYPES = ("cpu", "cuda", "mps")
PRECISIONS = ("fp32", "fp16", "bf16")
# `standard` is crop + flip; randaugment/mixup/cutmix add to it; `none` turns everything off.
AUGMENTS = ("standard", "randaugment", "mixup", "cutmix", "none")
# Every augmentation but `standard` itself and `none` adds to the standard crop + flip.
_ADD_TO_STANDARD = frozenset(AUGMENTS) - {"standard", "none"}
# The training resolution that means "the input size of the backbone's weights" (train-img-sizes).
NATIVE = "native"
# Mean/std 0.5 maps [0, 1] to [-1, 1]. Models here train from scratch, so ImageNet statistics
# carry no meaning; a fixed symmetric range treats every dataset alike (grey digits included).
# The normalisation of a model trained from scratch here: [0, 1] -> [-1, 1] on every channel.
SCRATCH_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SCRATCH_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
# --tune: choose each protocol's hyperparameter on a validation split (on), or one fixed setting (off).
TUNE_MODES = ("on", "off")

Better = Literal["higher", "lower"]

# --- the open sets: one row each, and the module the row names by its name -------------------
# A protocol's row is read here; how it runs is the module harness.protocols.<name>, a runtime's
# builder is harness.measure.runners.<name> ("-" read as "_"), a kind's runner harness.kinds.<name>.
# tests/test_registries.py checks that every row has its module and every module its row.

@dataclass(frozen=True)
class Family:
    """A backbone family: what it means, and the defaults its training reads.

    ``scratch`` names the from-scratch recipe rule (:data:`harness.training.recipes.SCRATCH_RULES`);
    ``freeze_norm_stats``: a fine-tune keeps the pretrained BatchNorm running statistics.
    """

    name: str
    meaning: str
    scratch: Literal["sgd", "adamw"]
    freeze_norm_stats: bool


_FAMILIES = (
    # BatchNorm frozen in a fine-tune: the running statistics of the pretraining data kept (measured,
    # resnet18 digits 0-4 -> 5-9, 300 images, batch 32: with batch statistics the LP-FT head's
    # validation top-1 fell from 98.3 to 90.0 within 25 steps at the smallest lr; frozen, it starts
    # where the probe ends).
    Family("cnn", "convolutional backbones", "sgd", True),
    # LayerNorm has no running statistics: nothing to freeze.
    Family("transformer", "vision transformers", "adamw", False),
    # Hybrids mix BatchNorm stems with attention blocks: their BatchNorm is frozen like a CNN's.
    Family("hybrid", "hybrid conv/attention and MetaFormer backbones", "adamw", True),
)
FAMILY_SPECS: Mapping[str, Family] = {f.name: f for f in _FAMILIES}
FAMILIES: tuple[str, ...] = tuple(FAMILY_SPECS)


@dataclass(frozen=True)
class Protocol:
    """How a train case uses a backbone (its run function: the module ``harness.protocols.<name>``).

    ``features``: reads the frozen backbone's cached features instead of training the network.
    ``weights``: ``never`` (the case starts from random weights whatever the backbone names),
    ``optional`` (pretrained when named; on random weights the record calls it a baseline),
    ``required`` (a backbone without pretrained weights is a skip naming the fetch command).
    ``recipe``: the default recipe of a protocol that trains a classifier network
    (:data:`harness.training.recipes.RECIPES`; ``None`` for one that trains none, or trains with its
    own optimiser), and ``warmup`` the share of its step schedule spent warming up (``None``: it
    trains no network).
    """

    name: str
    meaning: str
    features: bool
    weights: Literal["never", "optional", "required"]
    recipe: Literal["scratch", "finetune"] | None
    warmup: float | None
    # Needs a CLIP model's text tower (its head or its training is made of prompts): on an image
    # backbone it is a skip naming the fix.
    text: bool = False
    # --robustness scores its classifier on the corrupted test splits (the CLIP protocols do not yet).
    robust: bool = True


_PROTOCOLS = (
    # Warm-up: BiT's 20 % (100 of its 500 small-data steps) from scratch; 10 % for LP-FT, whose head
    # starts from the fitted probe, so its first gradients do not kick the pretrained features the
    # way a random head's do.
    Protocol("scratch", "the whole network from random weights", False, "never", "scratch", 0.2),
    Protocol("finetune", "the whole network from pretrained weights, its head from the linear probe: LP-FT", False, "required", "finetune", 0.1),
    Protocol("linear", "a linear head on frozen features", True, "optional", None, None),
    Protocol("knn", "k-nearest neighbours on frozen features, no training", True, "optional", None, None),
    # A CLIP model's text tower turns class names into the head; the image tower's features are cached
    # like linear's and knn's. On random weights it runs as the chance-level baseline.
    Protocol("zeroshot", "a CLIP model's text tower names the classes (prompts): no training", True, "optional", None, None, text=True, robust=False),
    # Its own AdamW (harness.protocols.contrastive), not a classifier's recipe; BiT's 10 % warm-up of a fine-tune.
    Protocol("contrastive", "both towers of a CLIP model trained with ClipLoss on image-caption pairs, then read zero-shot",
             False, "optional", None, 0.1, text=True, robust=False),
)
PROTOCOL_SPECS: Mapping[str, Protocol] = {p.name: p for p in _PROTOCOLS}
PROTOCOLS: tuple[str, ...] = tuple(PROTOCOL_SPECS)
# The protocols that read a frozen backbone's features (cached on disk, harness.data.features).
FEATURE_PROTOCOLS: tuple[str, ...] = tuple(p.name for p in _PROTOCOLS if p.features)
ROBUST_PROTOCOLS: tuple[str, ...] = tuple(p.name for p in _PROTOCOLS if p.robust)


@dataclass(frozen=True)
class Runtime:
    """An inference runtime (its builder: the module ``harness.measure.runners.<name>``).

    ``devices``: the device types it runs on. ``cpu_arena``: on the CPU it allocates in an arena of
    its own, invisible to torch's tensor accounting, so a case records no peak memory there rather
    than a wrong one (an RSS delta does not repeat run to run). ``parity``: its outputs must match
    eager's within tolerance (a quantised runtime records its difference instead).
    """

    name: str
    meaning: str
    devices: tuple[str, ...]
    cpu_arena: bool
    parity: bool


_RUNTIMES = (
    Runtime("eager", "torch eager mode", ("cpu", "cuda", "mps"), False, True),
    Runtime("compile", "torch.compile (inductor)", ("cpu", "cuda", "mps"), False, True),
    Runtime("onnxruntime", "ONNX export run by ONNX Runtime", ("cpu", "cuda"), True, True),
    Runtime("onnxruntime-int8", "ONNX export, dynamic int8 quantisation, ONNX Runtime's CPU provider", ("cpu",), True, False),
)
RUNTIME_SPECS: Mapping[str, Runtime] = {r.name: r for r in _RUNTIMES}
RUNTIMES: tuple[str, ...] = tuple(RUNTIME_SPECS)


@dataclass(frozen=True)
class Tracker:
    """An experiment tracker ``--track`` logs a finished run's cases to, offline, under ``--track-dir``
    (its writer and reader: the module ``harness.results.trackers.<name>``).

    ``package`` is the import its module needs, installed by the project's extra of the tracker's
    name (``pip install -e '.[mlflow]'``); ``where`` is what it writes, relative to ``--track-dir``.
    """

    name: str
    meaning: str
    package: str
    where: str


_TRACKERS = (
    Tracker("mlflow", "MLflow runs in a local SQLite store (mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db)", "mlflow", "mlflow.db"),
    Tracker("wandb", "Weights & Biases offline runs (wandb sync DIR/wandb/offline-run-* uploads them)", "wandb", "wandb/"),
    Tracker("tensorboard", "TensorBoard event files (tensorboard --logdir DIR/tensorboard)", "tensorboard", "tensorboard/"),
)
TRACKER_SPECS: Mapping[str, Tracker] = {t.name: t for t in _TRACKERS}
TRACKERS: tuple[str, ...] = tuple(TRACKER_SPECS)


@dataclass(frozen=True)
class Corruption:
    """A camera corruption ``--robustness`` can apply to a test split (its code: :mod:`harness.data.corruptions`).

    ``source``: ``imagenet-c`` (Hendrycks & Dietterich 2019, at CIFAR-10-C's 32 px parameters) or
    ``robot`` (a RoboDepth-style robot condition ImageNet-C lacks). ``robot``: also in the ``robot`` group.
    """

    name: str
    source: Literal["imagenet-c", "robot"]
    robot: bool
    meaning: str


_CORRUPTIONS = (
    Corruption("gaussian_noise", "imagenet-c", True, "additive Gaussian sensor noise"),
    Corruption("shot_noise", "imagenet-c", True, "Poisson photon (shot) noise"),
    Corruption("impulse_noise", "imagenet-c", False, "salt-and-pepper pixels"),
    Corruption("defocus_blur", "imagenet-c", True, "out of focus: an anti-aliased disk kernel"),
    Corruption("motion_blur", "imagenet-c", True, "the camera panning: a horizontal line kernel (a fixed direction, 0 degrees)"),
    Corruption("fog", "imagenet-c", True, "a plasma-fractal haze"),
    Corruption("brightness", "imagenet-c", True, "over-exposure: HSV value raised"),
    Corruption("contrast", "imagenet-c", False, "contrast pulled to the image mean"),
    Corruption("pixelate", "imagenet-c", False, "box down-sampling and back"),
    Corruption("jpeg_compression", "imagenet-c", True, "JPEG artefacts (libjpeg via torchvision)"),
    Corruption("low_light", "robot", True, "a dark scene: exposure cut, then shot and read noise at high gain (RoboDepth's dark)"),
)
CORRUPTION_SPECS: Mapping[str, Corruption] = {c.name: c for c in _CORRUPTIONS}
CORRUPTIONS: tuple[str, ...] = tuple(CORRUPTION_SPECS)
# The names --robustness takes for a set of corruptions.
CORRUPTION_GROUPS: Mapping[str, tuple[str, ...]] = {
    "all": CORRUPTIONS,
    "imagenet-c": tuple(c.name for c in _CORRUPTIONS if c.source == "imagenet-c"),
    "robot": tuple(c.name for c in _CORRUPTIONS if c.robot),
}
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# Every corrupted split is drawn from this seed (mixed with the corruption and severity): one fixed corrupted
# test set per dataset, the same for every backbone, protocol and training seed, as ImageNet-C is one fixed set.
CORRUPTION_SEED = 0


def module_name(name: str) -> str:
    """The module an open set's row names: ``onnxruntime-int8`` -> ``onnxruntime_int8``."""
    return name.replace("-", "_")

# timed: raw samples exist (or the metric is a clock reading); seeded: repeated over seeds;
# exact: deterministic, any change is the model's or the code's, not noise.
NoiseClass = Literal["timed", "seeded", "exact"]


@dataclass(frozen=True)
class Metric:
    """One number a case records, and how compare judges it.

    ``tolerance`` is the default gate (``"10%"``, ``"-1pp"``, ``"0"``), ``None`` for metrics that
    are recorded but not gated unless asked. ``samples`` names the record key holding the raw
    repeated measurements behind the figure. ``pp_scale`` is percentage points per unit, for
    metrics that accept a ``pp`` tolerance.
    """

    key: str
    unit: str
    better: Better
    noise: NoiseClass
    meaning: str
    tolerance: str | None = None
    samples: str | None = None
    pp_scale: float | None = None
    # Counts what the CPU's kernels execute (instructions): compared only between hosts whose capability
    # and kernel-picking flags agree (harness.results.hosts), as a timed metric only within one host class.
    kernels: bool = False


LATENCY_SAMPLES = "latency_samples_ms"
SEED_SAMPLES = "top1_per_seed"

# Default tolerances. latency 10%: run-to-run drift of a pinned, quiet machine is a few percent
# and smaller slowdowns do not change which backbone a team ships. Memory 5%: allocator block
# rounding moves CUDA peaks by 1-2%. params/gmacs 0: fixed by the architecture, any change means
# the model changed. top1 -1pp: the smallest drop a small-data user acts on (seed noise is
# checked separately). throughput is batch/latency from the same rounds: gating it too would
# report every slowdown twice, so it is opt-in. Planned batches 5%: the memory probe is exact,
# but a batch or two either way does not change a deployment decision.
_METRICS = (
    Metric("latency_p50_ms", "ms", "lower", "timed", "median latency of one forward of the whole batch", "10%", LATENCY_SAMPLES),
    Metric("latency_p90_ms", "ms", "lower", "timed", "90th percentile latency", None, LATENCY_SAMPLES),
    Metric("latency_p99_ms", "ms", "lower", "timed", "99th percentile latency", None, LATENCY_SAMPLES),
    Metric("latency_mean_ms", "ms", "lower", "timed", "mean latency", None, LATENCY_SAMPLES),
    Metric("throughput_ips", "img/s", "higher", "timed", "images per second at the median: batch / p50", None, LATENCY_SAMPLES),
    Metric("energy_mj_per_img", "mJ", "lower", "timed", "energy per image while timing (with --power)"),
    Metric("params", "count", "lower", "exact", "parameter count", "0"),
    # Not gated by default: the image tower (params, gated at 0) is what a robot runs; pass
    # --fail-on clip_params_total:0 to hold the text tower too.
    Metric("clip_params_total", "count", "lower", "exact", "a CLIP backbone: parameters of the whole model, text tower included (params: the image tower)"),
    Metric("text_encode_ms", "ms", "lower", "timed", "a CLIP backbone: the text tower encoding --num-classes x templates prompts, once (median of 3)"),
    Metric("gmacs", "GMACs", "lower", "exact", "multiply-accumulates per image at batch 1", "0"),
    # Counted, not timed (harness.measure.instructions): A/A across 8 processes on a loaded 2-core VM
    # spread 0.22 % (resnet18), 0.28 % (efficientnet_b0), 0.53 % (lcnet_100; glibc malloc's share moves),
    # so 1 % is about twice the worst and still sees an elementwise rewrite GMACs miss (+9.3 % for a
    # hand-written tanh GELU); PyTorch gates its PRs on instruction counts at 1.5-2.5 %. Counts depend on the kernels the CPU
    # capability selects (AVX2 vs AVX-512), like a latency depends on the host.
    Metric("instructions", "count", "lower", "exact", "CPU instructions of one forward of the whole batch, one thread, counted under valgrind's callgrind (with --count-instructions)", "1%",
           kernels=True),
    Metric("weights_bytes", "bytes", "lower", "exact", "parameter and buffer bytes"),
    Metric("peak_mem_bytes", "bytes", "lower", "exact", "peak memory of one forward, weights and input included", "5%"),
    Metric("top1", "%", "higher", "seeded", "top-1 accuracy on the test split, mean over seeds", "-1pp", SEED_SAMPLES, 1.0),
    Metric("top5", "%", "higher", "seeded", "top-5 accuracy, mean over seeds", None, None, 1.0),
    # --robustness: accuracy under the corrupted test splits, seed-paired like top1 and gated like it.
    Metric("robust_top1", "%", "higher", "seeded", "--robustness: mean top-1 over the corruptions and severities run (mean over seeds)", "-1pp",
           "robust_top1_per_seed", 1.0),
    Metric("robust_worst_top1", "%", "higher", "seeded", "--robustness: top-1 of the worst corruption, averaged over its severities (mean over seeds)", None, None, 1.0),
    Metric("robust_time_s", "s", "lower", "timed", "--robustness: corrupting the test split and scoring it, every corruption and severity, per seed"),
    Metric("macro_f1", "0-1", "higher", "seeded", "macro-averaged F1, mean over seeds", None, None, 100.0),
    Metric("int8_top1_change_pp", "pp", "higher", "exact", "top-1 change of the trained model as dynamic-int8 ONNX", None, None, 1.0),
    Metric("train_time_s", "s", "lower", "timed", "training steps' time per seed, device-synchronised (linear: the head's fit; knn: none)"),
    Metric("eval_time_s", "s", "lower", "timed", "evaluation time per seed: the per-epoch curve on a fixed sample and the final full-split evaluation"),
    Metric("feature_time_s", "s", "lower", "timed", "linear/knn: extracting both splits' features (read time when cached)"),
    Metric("train_ips", "img/s", "higher", "timed", "training images per second"),
    Metric("peak_train_mem_bytes", "bytes", "lower", "exact", "peak memory of one optimiser step", "5%"),
    Metric("plan_inference_estimated_max_batch", "images", "higher", "exact", "largest inference batch the fit predicts within the budget"),
    Metric("plan_inference_searched_max_batch", "images", "higher", "exact", "largest inference batch found by search", "5%"),
    Metric("plan_train_estimated_max_batch", "images", "higher", "exact", "largest training batch the fit predicts within the budget"),
    Metric("plan_train_searched_max_batch", "images", "higher", "exact", "largest training batch found by search", "5%"),
    # --- dense (segmentation probe on frozen features; harness.kinds.dense) ---
    # mIoU gated like top-1: -1pp, the smallest drop a team acts on; seed noise is checked by the
    # gate's seeded-noise rule over miou_per_seed (a head's init and batch order are the seed's).
    Metric("miou", "%", "higher", "seeded", "dense: mean intersection-over-union over the classes present, on the validation split, mean over seeds",
           "-1pp", "miou_per_seed", 1.0),
    Metric("pixel_acc", "%", "higher", "seeded", "dense: share of labelled (not ignored) pixels classified right, mean over seeds", None, None, 1.0),
    # Every kind: what the case cost in wall time, the cost `--shard K/N` balances shards by.
    Metric("duration_s", "s", "lower", "timed", "the case's wall time in pytest: set-up, call and teardown"),
)
METRICS: Mapping[str, Metric] = {m.key: m for m in _METRICS}

# The range a value of each unit can take and still be a measurement; a run file holding one outside
# it (or NaN, or an infinity) is refused by every reader, never judged (harness.results.schema).
# The bounds are generous on purpose: they catch a hand-edited or broken file, not a slow machine.
UNIT_BOUNDS: Mapping[str, tuple[float, float]] = {
    # Above 0: no forward pass takes under a picosecond (1e-9 ms), and noise divides by latencies;
    # 1e9 ms is 11.6 days for one forward or one text encoding.
    "ms": (1e-9, 1e9),
    # 1e6 s (11.6 days) for a case's training, evaluation or wall time: longer is no small-data case.
    "s": (0.0, 1e6),
    # 1e12 images per second: a thousand times the fastest accelerator's throughput on the smallest model.
    "img/s": (0.0, 1e12),
    # 1e9 mJ (a megajoule) per image: a kettle boiling for ten minutes per image.
    "mJ": (0.0, 1e9),
    # 1e13 parameters: ten times the largest model ever trained.
    "count": (0.0, 1e13),
    # 1e9 GMACs (1e18 multiply-accumulates) per image: a million times a ViT-H at 224 px.
    "GMACs": (0.0, 1e9),
    # 1e16 bytes (10 PB): beyond any device's memory, and any weights file.
    "bytes": (0.0, 1e16),
    # Shares are shares: a top-1 of 101 % or -1 % is not an accuracy.
    "%": (0.0, 100.0),
    "0-1": (0.0, 1.0),
    "pp": (-100.0, 100.0),
    # 1e9 images in one batch: beyond any memory budget the planner takes.
    "images": (0.0, 1e9),
}


def metric_range_problem(key: str, value: float, label: str | None = None) -> str | None:
    """Why ``value`` of the metric ``key`` (shown as ``label``: a sample of it) is not a measurement (NaN,
    infinite, or outside its unit's :data:`UNIT_BOUNDS`), or ``None`` when it can be one."""
    unit, label = METRICS[key].unit, label or key
    low, high = UNIT_BOUNDS[unit]
    if value != value or value in (float("inf"), float("-inf")):  # NaN is the only value unequal to itself
        return f"{label} is {value!r}, not a number"
    if not low <= value <= high:
        return f"{label} is {value:g} {unit}, outside [{low:g}, {high:g}] where a {unit} value can be a measurement"
    return None


@dataclass(frozen=True)
class Kind:
    """A kind of case: what it records and how it runs.

    ``settings`` are the keys of the session's settings that change this kind's results but are
    not in the case id; a case records their resolved values and their digest. ``rounds``:
    ``many`` is timed over many rounds (latency), ``once`` is one timed round of the whole work.
    How it runs is the module ``harness.kinds.<name>`` (its cases' expansion and settings); its
    pytest fixture is ``<name>_case`` (``fixtures/<name>.py``), its benchmark ``benchmarks/test_<name>.py``.

    ``cost`` is how ``--shard`` estimates a case that never ran (:mod:`harness.scale.shards`):
    ``training`` in GMACs x images x passes x seeds, ``timed`` in its timed seconds plus set-up,
    ``fixed`` one unit a case; ``seconds_per_unit`` is the estimate before stored runs calibrate it.

    ``headline`` are the metrics the end of a run ranks its cases on (best and worst backbone,
    :mod:`harness.results.summary`): the figures a person chooses a backbone by.
    """

    name: str
    meaning: str
    metrics: tuple[str, ...]
    settings: tuple[str, ...]
    rounds: Literal["many", "once"]
    cost: Literal["training", "timed", "fixed"]
    seconds_per_unit: float
    headline: tuple[str, ...] = ()


_INFERENCE_METRICS = (
    "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "throughput_ips",
    "params", "gmacs", "instructions", "weights_bytes", "peak_mem_bytes", "energy_mj_per_img", "clip_params_total", "text_encode_ms", "duration_s",
)
# Seconds per cost unit before calibration, measured on a 2-core CPU (torch 2.14): 0.2 s per GMAC
# of one image trained, forward, backward and evaluation (resnet18's digits case, 0.037 GMACs x
# 1,437 images x 10 passes, takes ~100 s); a latency case its timed seconds plus ~2 s of set-up
# (model, GMACs, memory probe); a batch-size search ~30 s.
_KINDS = (
    Kind("inference", "latency, throughput, params, GMACs and peak memory of one forward", _INFERENCE_METRICS,
         ("num_classes", "threads", "bench_time_s", "edge_profile", "power"), "many", "timed", 1.0,
         ("latency_p50_ms", "throughput_ips", "peak_mem_bytes")),
    Kind("train", "small-data training: accuracy over seeds, convergence, cost",
         ("top1", "top5", "macro_f1", "robust_top1", "robust_worst_top1", "robust_time_s", "int8_top1_change_pp", "train_time_s", "eval_time_s", "feature_time_s", "train_ips",
          "peak_train_mem_bytes", "duration_s"),
         ("threads", "seeds", "schedule", "optimizer", "lr", "weight_decay", "label_smoothing", "augment", "hflip",
          "early_stop", "val_fraction", "grad_accum", "clip_grad", "tune", "edge_profile", "weights_sha256", "robustness"), "once", "training", 0.2,
         ("top1", "train_time_s")),
    Kind("plan", "largest inference and training batch under a memory budget",
         ("plan_inference_estimated_max_batch", "plan_inference_searched_max_batch",
          "plan_train_estimated_max_batch", "plan_train_searched_max_batch", "duration_s"),
         ("num_classes", "plan_budget_bytes", "edge_profile"), "once", "fixed", 30.0,
         ("plan_inference_searched_max_batch", "plan_train_searched_max_batch")),
)
# dense: a linear segmentation head (BatchNorm + 1x1 conv, DINOv2's) on frozen multi-scale features; its
# latency is one forward of backbone + head at the dense resolution, batch 1, timed like inference's.
_DENSE = Kind(
    "dense", "segmentation probe on frozen multi-scale features: mIoU, pixel accuracy, per-class IoU, latency at the dense resolution",
    ("miou", "pixel_acc", "latency_p50_ms", "latency_p90_ms", "latency_mean_ms", "train_time_s", "feature_time_s", "duration_s"),
    ("threads", "seeds", "seg_steps", "seg_layers", "tune", "bench_time_s", "weights_sha256"), "once", "training", 0.2,
    ("miou", "latency_p50_ms"))
KINDS: Mapping[str, Kind] = {k.name: k for k in (*_KINDS, _DENSE)}
KIND_NAMES: tuple[str, ...] = tuple(KINDS)


def kind_metrics(kinds: Iterable[str] = KIND_NAMES) -> list[Metric]:
    """The metrics of ``kinds``, in registry order."""
    wanted = {key for name in kinds for key in KINDS[name].metrics}
    return [m for m in _METRICS if m.key in wanted]


# --- comparability ----------------------------------------------------------------------------

def settings_digest(settings: Mapping[str, object]) -> str:
    """A short, order-independent digest of a case's resolved settings."""
    text = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_differences(base: Mapping[str, object], current: Mapping[str, object]) -> list[str]:
    """What differs between two cases' settings, one ``"epochs 10 → 2"`` per key."""
    keys = list(dict.fromkeys([*base, *current]))
    return [f"{key} {_show(base.get(key))} → {_show(current.get(key))}" for key in keys if base.get(key) != current.get(key)]


def _show(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def suggest(value: str, choices: Iterable[str], n: int = 3) -> str:
    """`` (did you mean a, b?)`` for the closest of ``choices``, or ``""``: one hint format everywhere."""
    by_lower = {choice.lower(): choice for choice in choices}
    close = [by_lower[c] for c in difflib.get_close_matches(value.lower(), list(by_lower), n=n)]
    return f" (did you mean {', '.join(close)}?)" if close else ""


def unknown(what: str, value: str, choices: Iterable[str]) -> str:
    """The one message for a name outside a vocabulary: ``unknown runtime 'ort2' (did you mean …?); valid: …``."""
    choices = list(choices)
    return f"unknown {what} {value!r}{suggest(value, choices)}; valid: {', '.join(choices)}"


def normalise_augment(names: Sequence[str]) -> tuple[str, ...]:
    """The canonical form of a combination of augmentations (see ``harness.contract.AUGMENTS``).

    Names are stripped and lower-cased; a string is read as a comma-separated list. ``standard``
    (crop + flip) is implied by ``randaugment``, ``mixup`` and ``cutmix``; the result is in
    ``AUGMENTS`` order without duplicates: ``["mixup"]`` -> ``("standard", "mixup")``,
    ``["cutmix", "mixup"]`` -> ``("standard", "mixup", "cutmix")``. ``none`` stands alone.
    Raises ``ValueError`` for an unknown name, for ``none`` with others, and for no name at all.
    """
    if isinstance(names, str):
        names = names.split(",")
    given = [name.strip().lower() for name in names if name.strip()]
    for name in given:
        if name not in AUGMENTS:
            raise ValueError(unknown("augmentation", name, AUGMENTS))
    wanted = set(given)
    if not wanted:
        raise ValueError(f"augment needs at least one of: {', '.join(AUGMENTS)}")
    if "none" in wanted and len(wanted) > 1:
        others = ", ".join(a for a in AUGMENTS if a in wanted and a != "none")
        raise ValueError(f"augmentation 'none' turns every augmentation off and cannot be combined with {others}; pass none alone, or drop it")
    if wanted & _ADD_TO_STANDARD:
        wanted.add("standard")
    return tuple(a for a in AUGMENTS if a in wanted)


def slug(text: str) -> str:
    """``text`` as a directory-safe name part: lower case, ``(R)``/``(TM)`` and anything after ``@``
    dropped, runs of characters other than ``a-z0-9.`` turned into single dashes.

    The one slug of the project: hardware names in baseline keys, edge profile names, Jetson
    boards and power modes. ``Intel(R) Xeon(R) CPU @ 2.20GHz`` -> ``intel-xeon-cpu``.
    """
    text = re.sub(r"\((?:r|tm)\)|@.*$", "", text.lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-")
