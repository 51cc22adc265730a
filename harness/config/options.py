"""The option table: every backbone-bench option with its ini key, default, parser and help.

One table feeds the pytest plugin (each row is ``--name`` and the ini key ``name`` with dashes
turned into underscores), the ``python -m harness compare`` command (the rows of scope
``gate``, under the same names) and :class:`~harness.settings.Settings`, whose fields are
exactly the rows' fields. :func:`settings_from` merges the sources: the command line wins, then
the ini file, then the row's environment variable, then its default. A default is written here
and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from harness.config import parsers as p
from harness.contract import PRECISIONS, PROTOCOL_SPECS, PROTOCOLS, RUNTIMES, TRACKER_SPECS, TRACKERS, TUNE_MODES
from harness.data.registry import DATASETS
from harness.errors import SettingError
from harness.scale.shards import parse_shard
from harness.settings import Settings


@dataclass(frozen=True)
class Option:
    """One row: ``--name`` on the command line, ``ini`` in pytest.ini, ``field`` in Settings.

    ``scope``: ``session`` rows exist in pytest only; ``gate`` rows also in
    ``python -m harness compare``. ``default`` is text, parsed like a user's value (``None``:
    unset). ``env`` names an environment variable that stands in for the default.
    """

    name: str
    field: str
    parse: Callable[[str], Any]
    default: str | None
    metavar: str
    help: str
    flag: bool = False
    scope: Literal["session", "gate"] = "session"
    env: str | None = None

    @property
    def ini(self) -> str:
        return self.name.replace("-", "_")

    def help_text(self) -> str:
        """The help with its default and ini key, as ``--help`` shows it: argparse text, whose
        ``%`` (``latency_p50_ms:10%``) is escaped, since argparse %-formats every help string."""
        default = self.default if self.default is not None else "unset"
        env = f"; ${self.env} overrides the default" if self.env else ""
        return f"{self.help} (default: {default}{env}; ini key: {self.ini})".replace("%", "%%")


def _int(what: str) -> Callable[[str], int]:
    return lambda text: p.positive_int(text, what)


# The registered datasets as the help lists them (an embedded one says so).
_DATASET_NAMES = ", ".join(f"{d.name} (embedded)" if d.embedded else d.name for d in DATASETS.values())

OPTIONS: tuple[Option, ...] = (
    # The matrix: every value is a case axis.
    Option("backbones", "backbones", p.parse_backbones, "all", "NAMES", "registry names, groups (cnn, transformer, hybrid, edge, all) or any timm model name; training cases also take weights: a timm pretrained tag (resnet50.a1_in1k) or a checkpoint file (resnet18@PATH); CLIP models: clip:ViT-B-32[/TAG], clip:hf-hub:ORG/NAME, clip:TIMM_MODEL (image tower), clip:CONFIG.json, each [@CHECKPOINT]"),
    Option("img-sizes", "img_sizes", p.int_list("img-sizes", p.MAX_IMG_SIZE), "32", "PX", "input resolutions up to 4096; 32 is CIFAR-native, 224 the deployment size; training uses the first unless --train-img-sizes is given"),
    Option("batch-sizes", "batch_sizes", p.int_list("batch-sizes"), "1,32", "N", "inference batch sizes"),
    Option("devices", "devices", p.parse_devices, "auto", "DEVICES", "cpu, cuda, cuda:N, mps, or auto (every available one)"),
    Option("precisions", "precisions", p.choice_list("precision", PRECISIONS), "fp32", "P", f"{', '.join(PRECISIONS)} (where the device supports them)"),
    Option("runtimes", "runtimes", p.choice_list("runtime", RUNTIMES), "eager", "R", f"inference runtimes: {', '.join(RUNTIMES)}"),
    Option("channels-last", "channels_last", p.flag, "false", "", "run models and inputs in channels_last memory format", flag=True),
    Option("compile", "compile", p.flag, "false", "", "add the torch.compile runtime to the matrix (same as --runtimes eager,compile)", flag=True),
    Option("dataset", "datasets", p.datasets, "digits", "NAMES", f"training datasets: {_DATASET_NAMES}, imagefolder:PATH, wds:PATTERN (WebDataset shards)"),
    Option("subsets", "subsets", p.subsets, "full", "SIZES", "training subset sizes: 500, 5k, 10k, 50k, full, or per class: 50pc"),
    Option("train-batch-sizes", "train_batch_sizes", p.int_list("train-batch-sizes"), "128", "N", "training batch sizes (a subset smaller than the batch trains at its own size, recorded as train_batch_used)"),
    Option("train-img-sizes", "train_img_sizes", p.train_img_sizes, None, "PX", "training resolutions, or native (each weights' pretrained input size); images are resized on the device (unset: the first of --img-sizes)"),
    Option("protocols", "protocols", p.choice_list("protocol", PROTOCOLS), "scratch", "P", "how train cases use the backbone: " + "; ".join(f"{p.name} ({p.meaning})" for p in PROTOCOL_SPECS.values())),
    # --- the dense kind (segmentation probe on frozen features; harness.kinds.dense) ---
    Option("seg-datasets", "seg_datasets", p.seg_datasets, None, "DATASETS", "segmentation datasets of the dense kind: voc:PATH (Pascal VOC layout), ade:PATH (ADE20K layout), segfolder:PATH (images/ + masks/ + dataset.json); one dense case per backbone x dataset x device x --img-sizes x precision (unset: no dense cases)"),
    # 300 AdamW steps at batch 16: 10-30 epochs of a few hundred images. Not tuned: the must-show (160 scenes, 64 px) ran
    # --seg-steps 60 on a loaded 2-core CPU, where the lr search then took the grid's top (1e-2) for 5 of 6 backbones.
    Option("seg-steps", "seg_steps", _int("seg-steps"), "300", "N", "optimiser steps of the dense kind's linear head (each lr of the search and the final fit)"),
    Option("seg-layers", "seg_layers", p.choice("seg-layers", ("last", "last4")), "last4", "LAYERS", "feature maps the dense head reads: last (the last map) or last4 (the last four, resized to the largest: DINOv2's multi-layer head)"),
    # Settings that change results without being an axis: recorded per case and digested, so a
    # run with other settings is "not comparable" with the baseline, never a regression.
    # 1 thread, like torch.utils.benchmark: multi-threaded CPU latency on a shared machine moves
    # by +-30% run to run; `auto` is torch's default.
    Option("threads", "threads", p.parse_threads, "1", "N", "CPU threads of inference cases; 1 keeps CPU latency repeatable, auto = torch's default"),
    Option("num-classes", "num_classes", lambda text: p.positive_int(text, "num-classes", p.MAX_NUM_CLASSES), "10", "N", "classifier classes of inference and planning cases, up to a million"),
    # 1 s per case: ~20-2000 rounds, enough for the rank test, a whole registry in about a minute.
    # At most an hour: a case times at most 2000 rounds, so a longer budget only serves forwards
    # slower than 1.8 s, which no latency case of a small-data backbone is; inf is no time at all.
    Option("bench-time", "bench_time_s", p.number("bench-time", high=3600.0), "1.0", "SECONDS", "timed seconds per latency case, under 3600 (rounds = this / one call, at least 20, at most 2000)"),
    Option("seeds", "seeds", _int("seeds"), "1", "N", "seeds per training case; mean and std are recorded"),
    Option("steps", "steps", _int("steps"), None, "N", "optimiser steps of scratch and finetune cases (unset: the dataset's measured budget, else BiT's HyperRule of the subset size: 500 steps below 20k images, 10k below 500k, 20k above)"),
    Option("epochs", "epochs", _int("epochs"), None, "N", "training length in epochs instead of --steps, converted to N x the steps of one epoch of the subset"),
    Option("tune", "tune", p.choice("tune", TUNE_MODES), "on", "MODE", "on: choose each protocol's hyperparameter (linear L2, knn k, finetune lr) on a stratified 20% validation split of the subset, then retrain on the whole subset; off: one fixed setting per protocol"),
    Option("lr", "lr", p.positive_float("lr"), None, "LR", "peak learning rate (unset: the family recipe's, scaled to the batch)"),
    Option("weight-decay", "weight_decay", p.number("weight-decay", low_inclusive=True), None, "WD", "weight decay (unset: the family recipe's)"),
    Option("label-smoothing", "label_smoothing", p.number("label-smoothing", low_inclusive=True, high=1.0), None, "EPS", "label smoothing (unset: the recipe's)"),
    Option("augment", "augment", p.augment, None, "AUG", "augmentations, combinable: standard, randaugment, mixup, cutmix; or none (unset: the recipe's)"),
    Option("early-stop", "early_stop", _int("early-stop"), None, "PATIENCE", "stop training after PATIENCE epochs without a better validation top-1 (carves --val-fraction of the subset for validation; the best checkpoint is tested)"),
    Option("val-fraction", "val_fraction", p.number("val-fraction", high=1.0), None, "F", "validation share carved from the training subset (unset: 0.1 with --early-stop, else none)"),
    Option("grad-accum", "grad_accum", _int("grad-accum"), None, "N", "gradient accumulation steps per optimiser step (the train batch is split into N micro-batches)"),
    Option("clip-grad", "clip_grad", p.positive_float("clip-grad"), None, "NORM", "clip the gradient norm at NORM"),
    Option("classnames", "classnames", p.classnames_file, None, "FILE", "zeroshot: class names, one a line in label order (unset: the dataset's built-in set, else its own class names); digested as the file's sha256"),
    Option("templates", "templates", p.templates_file, None, "FILE", "zeroshot: prompt templates, one a line, each with {} where the class name goes (unset: the dataset's built-in set); digested as the file's sha256"),
    Option("edge-profile", "edge_profile", p.edge_profile, None, "NAME", "edge constraints: a named board profile or threads=4,mem=2GiB"),
    Option("plan-budget", "plan_budget", p.memory_budget, None, "BYTES", "memory budget of batch-size planning cases, e.g. 512MiB, at least 1MiB (unset: the edge profile's, else 512MiB)"),
    Option("count-instructions", "count_instructions", p.flag, "false", "", "count each CPU inference case's instructions per forward under valgrind's callgrind (one extra process for the session; eager fp32 cases)", flag=True),
    Option("power", "power", p.flag, "false", "", "sample power during latency cases (RAPL, NVML or tegrastats)", flag=True),
    # Robustness (issue 29 A): the corrupted test splits a train case is also scored on (harness.data.corruptions).
    Option("robustness", "robustness", p.robustness, "none", "NAMES", "train cases: also score the trained or probed model on corrupted test splits: corruption groups (all, imagenet-c, robot) or names (gaussian_noise, motion_blur, low_light, ...), none is off; mCE and relative mCE are computed by python -m harness report"),
    Option("robust-severities", "robust_severities", p.severities, "1,2,3,4,5", "LEVELS", "--robustness severities, each 1-5 (ImageNet-C's five levels)"),
    Option("int8-accuracy", "int8_accuracy", p.flag, "false", "", "after training, record the top-1 change of the model as dynamic-int8 ONNX (CPU)", flag=True),
    # Where data and checkpoints live, and how they are fetched: no effect on results.
    Option("data-root", "data_root", p.path, None, "PATH", "dataset root (unset: ~/.cache/backbone-bench/data)", env="BACKBONE_BENCH_DATA"),
    Option("checkpoint-dir", "checkpoint_dir", p.path, ".bench-checkpoints", "PATH", "where training cases keep checkpoints for --resume", env="BACKBONE_BENCH_CHECKPOINTS"),
    Option("skip-checksums", "skip_checksums", p.flag, "false", "", "read dataset files without checking their official md5 sums (your own re-packed copies)", flag=True),
    Option("download", "download", p.flag, "false", "", "download missing datasets (torchvision) and pretrained weights (Hugging Face hub); without it nothing is fetched", flag=True),
    Option("skip-unavailable", "skip_unavailable", p.flag, "false", "", "skip the cases of a device, dataset or weights named explicitly that this machine lacks, instead of refusing the session before any case runs (--devices auto skips what is absent anyway)", flag=True),
    Option("feature-cache", "feature_cache", p.path, ".bench-features", "PATH", "where linear, knn and zeroshot cases keep the frozen backbones' features, reused by every case that needs the same ones", env="BACKBONE_BENCH_FEATURES"),
    Option("resume", "resume", p.flag, "false", "", "resume interrupted training cases from their last checkpoint", flag=True),
    # Experiment trackers: where a finished run's cases are logged too; no effect on results.
    Option("track", "track", p.choice_list("tracker", TRACKERS), None, "TRACKERS", "after the run, log each case's identity, settings, metrics and training curve to offline experiment trackers: " + "; ".join(f"{t.name} ({t.meaning})" for t in TRACKER_SPECS.values()) + "; each needs its extra, pip install -e '.[NAME]'"),
    Option("track-dir", "track_dir", p.path, "tracking", "PATH", "where --track writes: mlflow.db, wandb/ and tensorboard/ below it", env="BACKBONE_BENCH_TRACKING"),
    # Scale-out: which part of the selection this session runs (see harness/scale/shards.py).
    Option("shard", "shard", parse_shard, None, "K/N", "run only shard K of N: a deterministic part of the selected cases (after -k/-m), balanced by the stored durations; merge the N runs with python -m harness merge", env="BACKBONE_BENCH_SHARD"),
    # The gate: the same names in pytest and in `python -m harness compare`.
    Option("gate", "gate", str, None, "BASELINE", "after the run, gate it against BASELINE (a run id in the storage or a file); regressions fail the session"),
    Option("fail-on", "fail_on", p.tolerances, "", "SPEC", "gate tolerances over the defaults, e.g. latency_p50_ms:10%,top1:-1pp,gmacs:0 (METRIC:N%, METRIC:Npp, METRIC:0, METRIC:off)", scope="gate"),
    Option("fail-on-missing", "fail_on_missing", p.flag, "false", "", "baseline cases absent from the current run fail the gate", flag=True, scope="gate"),
    Option("force", "force", p.flag, "false", "", "judge runs or cases that are not comparable (other hardware or settings) anyway", flag=True, scope="gate"),
    Option("no-history", "no_history", p.flag, "false", "", "ignore the run-to-run spread of the machine's other stored runs", flag=True, scope="gate"),
)
GATE_OPTIONS = tuple(option for option in OPTIONS if option.scope == "gate")


def markdown_table() -> str:
    """The option table as the manual shows it (docs/reference/options.md)."""
    lines = ["| option | ini key | default | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        name = f"`--{o.name}`" + ("" if o.flag else f" {o.metavar}")
        default = "off" if o.flag and o.default == "false" else (f"`{o.default}`" if o.default else "unset")
        env = f" (or `${o.env}`)" if o.env else ""
        scope = " Also `python -m harness compare`." if o.scope == "gate" else ""
        lines.append(f"| {name} | `{o.ini}` | {default}{env} | {o.help.replace('|', '/')}.{scope} |")
    return "\n".join(lines) + "\n"


def settings_from(get_cli: Callable[[str], Any], get_ini: Callable[[str], str | None], env: Mapping[str, str] | None = None) -> Settings:
    """Merge command-line values (already parsed; ``None`` when not given) over ini values over
    environment variables over defaults, and check the combination.

    Raises :class:`SettingError` naming the ini key or variable for a bad value there.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = get_cli(option.field)
        if value is None:
            value = _parsed_default(option, get_ini(option.ini) or None, env)
        values[option.field] = value
    settings = Settings(**values)
    check_subsets(settings.datasets, settings.subsets)
    if settings.steps is not None and settings.epochs is not None:
        raise SettingError("--steps and --epochs both set the training length: give one (--epochs is converted to steps)")
    if settings.shard is not None and settings.shard.count > 1 and settings.gate:
        # A shard's run holds part of the selection: its gate would judge a part against the whole baseline.
        raise SettingError(f"--gate with --shard {settings.shard}: a shard runs part of the cases, so its gate "
                           "would judge only them; gate the merged run (python -m harness merge RUNS --save NAME, then python -m harness "
                           "compare BASELINE NAME), or run python -m harness launch --gate BASELINE")
    return settings


def _parsed_default(option: Option, ini_text: str | None, env: Mapping[str, str]) -> Any:
    for source, text in ((f"pytest.ini [{option.ini}]", ini_text), (f"${option.env}", env.get(option.env) if option.env else None)):
        if text:
            try:
                return option.parse(text)
            except SettingError as exc:
                raise SettingError(f"{source}: {exc}") from None
    return None if option.default is None else option.parse(option.default)


def default_settings(**overrides: Any) -> Settings:
    """The settings of a session given no options (ini and environment ignored), with ``overrides``."""
    fields = {option.field for option in OPTIONS}
    unknown_fields = set(overrides) - fields
    if unknown_fields:
        raise TypeError(f"not settings fields: {', '.join(sorted(unknown_fields))}")
    return settings_from(lambda field: overrides.get(field), lambda key: None, env={})


def check_subsets(datasets: list[str], subsets: list[str]) -> None:
    """Refuse subset sizes a registered dataset cannot provide, before any case runs."""
    from harness.data.registry import dataset_info, path_form
    from harness.data.subsets import parse_subset

    for name in datasets:
        if path_form(name) is not None:
            continue  # its size is known once the folder or the shards are read
        info = dataset_info(name)
        about = f"{name} has {info.train_size} training images in {info.num_classes} classes"
        for label in subsets:
            spec = parse_subset(label)
            wanted = spec.value * info.num_classes if spec.kind == "per_class" and spec.value else spec.value
            if wanted is not None and wanted > info.train_size:
                raise SettingError(f"subset {label} asks for {wanted} images but {about}; use at most {info.train_size} or 'full'")
            if spec.kind == "count" and wanted is not None and wanted < info.num_classes:
                raise SettingError(f"subset {label} is smaller than the number of classes: {about}; use at least {info.num_classes}")
