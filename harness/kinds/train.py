"""Running one training case: the dataset's splits, then the case's protocol, one record.

:func:`run_train_case` is what the ``train`` benchmark family runs; a notebook can call it too.
It loads the dataset's official splits and hands them to the protocol's module
(:mod:`harness.protocols`: scratch, finetune, linear, knn), which draws the stratified nested
subset per seed, trains or probes, and folds the seeds into the flat record of the JSON contract.
"""

from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING, Any

import torch

from harness.contract import NATIVE, PROTOCOL_SPECS, ROBUST_PROTOCOLS
from harness.data.datasets import load_split
from harness.data.registry import held_size
from harness.data.types import TensorSplit
from harness.matrix.cases import CaseSpec
from harness.matrix.expand import SMOKE_TRAIN_BACKBONES, MatrixCase, backbone_ref, dataset_classes, matrix_case
from harness.protocols import TRAINING_SETTINGS, Progress, protocol_module
from harness.runtime.distributed import World, current_world, main_first
from harness.settings import Settings

if TYPE_CHECKING:
    from harness.backbones.weights import WeightsRef


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """The contract settings of a training case: the kind's own (threads, seeds, edge profile, the
    weights' sha256) around its protocol's (:data:`~harness.protocols.TRAINING_SETTINGS`: the recipe
    as it will run, or the probe's choices, and the search)."""
    from harness.backbones.weights import find_cached

    found = find_cached(spec.weights) if spec.weights is not None else None
    # CPU threads change a CPU case's arithmetic (reduction order) and so its top-1; a CUDA case's
    # kernels do not depend on them, so an xdist worker's share of threads leaves it comparable.
    threads = torch.get_num_threads() if torch.device(spec.device).type == "cpu" else None
    training = protocol_module(spec.protocol).settings_of(spec, settings)
    if tuple(training) != TRAINING_SETTINGS:
        raise AssertionError(f"protocol {spec.protocol} resolves {tuple(training)}, not {TRAINING_SETTINGS}")
    return {"threads": threads, "seeds": settings.seeds, **training, "edge_profile": settings.edge_profile_name,
            "weights_sha256": found.sha256 if found is not None else None, "robustness": robustness_setting(spec.protocol, settings)}


def robustness_setting(protocol: str, settings: Settings) -> dict[str, object] | None:
    """``--robustness`` as the case runs it; ``None`` for a protocol whose row says it does not (zeroshot, contrastive)."""
    return settings.robustness_setting if protocol in ROBUST_PROTOCOLS else None


def needs_weights(protocol: str, arch: str) -> str:
    """The skip reason of a protocol that needs pretrained weights run on random ones, naming the fix."""
    if arch.startswith("clip:"):
        from harness.backbones.clip import clip_tags

        tags = clip_tags(arch)
        example = f" (e.g. {tags[0]})" if tags else ""
        return (f"{protocol} starts from pretrained weights and {arch} names none: name an open_clip tag{example} "
                f"or a checkpoint file ({arch}@PATH) in --backbones; scratch is the random-weights case")
    import timm

    tags = timm.list_pretrained(f"{arch}.*")
    example = f" (e.g. {tags[0]})" if tags else ""
    return (f"{protocol} starts from pretrained weights and {arch} names none: name a timm tag{example} "
            f"or a checkpoint file ({arch}@PATH) in --backbones; scratch is the random-weights case")


def native_size(ref: WeightsRef) -> int:
    """The input size of ``ref``'s weights; 224 (CLIP's) for a hf-hub model whose config is not cached,
    whose case is then a skip naming the fetch command (its weights are not there either)."""
    from harness.backbones.weights import WeightsUnavailable, preprocess_of

    try:
        return preprocess_of(ref).input_size
    except WeightsUnavailable:
        return 224


def skip_reason(protocol: str, arch: str) -> str | None:
    """Why ``protocol`` cannot run on ``arch`` whatever its weights: a protocol that needs a text tower
    on an image backbone, or a classifier's training of a CLIP image tower (scratch, finetune: not
    built yet). ``None`` when it can."""
    from harness.protocols.zeroshot import needs_text_tower

    row = PROTOCOL_SPECS[protocol]
    if row.text:
        return needs_text_tower(protocol, arch)
    if arch.startswith("clip:") and row.recipe is not None:
        return f"{protocol} does not train a CLIP image tower as a classifier yet: run {arch} with --protocols contrastive, zeroshot, linear or knn"
    return None


def cases(settings: Settings) -> list[MatrixCase]:
    """backbone (with weights) × dataset × subset × protocol × device × train batch × resolution × precision.

    ``scratch`` drops a backbone's weights (``resnet50.a1_in1k`` and ``resnet50`` are one scratch
    case); ``finetune`` of random weights is a skip naming the fix; ``linear``/``knn`` of random
    weights run (a baseline for the pretrained ones; the record says so). The world size is this
    session's (torchrun's ``WORLD_SIZE``): it is part of a case's identity.
    """
    from harness.backbones.weights import WeightsRef

    world_size = current_world().size
    sizes = settings.train_img_sizes or settings.img_sizes[:1]
    cases: dict[str, MatrixCase] = {}
    for token, dataset, subset, protocol, device, batch, size, precision in product(
        settings.backbones, settings.datasets, settings.subsets, settings.protocols, settings.devices,
        settings.train_batch_sizes, sizes, settings.precisions,
    ):
        ref = backbone_ref(token)
        takes = PROTOCOL_SPECS[protocol].weights  # never, optional or required
        weights = ref if ref.pretrained and takes != "never" else None
        img_size = native_size(weights or WeightsRef(ref.arch)) if size == NATIVE else int(size)
        case = matrix_case(
            "train", ref.arch, device, precision, batch_size=batch, img_size=img_size, dataset=dataset, subset=subset,
            num_classes=dataset_classes(dataset), channels_last=settings.channels_last, world_size=world_size,
            weights=weights, protocol=protocol,
            smoke=(dataset, device, precision, protocol) == ("digits", "cpu", "fp32", "scratch") and token in SMOKE_TRAIN_BACKBONES,
            skip=needs_weights(protocol, ref.arch) if takes == "required" and weights is None else skip_reason(protocol, ref.arch),
        )
        cases.setdefault(case.spec.id, case)
    return list(cases.values())


def load_case_splits(spec: CaseSpec, options: Settings, world: World) -> tuple[TensorSplit, TensorSplit]:
    """The dataset's train and test splits, held at :func:`held_size` for the case's resolution."""
    data = {"root": options.data_root, "download": options.download, "img_size": held_size(str(spec.dataset), spec.img_size),
            "verify_checksums": not options.skip_checksums}
    with main_first(world):  # one rank downloads or unpacks; the others then read its files
        train_split = load_split(str(spec.dataset), "train", **data)  # type: ignore[arg-type]
        test_split = load_split(str(spec.dataset), "test", **data)  # type: ignore[arg-type]
    return train_split, test_split


def run_train_case(spec: CaseSpec, options: Settings, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run ``spec`` for every seed and return its flat record (``status`` ``ok``).

    ``options`` are the session's settings: seeds, recipe overrides, data root, resume. A case
    of world size N runs under torchrun with N ranks (its process group initialised); every rank
    returns the record, rank 0's is the one saved.

    Raises ``DatasetUnavailable``/``DatasetCorrupt``/``SubsetError`` from the data layer,
    ``BackboneUnsupported`` from the factory and ``WeightsUnavailable``/``WeightsMismatch`` from
    the weights; the caller decides skip or failure.
    """
    world = current_world()
    if world.size != spec.world_size:
        raise ValueError(f"case {spec.id} is for {spec.world_size} process(es) but this session has {world.size}; run it with torchrun --nproc-per-node {spec.world_size}")
    train_split, test_split = load_case_splits(spec, options, world)
    return protocol_module(spec.protocol).run(spec, options, train_split, test_split, world, progress)
