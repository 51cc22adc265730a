"""The kinds of case, one module each: how a :class:`~harness.matrix.cases.CaseSpec` becomes a record.

:data:`harness.contract.KINDS` says what each kind records (its row registers it); the module
``harness.kinds.<name>`` says how it runs, and provides:

- ``cases(settings)``: the kind's cases under the session's settings (its matrix expansion);
- ``settings_of(spec, settings)``: the resolved values of the kind's contract settings for one
  case (what makes two cases of the same id comparable).

The one skip/fail policy of every kind is :func:`outcome`.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal, Protocol, cast

from harness.contract import KIND_NAMES, KINDS, module_name, settings_digest, unknown
from harness.matrix.cases import CaseSpec
from harness.matrix.expand import MatrixCase
from harness.settings import Settings


class KindModule(Protocol):
    """What ``harness.kinds.<name>`` provides (see the module docstring)."""

    def cases(self, settings: Settings) -> list[MatrixCase]: ...

    def settings_of(self, spec: CaseSpec, settings: Settings) -> dict[str, object]: ...


def kind_module(name: str) -> KindModule:
    """The module of kind ``name``; ``ValueError`` naming the kinds for a name with no row."""
    if name not in KINDS:
        raise ValueError(unknown("kind", name, KINDS))
    return cast(KindModule, importlib.import_module(f"{__name__}.{module_name(name)}"))


def build(kind: str, settings: Settings) -> list[MatrixCase]:
    """The cases of ``kind`` under ``settings``."""
    return kind_module(kind).cases(settings)


def all_cases(settings: Settings) -> list[MatrixCase]:
    """Every kind's cases, in the contract's order of kinds."""
    return [case for kind in KIND_NAMES for case in build(kind, settings)]


def case_settings(spec: CaseSpec, settings: Settings) -> dict[str, Any]:
    """The resolved contract settings of ``spec`` under the session's ``settings``."""
    values = kind_module(spec.kind).settings_of(spec, settings)
    expected = KINDS[spec.kind].settings
    if tuple(values) != expected:  # the contract and the kind module must agree, key for key
        raise AssertionError(f"{spec.kind} settings {tuple(values)} differ from the contract's {expected}")
    return values


def base_record(spec: CaseSpec, settings: Settings) -> dict[str, Any]:
    """The keys every record of ``spec`` carries, ok or failed: identity, settings and their digest."""
    values = case_settings(spec, settings)
    return {**spec.identity(), "settings": values, "settings_digest": settings_digest(values)}


Outcome = Literal["skip", "fail"]


def _policy() -> tuple[tuple[type[BaseException], Outcome, str], ...]:
    """(exception, outcome, message prefix), most specific first."""
    from harness.backbones.registry import BackboneUnsupported
    from harness.backbones.weights import WeightsMismatch, WeightsUnavailable
    from harness.data.errors import DatasetCorrupt, DatasetUnavailable, DatasetUnusable
    from harness.data.prompts import PromptError
    from harness.data.subsets import SubsetError
    from harness.edge.planning import PlanningError
    from harness.edge.power import PowerUnavailable
    from harness.edge.profiles import MemoryBudgetExceeded
    from harness.errors import OUT_OF_MEMORY
    from harness.measure.flops import FlopCountError
    from harness.measure.instructions import CountError
    from harness.measure.runtimes import ParityError, RuntimeUnsupported
    from harness.training.checkpoints import CheckpointUnreadable
    from harness.training.trained import TrainingDiverged

    return (
        # The case cannot run here: a skip with the reason (and the fix, where the message has one).
        (BackboneUnsupported, "skip", ""),
        (RuntimeUnsupported, "skip", ""),
        (DatasetUnavailable, "skip", ""),
        (WeightsUnavailable, "skip", ""),
        # The case ran and failed: recorded as failed with the reason; the session goes on.
        *((oom, "fail", "out of memory") for oom in OUT_OF_MEMORY),
        (ParityError, "fail", "output parity against eager failed"),
        (TrainingDiverged, "fail", ""),
        (CheckpointUnreadable, "fail", ""),
        (MemoryBudgetExceeded, "fail", ""),
        (PlanningError, "fail", "batch-size planning"),
        (DatasetCorrupt, "fail", "corrupt dataset"),
        (DatasetUnusable, "fail", ""),
        (WeightsMismatch, "fail", "weights"),
        (SubsetError, "fail", "subset"),
        (PromptError, "fail", "zero-shot prompts"),
        (FlopCountError, "fail", "counting GMACs"),
        (CountError, "fail", "counting instructions"),
        (PowerUnavailable, "fail", "power sampling"),
    )


def outcome(exc: BaseException) -> tuple[Outcome, str] | None:
    """How a case that raised ``exc`` ends: ``("skip", reason)``, ``("fail", reason)``, or
    ``None`` for an unexpected error (a bug: it propagates with its traceback)."""
    for kind, result, prefix in _policy():
        if isinstance(exc, kind):
            text = str(exc).strip() or type(exc).__name__
            # A skip keeps its whole reason (it names the fix); a failure's first line is its verdict.
            message = text if result == "skip" else text.splitlines()[0]
            return result, f"{prefix}: {message}" if prefix else message
    return None
