"""Edge deployment track: Jetson detection, power/energy sampling, board profiles, batch planning.

Submodules are independent; import from them directly, e.g.
``from harness.edge.sources import pick_sampler``.
"""
