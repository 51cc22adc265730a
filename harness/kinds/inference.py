"""Preparing an inference case: the model on its device, the timed step, and the static figures.

:func:`prepare_inference` turns a :class:`CaseSpec` into a :class:`PreparedInference` that
holds a zero-argument ``step`` (one forward of a fixed batch, synchronised), a ``setup`` (the
untimed device synchronisation before each round), and the figures that do not need a clock:
params, GMACs and peak memory. The timer is the caller's: pytest-benchmark in a pytest run,
:func:`harness.measure.timing.time_rounds` elsewhere. :meth:`PreparedInference.record` builds
the flat JSON record from the timed samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

import torch
from torch import nn

from harness.backbones.factory import create_backbone
from harness.contract import RUNTIME_SPECS
from harness.kinds import outcome
from harness.matrix.cases import CaseSpec
from harness.matrix.expand import SMOKE_IMG_SIZE, MatrixCase, architectures, matrix_case
from harness.measure.flops import count_gmacs, count_params
from harness.measure.instructions import InstructionCounter, NotCountable, unsupported
from harness.measure.memory import module_bytes, peak_bytes
from harness.measure.timing import LatencyStats
from harness.runtime.devices import DTYPES, synchronize
from harness.runtime.progress import task
from harness.settings import Settings


def settings_of(spec: CaseSpec, settings: Settings) -> dict[str, object]:
    """The contract settings of an inference case, resolved (``threads``: the count torch will use)."""

    return {
        "num_classes": spec.num_classes,
        "threads": settings.inference_threads or torch.get_num_threads(),
        "bench_time_s": settings.bench_time_s,
        "edge_profile": settings.edge_profile_name,
        "power": settings.power,
    }


@functools.lru_cache(maxsize=64)
def static_profile(backbone: str, img_size: int, num_classes: int) -> tuple[int, float]:
    """(params, GMACs per image) of a backbone at a resolution: fp32, batch 1, device-free.

    Cached because every batch size, device and precision of a backbone shares these figures.
    """
    model = create_backbone(backbone, num_classes=num_classes, img_size=img_size)
    return count_params(model), count_gmacs(model, torch.zeros(1, 3, img_size, img_size))


@dataclass
class PreparedInference:
    """A case ready to time."""

    spec: CaseSpec
    model: nn.Module
    example: torch.Tensor
    step: Callable[[], None]
    setup: Callable[[], None]
    static: dict[str, object] = field(default_factory=dict)
    close: Callable[[], None] = lambda: None

    def record(self, samples_s: Sequence[float], extra: dict[str, object] | None = None) -> dict[str, object]:
        """The case's flat JSON record: identity, static figures and latency statistics."""
        record: dict[str, object] = {**self.spec.identity(), **self.static, "status": "ok"}
        record.update(LatencyStats(samples_s, self.spec.batch_size).as_record())
        record.update(extra or {})
        return record


def cases(settings: Settings) -> list[MatrixCase]:
    """backbone × device × batch × resolution × precision × runtime."""
    runtimes = list(dict.fromkeys([*settings.runtimes, *(["compile"] if settings.compile else [])]))
    return [
        matrix_case(
            "inference", name, device, precision, batch_size=batch, img_size=size, runtime=runtime,
            num_classes=settings.num_classes, channels_last=settings.channels_last,
            smoke=(device, batch, size, precision, runtime, settings.channels_last) == ("cpu", 1, SMOKE_IMG_SIZE, "fp32", "eager", False),
        )
        for name, device, batch, size, precision, runtime in product(
            architectures(settings), settings.devices, settings.batch_sizes, settings.img_sizes, settings.precisions, runtimes
        )
    ]


def prepare_inference(spec: CaseSpec, *, workdir: Path, threads: int | None = 1, templates: Path | None = None) -> PreparedInference:
    """Build the model for ``spec``, place it, build its runtime, and measure params/GMACs/memory.

    ``threads`` is the CPU thread count while the runner lives (``None``: torch's default). A ``clip:``
    backbone is its image tower, and its record adds :func:`harness.measure.text_tower.clip_inference_keys`
    (the text tower's cost of encoding ``num_classes`` x ``templates`` prompts).
    Raises ``BackboneUnsupported`` (cannot run at this size) and ``RuntimeUnsupported``
    (the runtime cannot take this model here); the caller turns both into skips.
    """
    from harness.measure.runners import build_runner

    # A CLIP backbone is timed as its image tower, whose output is the image embedding (no class head).
    clip = spec.backbone.startswith("clip:")
    num_classes = 0 if clip else spec.num_classes
    params, gmacs = static_profile(spec.backbone, spec.img_size, num_classes)
    device = torch.device(spec.device)

    model, example = model_and_example(spec)

    runner = build_runner(model, example, spec.runtime, device=device, workdir=workdir, threads=threads)
    static: dict[str, object] = {
        "params": params,
        "gmacs": gmacs,
        "weights_bytes": module_bytes(model),
        **runner.info,
        "threads": torch.get_num_threads(),
    }
    if clip:
        from harness.measure.text_tower import clip_inference_keys

        static.update(clip_inference_keys(spec.backbone, spec.img_size, spec.num_classes, spec.device, templates))
    if RUNTIME_SPECS[spec.runtime].cpu_arena and device.type == "cpu":  # no figure is better than a wrong one
        static["peak_mem_bytes"] = None
        static["peak_mem_unavailable"] = f"{spec.runtime}'s CPU arena is not visible to the tensor-level memory probe"
    else:
        static["peak_mem_bytes"] = peak_bytes(runner.step, device, resident=_resident(model, example))

    return PreparedInference(
        spec=spec,
        model=model,
        example=example,
        step=runner.step,
        setup=functools.partial(synchronize, device),
        static=static,
        close=runner.close,
    )


def model_and_example(spec: CaseSpec) -> tuple[nn.Module, torch.Tensor]:
    """The case's model (a ``clip:`` backbone's image tower, without a class head) on its device, dtype
    and memory format, and its input batch: seeded, so every run feeds the model the same values."""
    num_classes = 0 if spec.backbone.startswith("clip:") else spec.num_classes
    device, dtype = torch.device(spec.device), DTYPES[spec.precision]
    memory_format = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = create_backbone(spec.backbone, num_classes=num_classes, img_size=spec.img_size)
    model = model.to(device=device, dtype=dtype).to(memory_format=memory_format)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(spec.batch_size, 3, spec.img_size, spec.img_size, generator=generator)
    return model, example.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)


def _resident(model: nn.Module, example: torch.Tensor) -> list[torch.Tensor]:
    """Tensors alive before the forward starts: weights, buffers and the input batch."""
    return [*model.parameters(), *model.buffers(), example]


def count_ahead(counter: InstructionCounter, specs: Sequence[CaseSpec]) -> None:
    """Count the instructions of every countable case in ``specs`` before any of them is timed.

    The counter's workers (one per core) count in parallel while this process builds the next model,
    and all of it is over before the first timed round, so no timed case shares the machine with
    valgrind. Each result waits in the counter for :func:`case_instructions`. A model that cannot be
    built here is left to its case, which meets the same error and reports it under the one policy.
    """
    countable = [spec for spec in dict.fromkeys(specs) if unsupported(spec.device, spec.runtime, spec.precision) is None]
    with task("counting instructions under callgrind", total=len(countable), unit="case") as advance:
        for spec in countable:
            counter.wait_for_room()  # at most a few saved models on disk at once
            try:
                model, example = model_and_example(spec)
                counter.submit(spec, model, example)
            except Exception as exc:
                if not isinstance(exc, NotCountable) and outcome(exc) is None:
                    raise  # a bug, not a case that cannot run here
            advance(1)
        counter.wait_all()


def case_instructions(counter: InstructionCounter, spec: CaseSpec, model: nn.Module, example: torch.Tensor) -> dict[str, object]:
    """What an inference record gets: ``instructions``, or ``None`` with ``instructions_unavailable`` saying why.
    The count made ahead of the session's timing (:func:`count_ahead`) when there is one."""
    reason = unsupported(spec.device, spec.runtime, spec.precision)
    if reason is None:
        try:
            count, functions = counter.result(spec) if counter.pending(spec) else counter.count(model, example)
            return {"instructions": count, "instructions_by_function": functions}
        except NotCountable as exc:
            reason = str(exc)
    return {"instructions": None, "instructions_unavailable": reason}


def case_ops(prepared: PreparedInference) -> dict[str, object]:
    """``op_self_ms`` and ``module_self_ms``, where an eager case's forward spends its time op by op and
    module by module (:mod:`harness.measure.ops`); nothing for the other runtimes, whose ops and modules
    are not torch's (an ONNX Runtime session, a compiled graph)."""
    if prepared.spec.runtime != "eager":
        return {}
    from harness.measure.ops import module_self_ms, op_self_ms

    device = torch.device(prepared.spec.device)
    return {"op_self_ms": op_self_ms(prepared.step, device), "module_self_ms": module_self_ms(prepared.model, prepared.step, device)}
