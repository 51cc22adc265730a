"""Measuring: timing, the memory probe, params/GMACs, runtimes and export, the training loop."""
