"""Tensor memory seen from Python: bytes of the storages aten ops allocate, while they live."""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class TensorMemoryTracker(TorchDispatchMode):
    """Bytes of the tensor storages allocated by the aten ops run under it, while alive.

    Every op output whose storage is not one of the op's inputs' (views and in-place results
    of tensors made before are not allocations) is counted from its creation until its last
    Python tensor object dies (weakref finalizers; torch keeps the Python object of a tensor
    alive as long as C++ holds it, e.g. as a tensor saved for backward or a custom Function's
    ``ctx`` attribute). ``live`` is the current total, ``peak`` its maximum. Not seen: tensors
    made before (input, parameters) and the scratch memory inside a kernel."""

    def __init__(self):
        super().__init__()
        self.counts: dict[int, int] = {}
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, ptr: int) -> None:
        count = self.counts.get(ptr)
        if count is None:
            return
        if count <= 1:
            del self.counts[ptr]
            self.live -= self.sizes.pop(ptr, 0)
        else:
            self.counts[ptr] = count - 1

    def _track(self, t: torch.Tensor, ptr: int, nbytes: int) -> None:
        if ptr in self.counts:
            self.counts[ptr] += 1
        else:
            self.counts[ptr] = 1
            self.sizes[ptr] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        fin = weakref.finalize(t, self._release, ptr)
        fin.atexit = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {p for p, _ in map(storage_of, tensors_in((args, kwargs))) if p}
        for t in tensors_in(out):
            ptr, nbytes = storage_of(t)
            if not ptr or (ptr in inputs and ptr not in self.counts):
                continue
            self._track(t, ptr, nbytes)
        return out


def tensors_in(obj):
    """The tensors in ``obj`` (nested lists, tuples and dict values)."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from tensors_in(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from tensors_in(o)


def storage_of(t: torch.Tensor) -> tuple[int, int]:
    """(data pointer, bytes) of a tensor's storage; (0, 0) where it has none to see."""
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError, AttributeError, TypeError):
        return 0, 0


def tensor_memory(forward: Callable, make_fwdbwd: Callable[[Callable], Callable[[], object]]) -> dict:
    """``forward_retained_bytes`` (tensor bytes the training-mode forward allocated that are
    still alive when it returns: the output and everything kept for the backward) and
    ``fwdbwd_peak_tensor_bytes`` (the peak over the whole forward+backward, gradients
    included), measured with TensorMemoryTracker around one call of ``make_fwdbwd(probe)``, a
    forward+backward callable whose forward is ``probe``: ``forward`` that marks its end."""
    tracker = TensorMemoryTracker()
    marks = {}

    def probe(x):
        y = forward(x)
        marks["after_forward"] = tracker.live
        return y

    fwdbwd = make_fwdbwd(probe)
    with tracker:
        grads = fwdbwd()
        del grads
    return {"forward_retained_bytes": marks.get("after_forward", 0),
            "fwdbwd_peak_tensor_bytes": tracker.peak}


def cuda_peak(fn: Callable[[], object], device: torch.device) -> tuple[int, int]:
    """(torch.cuda.max_memory_allocated over one call of ``fn``, the bytes allocated before)."""
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    return torch.cuda.max_memory_allocated(device), before
