"""The option table: every backbone-bench option with its ini key, default, parser and help.

One table feeds both the command line and ``pytest.ini`` (the plugin registers each row as
``--name`` and as the ini key ``name`` with dashes turned into underscores), and
:func:`settings_from` merges them: the command line wins, then the ini file, then the default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.devices import PRECISIONS
from harness.config.settings import (
    SettingError,
    Settings,
    choice_list,
    int_list,
    number,
    parse_backbones,
    parse_devices,
    parse_threads,
    positive_float,
    positive_int,
    split_list,
)

RUNTIMES = ("eager", "compile", "onnxruntime", "onnxruntime-int8")


def _flag(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingError(f"expected true or false, got {text!r}")


def _subsets(text: str) -> list[str]:
    from harness.data.subsets import parse_subset

    try:
        return [parse_subset(part).label for part in split_list(text)]
    except ValueError as exc:
        raise SettingError(str(exc)) from None


def _datasets(text: str) -> list[str]:
    from harness.data.registry import IMAGEFOLDER_PREFIX, dataset_info

    names = split_list(text)
    try:
        for name in names:
            if not name.startswith(IMAGEFOLDER_PREFIX):
                dataset_info(name)
    except ValueError as exc:
        raise SettingError(str(exc)) from None
    return names


def _bytes(text: str) -> int:
    from harness.edge.profiles import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise SettingError(f"plan-budget: {exc}") from None


def _edge_profile(text: str) -> Any:
    from harness.edge.profiles import parse_edge_profile

    try:
        return parse_edge_profile(text)
    except ValueError as exc:
        raise SettingError(str(exc)) from None


@dataclass(frozen=True)
class Option:
    """One row of the table. ``field`` is the :class:`Settings` attribute it fills."""

    name: str
    field: str
    parse: Callable[[str], Any]
    default: str | None
    metavar: str
    help: str
    flag: bool = False

    @property
    def ini(self) -> str:
        return self.name.replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("backbones", "backbones", parse_backbones, "all", "NAMES", "registry names, groups (cnn, transformer, hybrid, edge, all) or any timm model name"),
    Option("img-sizes", "img_sizes", int_list("img-sizes"), "32", "PX", "input resolutions; 32 is CIFAR-native, 224 the deployment size"),
    Option("batch-sizes", "batch_sizes", int_list("batch-sizes"), "1,32", "N", "inference batch sizes"),
    Option("devices", "devices", parse_devices, "auto", "DEVICES", "cpu, cuda, cuda:N, mps, or auto (every available one)"),
    Option("precisions", "precisions", choice_list("precision", PRECISIONS), "fp32", "P", "fp32, fp16, bf16 (where the device supports them)"),
    Option("runtimes", "runtimes", choice_list("runtime", RUNTIMES), "eager", "R", f"inference runtimes: {', '.join(RUNTIMES)}"),
    Option("channels-last", "channels_last", _flag, "false", "", "run models and inputs in channels_last memory format", flag=True),
    Option("compile", "compile", _flag, "false", "", "add the torch.compile runtime to the matrix (same as --runtimes eager,compile)", flag=True),
    Option("threads", "threads", parse_threads, "1", "N", "CPU threads of inference cases; 1 (like torch.utils.benchmark) keeps CPU latency repeatable, auto = torch's default"),
    Option("num-classes", "num_classes", lambda t: positive_int(t, "num-classes"), "10", "N", "classifier classes of inference cases"),
    Option("bench-time", "bench_time_s", positive_float("bench-time"), "1.0", "SECONDS", "timed seconds per latency case (rounds = this / one call, 20..2000)"),
    Option("dataset", "datasets", _datasets, "digits", "NAMES", "training datasets: digits (embedded), cifar10, cifar100, svhn, mnist, fashion_mnist, stl10, flowers102, imagefolder:PATH"),
    Option("subsets", "subsets", _subsets, "full", "SIZES", "training subset sizes: 500, 5k, 10k, 50k, full, or per class: 50pc"),
    Option("train-batch-sizes", "train_batch_sizes", int_list("train-batch-sizes"), "128", "N", "training batch sizes (an axis of the matrix)"),
    Option("seeds", "seeds", lambda t: positive_int(t, "seeds"), "1", "N", "seeds per training case; mean and std are recorded"),
    Option("epochs", "epochs", lambda t: positive_int(t, "epochs"), None, "N", "training epochs (default: the recipe's for the dataset)"),
    Option("lr", "lr", positive_float("lr"), None, "LR", "peak learning rate (default: the family recipe's, scaled to the batch)"),
    Option("weight-decay", "weight_decay", number("weight-decay", low_inclusive=True), None, "WD", "weight decay (default: the family recipe's)"),
    Option("label-smoothing", "label_smoothing", number("label-smoothing", low_inclusive=True), None, "EPS", "label smoothing (default: the recipe's)"),
    Option("augment", "augment", choice_list("augment", ("standard", "randaugment", "mixup", "cutmix", "none")), None, "AUG", "augmentation: standard, randaugment, mixup, cutmix, none"),
    Option("early-stop", "early_stop", lambda t: positive_int(t, "early-stop"), None, "PATIENCE", "stop training after PATIENCE epochs without a better validation top-1 (carves --val-fraction of the subset for validation; the best checkpoint is tested)"),
    Option("val-fraction", "val_fraction", number("val-fraction", high=1.0), None, "F", "validation share carved from the training subset (default 0.1 with --early-stop, else none)"),
    Option("grad-accum", "grad_accum", lambda t: positive_int(t, "grad-accum"), None, "N", "gradient accumulation steps per optimiser step (the train batch is split into N micro-batches)"),
    Option("clip-grad", "clip_grad", positive_float("clip-grad"), None, "NORM", "clip the gradient norm at NORM"),
    Option("data-root", "data_root", lambda t: Path(t).expanduser(), None, "PATH", "dataset root (default: $BACKBONE_BENCH_DATA or ~/.cache/backbone-bench/data)"),
    Option("skip-checksums", "skip_checksums", _flag, "false", "", "read dataset files without checking their official md5 sums (your own re-packed copies)", flag=True),
    Option("download", "download", _flag, "false", "", "download missing datasets through torchvision", flag=True),
    Option("resume", "resume", _flag, "false", "", "resume interrupted training cases from their last checkpoint", flag=True),
    Option("int8-accuracy", "int8_accuracy", _flag, "false", "", "after training, record the top-1 change of the model as dynamic-int8 ONNX (CPU)", flag=True),
    Option("edge-profile", "edge_profile", _edge_profile, None, "NAME", "edge constraints: a named board profile or threads=4,mem=2GiB"),
    Option("plan-budget", "plan_budget", _bytes, None, "BYTES", "memory budget of batch-size planning cases, e.g. 512MiB (default: the edge profile's, else 512MiB)"),
    Option("power", "power", _flag, "false", "", "sample power during latency cases (RAPL, NVML or tegrastats)", flag=True),
)

_LIST_FIELDS = {"augment"}  # parsed as a list of one choice, stored as the choice


def settings_from(get_cli: Callable[[str], Any], get_ini: Callable[[str], str | None]) -> Settings:
    """Merge command-line values (already parsed) over ini values (parsed here) over defaults.

    Raises :class:`SettingError` naming the ini key for a bad ini value.
    """
    values: dict[str, Any] = {}
    for option in OPTIONS:
        value = get_cli(option.field)
        if value is None:
            text = get_ini(option.ini) or option.default
            if text is None:
                continue
            try:
                value = option.parse(text)
            except SettingError as exc:
                raise SettingError(f"pytest.ini [{option.ini}]: {exc}") from None
        if option.field in _LIST_FIELDS and isinstance(value, list):
            value = value[0]
        values[option.field] = value
    settings = Settings(**values)
    check_subsets(settings.datasets, settings.subsets)
    return settings


def check_subsets(datasets: list[str], subsets: list[str]) -> None:
    """Refuse subset sizes a registered dataset cannot provide, before any case runs."""
    from harness.data.registry import IMAGEFOLDER_PREFIX, dataset_info
    from harness.data.subsets import parse_subset

    for name in datasets:
        if name.startswith(IMAGEFOLDER_PREFIX):
            continue  # its size is known once the folder is read
        info = dataset_info(name)
        about = f"{name} has {info.train_size} training images in {info.num_classes} classes"
        for label in subsets:
            spec = parse_subset(label)
            wanted = spec.value * info.num_classes if spec.kind == "per_class" and spec.value else spec.value
            if wanted is not None and wanted > info.train_size:
                raise SettingError(f"subset {label} asks for {wanted} images but {about}; use at most {info.train_size} or 'full'")
            if spec.kind == "count" and wanted is not None and wanted < info.num_classes:
                raise SettingError(f"subset {label} is smaller than the number of classes: {about}; use at least {info.num_classes}")
