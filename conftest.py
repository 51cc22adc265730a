"""Loads the backbone-bench plugin and its fixtures for every test under this directory."""

pytest_plugins = ["pytester", "harness.plugin", "fixtures.recording", "fixtures.inference", "fixtures.train", "fixtures.plan"]
