"""Gate tolerances: how far each metric may move in its bad direction, parsed from ``METRIC:AMOUNT`` specs.

A spec (``latency_p50_ms:10%,top1:-1pp,gmacs:0``) is read on top of :data:`DEFAULT_SPEC`, the
contract's own tolerances, and rejected at parse time with the forms and metrics it could have
named. :mod:`harness.results.compare` judges each case with the result; the option parsers
(:mod:`harness.config.parsers`) read ``--fail-on`` through :func:`parse_tolerances` without
importing compare's statistics (scipy).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from harness.contract import METRICS, suggest

# The default gates: every contract metric that has a tolerance, in registry order.
DEFAULT_SPEC = ",".join(f"{m.key}:{m.tolerance}" for m in METRICS.values() if m.tolerance is not None)
_PP_METRICS = "/".join(m.key for m in METRICS.values() if m.pp_scale is not None)
FORMS = f"METRIC:N% (relative change), METRIC:Npp (absolute percentage points; {_PP_METRICS}), METRIC:0 (exact), METRIC:off"
Form = Literal["%", "pp", "exact", "off"]
_AMOUNT = re.compile(r"^(?P<sign>[+-]?)(?P<num>\d+(?:\.\d*)?|\.\d+)(?P<unit>%|pp)?$")


@dataclass(frozen=True)
class Tolerance:
    """How far ``metric`` may move in its bad direction: ``amount`` percent, percentage points, or exactly 0."""

    metric: str
    form: Form
    amount: float = 0.0

    @property
    def lower_is_better(self) -> bool:
        return METRICS[self.metric].better == "lower"

    def __str__(self) -> str:
        sign = "" if self.lower_is_better or self.form not in ("%", "pp") else "-"
        text = {"exact": "0", "off": "off"}.get(self.form, f"{sign}{self.amount:g}{self.form}")
        return f"{self.metric}:{text}"

    def change(self, base: float, cur: float) -> float:
        """``base`` to ``cur`` in this tolerance's unit: percent, percentage points, or raw units (exact)."""
        if self.form == "pp":
            return (cur - base) * float(METRICS[self.metric].pp_scale or 1.0)
        if self.form == "%":
            if base == 0:
                return 0.0 if cur == 0 else math.copysign(math.inf, cur)
            return (cur - base) / abs(base) * 100
        return 0.0 if math.isclose(cur, base, rel_tol=1e-9) else cur - base  # exact: ignore float repr noise

    def bad(self, base: float, cur: float) -> float:
        """How far ``cur`` is from ``base`` in the metric's bad direction, in this tolerance's unit."""
        delta = self.change(base, cur)
        return delta if self.lower_is_better else -delta


@dataclass(frozen=True)
class Tolerances:
    """The gated metrics, in spec order; a metric that is absent or ``off`` is not judged."""

    items: Mapping[str, Tolerance]

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.items.values())

    def active(self) -> list[Tolerance]:
        return [t for t in self.items.values() if t.form != "off"]


def _bad_spec(item: str, why: str) -> ValueError:
    return ValueError(f"bad tolerance {item!r}: {why}. Forms: {FORMS}. Metrics: {', '.join(METRICS)}")


def _parse_item(item: str) -> Tolerance:
    metric, colon, value = (part.strip() for part in item.partition(":"))
    if not colon:
        raise _bad_spec(item, "expected METRIC:AMOUNT")
    if metric not in METRICS:
        raise _bad_spec(item, f"unknown metric {metric!r}{suggest(metric, METRICS)}")
    if value == "off":
        return Tolerance(metric, "off")
    m = _AMOUNT.match(value)
    if m is None:
        raise _bad_spec(item, f"cannot read amount {value!r}")
    amount, unit = float(m["num"]), m["unit"]
    if unit is None:
        if amount != 0:
            raise _bad_spec(item, "a non-zero amount needs a unit, % or pp")
        return Tolerance(metric, "exact")
    if unit == "pp" and METRICS[metric].pp_scale is None:
        raise _bad_spec(item, f"pp applies only to {_PP_METRICS.replace('/', ', ')}; use % for {metric}")
    higher = METRICS[metric].better == "higher"
    if m["sign"] == ("+" if higher else "-"):
        raise _bad_spec(item, f"{metric} is worse when it {'drop' if higher else 'rise'}s; write the amount unsigned or with the other sign")
    return Tolerance(metric, unit, amount)  # type: ignore[arg-type]  # unit is '%' or 'pp' here


def parse_tolerances(spec: str | None) -> Tolerances:
    """Parse ``"latency_p50_ms:10%,top1:-1pp,gmacs:0"`` on top of :data:`DEFAULT_SPEC` (``None``: defaults)."""
    items: dict[str, Tolerance] = {}
    for source in (DEFAULT_SPEC, spec or ""):
        seen: set[str] = set()
        for item in filter(None, (part.strip() for part in source.split(","))):
            tol = _parse_item(item)
            if tol.metric in seen:
                raise _bad_spec(item, f"{tol.metric} is given twice")
            seen.add(tol.metric)
            items[tol.metric] = tol
    return Tolerances(items)
