"""Edge deployment track: Jetson detection, power/energy sampling, board profiles, batch planning.

Submodules are independent; import from them directly, e.g.
``from harness.edge.power import pick_sampler``.
"""

from __future__ import annotations

from harness.edge.jetson import JetsonFacts, jetson_facts
from harness.edge.planning import Plan, plan
from harness.edge.power import PowerReading, energy_per_image_mj, pick_sampler
from harness.edge.profiles import EdgeProfile, MemoryBudgetExceeded, apply, check_budget, parse_edge_profile

__all__ = [
    "EdgeProfile", "JetsonFacts", "MemoryBudgetExceeded", "Plan", "PowerReading", "apply", "check_budget",
    "energy_per_image_mj", "jetson_facts", "parse_edge_profile", "pick_sampler", "plan",
]
