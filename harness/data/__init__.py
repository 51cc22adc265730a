"""The data layer: datasets as in-memory uint8 tensors, stratified nested subsets of them, batches and
augmentation on the device.

Submodules are independent; import from them directly, e.g.
``from harness.data.datasets import load_split`` or ``from harness.data.subsets import subset_indices``.
"""
