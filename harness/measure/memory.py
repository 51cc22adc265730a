"""The memory probe: peak bytes of live tensors while a callable runs.

What is counted
---------------
* CUDA: ``torch.cuda.max_memory_allocated`` over the call, after resetting the
  peak. That is the caching allocator's allocated-block high-water mark: all
  live tensors on the device (including those alive before the call), rounded
  up to the allocator's block granularity (512 B), plus any scratch buffers
  kernels allocate through the allocator (e.g. cuDNN/cuBLAS workspaces).
* CPU: the high-water mark of the summed ``nbytes`` of distinct live tensor
  *storages* on the device. A storage is counted once however many views share
  it; it is added when it first appears as an operator output (seen through a
  ``TorchDispatchMode``, forward and autograd backward alike) or is passed in
  ``resident``, and removed when the storage itself is freed (a weakref on the
  storage object, which PyTorch keeps alive as long as any C++ owner -- e.g. a
  tensor saved for backward -- holds the storage). Not counted: allocator
  slack, temporaries an operator allocates inside its own kernel (e.g.
  oneDNN scratch, im2col buffers, torch.compile/Inductor internal buffers), and
  pre-existing tensors not listed in ``resident``. The number is exact and
  deterministic: the Python garbage collector is paused during the call so
  reference cycles cannot be freed at random moments.
"""
from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten

__all__ = ["LiveStorageTracker", "module_bytes", "peak_bytes", "storage_bytes"]


def _storage_of(tensor: torch.Tensor) -> torch.UntypedStorage | None:
    """Return the tensor's storage, or None for tensors without a plain storage."""
    if is_traceable_wrapper_subclass(tensor) or tensor.layout != torch.strided:
        return None  # wrapper subclasses (DTensor, ...) and sparse tensors own no single storage
    try:
        storage = tensor.untyped_storage()
    except (RuntimeError, NotImplementedError):
        return None  # e.g. functional/batched tensors with no accessible storage
    return None if storage.device.type == "meta" else storage


def storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Return the bytes of the distinct storages behind ``tensors`` (views counted once)."""
    seen: dict[int, int] = {}
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"expected tensors, got {type(tensor).__name__}; pass tensors (e.g. model.parameters()).")
        storage = _storage_of(tensor)
        if storage is not None:
            seen[storage._cdata] = storage.nbytes()
    return sum(seen.values())


def module_bytes(module: nn.Module) -> int:
    """Return the storage bytes of ``module``'s parameters and buffers (shared ones once)."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module_bytes expects an nn.Module, got {type(module).__name__}.")
    return storage_bytes([*module.parameters(), *module.buffers()])


class LiveStorageTracker(TorchDispatchMode):  # type: ignore[no-untyped-call]  # its __init_subclass__ is unannotated
    """Dispatch mode tracking live storage bytes on one device, and their peak.

    Use as a context manager; ``current`` and ``peak`` are in bytes.
    """

    def __init__(self, device: torch.device, resident: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in torch
        self.device = torch.device(device)
        self._live: dict[int, int] = {}  # StorageImpl address -> nbytes
        self._finalizers: dict[int, weakref.finalize[[int], torch.UntypedStorage]] = {}
        self.current = 0
        self.peak = 0
        for tensor in resident:
            if not isinstance(tensor, torch.Tensor):
                raise TypeError(
                    f"resident must hold tensors, got {type(tensor).__name__}; "
                    "pass e.g. [*model.parameters(), *model.buffers(), x]."
                )
            self._track(tensor)

    def _on_device(self, tensor: torch.Tensor) -> bool:
        dev = tensor.device
        return dev.type == self.device.type and (self.device.index is None or dev.index == self.device.index)

    def _track(self, tensor: torch.Tensor) -> None:
        if not self._on_device(tensor):
            return
        storage = _storage_of(tensor)
        if storage is None:
            return
        key = storage._cdata
        nbytes = storage.nbytes()
        known = self._live.get(key)
        if known is None:
            self._finalizers[key] = weakref.finalize(storage, self._release, key)
        self._live[key] = nbytes
        # A known storage can change size (resize_, out= ops); apply the delta.
        self.current += nbytes - (known or 0)
        self.peak = max(self.peak, self.current)

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)
        self._finalizers.pop(key, None)

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)  # type: ignore[no-untyped-call]  # unannotated in torch
        # Stop watching storages that outlive the measurement (weights, outputs).
        for finalizer in self._finalizers.values():
            finalizer.detach()
        self._finalizers.clear()

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out


def _peak_cuda(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return int(torch.cuda.max_memory_allocated(device))


def _peak_cpu(fn: Callable[[], object], device: torch.device, resident: Iterable[torch.Tensor]) -> int:
    gc_was_enabled = gc.isenabled()
    gc.collect()  # drop garbage from earlier work so it cannot be freed mid-call
    gc.disable()
    try:
        tracker = LiveStorageTracker(device, resident)  # typed: TorchDispatchMode.__enter__ (returns self) is not
        with tracker:
            fn()
        return tracker.peak
    finally:
        if gc_was_enabled:
            gc.enable()


def peak_bytes(
    fn: Callable[[], object],
    device: torch.device,
    resident: Iterable[torch.Tensor] = (),
) -> int:
    """Run ``fn()`` once and return the peak bytes of live tensors on ``device``.

    The peak includes tensors alive when ``fn`` starts: on CUDA all of them
    (allocator statistics); on CPU those passed in ``resident`` (weights,
    buffers, inputs, optimizer state -- deduplicated by storage). ``resident``
    is ignored on CUDA. See the module docstring for exactly what is counted.
    ``fn``'s return value is discarded when the call ends, after the peak.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a zero-argument callable, got {type(fn).__name__}; wrap the step in a lambda.")
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("peak_bytes was asked for a CUDA device but CUDA is not available; pass torch.device('cpu').")
        return _peak_cuda(fn, device)
    if device.type == "cpu":
        return _peak_cpu(fn, device, list(resident))
    raise ValueError(f"peak_bytes supports 'cpu' and 'cuda' devices, got {device.type!r}; measure on one of those.")
