"""Where a change went: the entries of two breakdowns (function -> instructions, op -> time) ranked by
their share of the difference, so a flagged case names the function or op that got slower.

A whole-forward change of 9 % is a 100 % change of the few functions that moved (FBDetect's lesson:
attributed to the subroutine, a small global regression becomes a large local one). The entries are
ranked by how much they moved in the bad direction; the top ones are kept until they cover
:data:`COVER` of the gross bad change, so the reader sees what explains it, not a list of everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The top entries kept explain at least 80 % of the bad change (issue 26: "top entries covering >= 80%").
COVER = 0.8
# At most this many entries are printed per case: a breakdown is read at a glance.
SHOWN = 5
# An entry that moved the good way is shown when it offsets at least a tenth of the bad change: the op a
# rewrite replaced (GELU's kernel, gone when tanh, mul and add took its place) belongs beside them.
OFFSET = 0.1


@dataclass(frozen=True)
class Moved:
    """One entry's move between base and head (``0`` where a side did not keep it)."""

    name: str
    base: float
    head: float

    @property
    def delta(self) -> float:
        return self.head - self.base


def attribute(base: Mapping[str, float], head: Mapping[str, float], *, lower_is_better: bool = True) -> list[Moved]:
    """The entries that explain the bad change, largest first, covering :data:`COVER` of it (at most :data:`SHOWN`);
    entries that moved the good way follow only when they offset it (an op replaced by another shows both)."""
    sign = 1.0 if lower_is_better else -1.0
    moves = [Moved(name, float(base.get(name, 0)), float(head.get(name, 0))) for name in dict.fromkeys([*base, *head])]
    worse = sorted((m for m in moves if sign * m.delta > 0), key=lambda m: -sign * m.delta)
    better = sorted((m for m in moves if sign * m.delta < 0), key=lambda m: sign * m.delta)
    gross = sum(sign * m.delta for m in worse)
    kept: list[Moved] = []
    covered = 0.0
    for move in worse:
        if covered >= COVER * gross or len(kept) >= SHOWN:
            break
        kept.append(move)
        covered += sign * move.delta
    offset = [m for m in better[: max(0, SHOWN - len(kept))] if -sign * m.delta >= OFFSET * gross]
    return kept + offset


def describe(moves: list[Moved], total_base: float, unit: str) -> list[str]:
    """One line per entry: ``+1.15 M instructions (+9.2 % of the forward) tanh_kernel: 0 → 1.15 M``."""
    lines = []
    for move in moves:
        share = f" ({move.delta / total_base * 100:+.1f}% of the whole)" if total_base else ""
        lines.append(f"{_human(move.delta, signed=True)} {unit}{share} {move.name}: {_human(move.base)} → {_human(move.head)}")
    return lines


def _human(value: float, *, signed: bool = False) -> str:
    sign = "+" if signed and value > 0 else ""
    for scale, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= scale:
            return f"{sign}{value / scale:.2f}{suffix}"
    return f"{sign}{value:.3g}"  # a few ms of an op, or a handful of instructions


def where(base: object, head: object, unit: str = "", label: str = "most in") -> str:
    """The compare table's note for a regression: ``most in: aten::tanh +0.141 ms, …`` from two records'
    breakdowns (``""`` when either record has none); ``label`` starts it."""
    if not isinstance(base, Mapping) or not isinstance(head, Mapping) or not base or not head:
        return ""
    moved = attribute({str(k): float(v) for k, v in base.items()}, {str(k): float(v) for k, v in head.items()})
    suffix = f" {unit}" if unit and unit != "count" else ""
    return f"{label}: " + ", ".join(f"{m.name[:60]} {_human(m.delta, signed=True)}{suffix}" for m in moved[:3]) if moved else ""
