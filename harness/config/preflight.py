"""Before any case runs: a device, dataset or weights the user named that this machine lacks.

``--devices auto`` names only what the machine has, and the default dataset (digits) is embedded,
so whatever this finds was asked for explicitly: the session is refused with one line naming the
fix, unless ``--skip-unavailable`` asks for the old behaviour (each case a skip with the reason).
"""

from __future__ import annotations

from harness.contract import PROTOCOL_SPECS, ROBUST_PROTOCOLS
from harness.errors import SettingError
from harness.settings import Settings

SKIP_HINT = "or --skip-unavailable to skip its cases"


def check_available(settings: Settings) -> None:
    """Raise :class:`SettingError` for the first explicit device, dataset or weights that cannot run here."""
    _check_image_folders(settings)
    _check_dense(settings)
    _check_own(settings)
    _check_batchnorm(settings)
    _check_prompts(settings)
    _check_trackers(settings)  # not a case's to skip: the whole run is logged, or the session refused
    _check_instructions(settings)
    _check_robustness(settings)
    if settings.skip_unavailable:
        return
    _check_devices(settings.devices)
    if not settings.download:  # --download fetches missing datasets and weights when a case needs them
        _check_datasets(settings)
        _check_weights(settings.backbones)


def _check_own(settings: Settings) -> None:
    """A team's factory is called at every resolution the session asks for: one that raises, returns no
    nn.Module, sizes its logits otherwise than num_classes or cannot run a batch stops the session here."""
    from harness.backbones.own import is_own
    from harness.backbones.own_model import build_own, check_logits
    from harness.backbones.registry import BackboneUnsupported
    from harness.backbones.weights import parse_backbone

    sizes = dict.fromkeys([*settings.img_sizes, *(s for s in settings.train_img_sizes or () if isinstance(s, int))])
    for arch in dict.fromkeys(parse_backbone(token).arch for token in settings.backbones):
        if not is_own(arch):
            continue
        try:
            model = build_own(arch, _OWN_CLASSES)
            for size in sizes:
                check_logits(arch, model, _OWN_CLASSES, size)
        except BackboneUnsupported as exc:
            raise SettingError(str(exc)) from None


# The class count a team's factory is tried with: the inference cases' (harness.matrix.cases.CaseSpec.num_classes).
_OWN_CLASSES = 10


def _check_prompts(settings: Settings) -> None:
    """A --classnames file whose count is not a registered dataset's is refused for zeroshot cases
    (an image folder's classes are known once it is read: checked when its case runs)."""
    if settings.classnames is None or "zeroshot" not in settings.protocols:
        return
    from harness.data.prompts import read_lines
    from harness.data.registry import DATASETS

    names = read_lines(settings.classnames)[0]
    for dataset in settings.datasets:
        info = DATASETS.get(dataset)
        if info is not None and info.num_classes != len(names):
            raise SettingError(f"--classnames {settings.classnames}: {len(names)} class names for the {info.num_classes} classes of {dataset}; "
                               "write one name a line, in label order")


def _check_trackers(settings: Settings) -> None:
    from harness.results.trackers import missing_message

    message = missing_message(settings.track or ())
    if message:
        raise SettingError(message)


def _check_robustness(settings: Settings) -> None:
    """--robustness corrupts test splits with kornia (harness.data.corruptions): without it, no case runs.
    A session without a protocol that scores corruptions is refused too: the option would do nothing."""
    if not settings.robustness:
        return
    import importlib.util

    if importlib.util.find_spec("kornia") is None:
        raise SettingError("--robustness corrupts the test splits with kornia, which is not installed: pip install -e '.[robustness]'")
    if not set(settings.protocols) & set(ROBUST_PROTOCOLS):
        raise SettingError(f"--robustness scores the {', '.join(ROBUST_PROTOCOLS)} protocols, and --protocols {','.join(settings.protocols)} "
                           "runs none of them: add one, or drop --robustness")


def _check_instructions(settings: Settings) -> None:
    """--count-instructions needs valgrind, and counts CPU work only: a GPU case's kernels are invisible to it."""
    if not settings.count_instructions:
        return
    from harness.measure.instructions import INSTALL_HINT, missing_tool

    tool = missing_tool()
    if tool is not None:
        raise SettingError(f"--count-instructions runs the cases' models under valgrind's callgrind, and {tool} is not on PATH: {INSTALL_HINT}")
    others = [device for device in settings.devices if device != "cpu"]
    if others:
        raise SettingError(f"--count-instructions counts CPU instructions; --devices {','.join(others)} runs GPU kernels callgrind cannot see: "
                           "count in a session of its own with --devices cpu")


def _check_devices(devices: list[str]) -> None:
    from harness.runtime.devices import unavailable_reason

    for device in devices:
        reason = unavailable_reason(device)
        if reason is not None:
            raise SettingError(f"--devices {device}: {reason}; use --devices auto to run what this machine has, or --devices cpu ({SKIP_HINT})")


def _check_datasets(settings: Settings) -> None:
    from harness.data.datasets import check_available as check_dataset
    from harness.data.errors import DatasetUnavailable

    for name in settings.datasets:
        try:
            check_dataset(name, settings.data_root)
        except DatasetUnavailable as exc:
            raise SettingError(f"--dataset {name}: {str(exc).rstrip('.')} ({SKIP_HINT})") from None


def _check_image_folders(settings: Settings) -> None:
    """An image folder or shard set that is there but cannot train a classifier (empty, one class,
    a shard that is no tar or a sample without a label) is refused whatever --skip-unavailable says:
    it is not missing, it is wrong. Shards are scanned here once (no image decoded); their label
    index is cached, so the cases do not scan them again."""
    from harness.data.datasets import reader
    from harness.data.errors import DatasetCorrupt, DatasetUnavailable, DatasetUnusable
    from harness.data.registry import default_data_root, path_form

    root = settings.data_root.expanduser() if settings.data_root is not None else default_data_root()
    for name in settings.datasets:
        form = path_form(name)
        if form is not None:
            try:
                reader(form).check_classes(name[len(form.prefix):], root)
            except DatasetUnavailable:
                continue  # missing: _check_datasets refuses it, or --skip-unavailable skips it
            except (DatasetUnusable, DatasetCorrupt) as exc:
                raise SettingError(f"--dataset {name}: {str(exc).rstrip('.')}") from None




def _check_batchnorm(settings: Settings) -> None:
    """A training batch (or micro-batch, under --grad-accum) of one image with a BatchNorm backbone
    fails inside the case with a long traceback; refuse it here, naming the fix."""
    accum = settings.grad_accum or 1
    small = [batch for batch in settings.train_batch_sizes if batch // accum < 2]
    # Protocols that train the backbone in train mode; feature protocols read it frozen (eval mode).
    if not small or all(PROTOCOL_SPECS[p].features for p in settings.protocols):
        return
    from harness.backbones.factory import has_batchnorm
    from harness.backbones.weights import parse_backbone

    for arch in dict.fromkeys(parse_backbone(token).arch for token in settings.backbones):
        if has_batchnorm(arch):
            batch = f"--train-batch-sizes {small[0]}" + (f" with --grad-accum {accum} (micro-batches of {small[0] // accum})" if accum > 1 else "")
            fix = f"--train-batch-sizes {2 * accum} or more" + (" (or a smaller --grad-accum)" if accum > 1 else "")
            raise SettingError(f"{batch}: {arch} has BatchNorm, which cannot train on one image per batch; use {fix}")


def _check_weights(backbones: list[str]) -> None:
    from harness.backbones.weights import WeightsUnavailable, locate, parse_backbone

    for token in backbones:
        ref = parse_backbone(token)
        if ref.tag is None:  # random weights, or an own file (checked when --backbones is parsed)
            continue
        try:
            locate(ref)
        except WeightsUnavailable as exc:
            raise SettingError(f"--backbones {token}: {str(exc).removeprefix(ref.name + ': ')}, or pass --download ({SKIP_HINT})") from None


def _check_dense(settings: Settings) -> None:
    """The dense kind's inputs: every segmentation dataset read whole (masks within the classes, each mask
    its image's size, VOC masks palette PNGs), and every backbone able to give multi-scale feature maps.
    Wrong files are refused whatever --skip-unavailable says; a missing folder is refused unless it is given."""
    if not settings.seg_datasets:
        return
    from harness.data.errors import DatasetCorrupt, DatasetUnavailable, DatasetUnusable
    from harness.data.segmentation import check_dataset
    from harness.matrix.expand import backbone_ref
    from harness.training.dense import NoDenseFeatures, check_dense_capable

    for name in settings.seg_datasets:
        try:
            check_dataset(name, settings.data_root)
        except DatasetUnavailable as exc:
            if not settings.skip_unavailable:
                raise SettingError(f"--seg-datasets {name}: {str(exc).rstrip('.')} ({SKIP_HINT})") from None
        except (DatasetUnusable, DatasetCorrupt) as exc:
            raise SettingError(f"--seg-datasets {name}: {str(exc).rstrip('.')}") from None
    for arch in dict.fromkeys(backbone_ref(token).arch for token in settings.backbones):
        try:
            check_dense_capable(arch)
        except NoDenseFeatures as exc:
            raise SettingError(f"--seg-datasets with --backbones {arch}: {exc}") from None
