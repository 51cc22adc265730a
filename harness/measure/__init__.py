"""Measuring: timing, the memory probe, params/GMACs, instruction counts, op attribution, runtimes and export."""
