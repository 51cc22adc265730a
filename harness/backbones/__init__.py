"""The backbones room: the registry of names and families (:mod:`~harness.backbones.registry`),
pretrained weights and their files (:mod:`~harness.backbones.weights`) and the one model factory
(:mod:`~harness.backbones.factory`)."""
