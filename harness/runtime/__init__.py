"""The runtime room: the devices a case runs on (:mod:`~harness.runtime.devices`), the torchrun
process group (:mod:`~harness.runtime.distributed`) and the machine facts behind a baseline key
(:mod:`~harness.runtime.machine`)."""
