"""Checked-in runs and the synthetic run builder (synth.py) the tests read."""
