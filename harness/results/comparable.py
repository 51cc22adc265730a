"""What makes two runs, and two cases, comparable (the contract's comparability rules, applied).

Two runs are comparable when they measured the same hardware: the machine facts below. A
software difference (torch, CUDA) is worth a warning, not a refusal. Two cases of the same
``case_id`` are comparable when their settings digests agree; otherwise what differs is named.
"""

from __future__ import annotations

from harness.contract import settings_differences
from harness.results.runs import Case, Run

# Machine facts that change the measured hardware (refuse to gate) versus software stack (warn).
_DEVICE_FACTS = ("baseline_key", "device_kind", "gpu_name", "edge_profile")
_LIBRARY_FACTS = ("torch", "torchvision", "timm", "fvcore", "cuda")


def _show(value: object) -> str:
    if isinstance(value, dict) and "name" in value:
        return str(value["name"])  # an edge profile record is named by its profile
    return "none" if value is None else str(value)


def _facts(run: Run) -> dict[str, tuple[str, bool]]:
    """Comparable facts of a run: name -> (shown value, blocks gating when it differs)."""
    info = run.machine_info
    facts = {key: (_show(info.get(key)), True) for key in _DEVICE_FACTS}
    facts.update({key: (_show(info.get(key)), False) for key in _LIBRARY_FACTS})
    # The CPU model decides CPU latency; under a GPU or Jetson run it only moves host overheads.
    facts["cpu_model"] = (_show(info.get("cpu_model")), info.get("device_kind") == "cpu")
    raw = info.get("jetson")
    jetson = raw if isinstance(raw, dict) else {}
    facts["jetson power_mode"] = (_show(jetson.get("power_mode")), True)
    facts["jetson clocks_locked"] = (_show(jetson.get("clocks_locked")), False)
    return facts


def machine_differences(base: Run, cur: Run) -> list[tuple[str, bool]]:
    """What differs between the machines of two runs: (one line per fact, whether it blocks gating)."""
    b_facts, c_facts = _facts(base), _facts(cur)
    return [
        (f"{name}: {b_facts[name][0]} (baseline) vs {c_facts[name][0]} (current)", b_facts[name][1] or c_facts[name][1])
        for name in b_facts
        if b_facts[name][0] != c_facts[name][0]
    ]


def code_note(base: Case, cur: Case) -> str:
    """``""`` when an own backbone's code is the same in both cases (or neither is one), else
    ``code digest changed (a → b)``: the cases are still compared (that is what a gate is for), and said so."""
    if base.code_digest == cur.code_digest:
        return ""
    return f"code digest changed ({base.code_digest or 'none'} → {cur.code_digest or 'none'})"


def settings_note(base: Case, cur: Case) -> str:
    """``""`` when two cases ran with the same settings, else what differs: ``threads 1 → 2; epochs 10 → 2``."""
    if base.settings_digest == cur.settings_digest:
        return ""
    found = settings_differences(base.settings, cur.settings)
    # Equal values can still digest differently (1 and 1.0): name the digests rather than nothing.
    return "; ".join(found) or f"settings digest {base.settings_digest} → {cur.settings_digest}"
