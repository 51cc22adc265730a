"""The kinds of case, one module each: how a :class:`~harness.matrix.cases.CaseSpec` becomes a record.

:data:`harness.contract.KINDS` says what each kind records; this package says how it runs.
Every kind module provides ``settings_of(spec, settings)``: the resolved values of the kind's
contract settings for one case (what makes two cases of the same id comparable). The one
skip/fail policy of every kind is :func:`outcome`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

from harness.contract import KINDS, settings_digest
from harness.kinds import inference, plan, train
from harness.matrix.cases import CaseSpec
from harness.settings import Settings


def _resolvers() -> Mapping[str, Callable[[CaseSpec, Settings], dict[str, Any]]]:
    return {"inference": inference.settings_of, "train": train.settings_of, "plan": plan.settings_of}


def case_settings(spec: CaseSpec, settings: Settings) -> dict[str, Any]:
    """The resolved contract settings of ``spec`` under the session's ``settings``."""
    values = _resolvers()[spec.kind](spec, settings)
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
    from harness.data.subsets import SubsetError
    from harness.edge.planning import PlanningError
    from harness.edge.power import PowerUnavailable
    from harness.edge.profiles import MemoryBudgetExceeded
    from harness.errors import OUT_OF_MEMORY
    from harness.measure.flops import FlopCountError
    from harness.measure.runtimes import ParityError, RuntimeUnsupported

    return (
        # The case cannot run here: a skip with the reason (and the fix, where the message has one).
        (BackboneUnsupported, "skip", ""),
        (RuntimeUnsupported, "skip", ""),
        (DatasetUnavailable, "skip", ""),
        (WeightsUnavailable, "skip", ""),
        # The case ran and failed: recorded as failed with the reason; the session goes on.
        *((oom, "fail", "out of memory") for oom in OUT_OF_MEMORY),
        (ParityError, "fail", "output parity against eager failed"),
        (MemoryBudgetExceeded, "fail", ""),
        (PlanningError, "fail", "batch-size planning"),
        (DatasetCorrupt, "fail", "corrupt dataset"),
        (DatasetUnusable, "fail", ""),
        (WeightsMismatch, "fail", "weights"),
        (SubsetError, "fail", "subset"),
        (FlopCountError, "fail", "counting GMACs"),
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
