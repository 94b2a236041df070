"""How long a step takes and how many bytes autograd keeps, for the benchmarks and notebook 05::

    from calm_mini.training.measure import median_seconds, saved_for_backward

    seconds = median_seconds({"composed": step, "anchor": anchor_step}, repeats=5)  # {name: s}
    kept = saved_for_backward(step)                                                 # bytes

* :func:`median_seconds` runs the functions in turn (interleaved, so that machine noise hits all
  alike), synchronises CUDA before reading the clock (CUDA runs asynchronously: without it one
  would time the launch of the kernels, not their work) and keeps each one's median;
* :func:`saved_for_backward` counts the tensors autograd saves for the backward pass, through
  ``torch.autograd.graph.saved_tensors_hooks`` — on any device, the memory that gradient
  checkpointing and bf16 change;
* :func:`peak_memory` measures the peak of allocated tensor bytes above the level at entry:
  ``torch.cuda.max_memory_allocated`` on a GPU, :class:`LiveTensorBytes` on a CPU.

Only torch is imported, so the benchmark scripts can use this module on an image with nothing
else of the kit's dependencies.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Mapping

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait for the device's queued work to finish (CUDA only; a CPU runs synchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fns: Mapping[str, Callable[[], object]], repeats: int = 5, device: str | torch.device = "cpu",
                   warmup: int = 1) -> dict[str, float]:
    """Median wall-clock seconds of each function, interleaved.

    Each function is called ``warmup`` times first (not timed: allocator, kernels, caches), then
    the functions are called in turn ``repeats`` times, each call timed between two CUDA
    synchronisations. So each function is called exactly ``warmup + repeats`` times.

    Returns: ``{name: median seconds}``, in the order of ``fns``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats={repeats} must be ≥ 1 and warmup={warmup} ≥ 0.")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def time_it(fn: Callable[[], object], repeats: int = 5, device: str | torch.device = "cpu", warmup: int = 1) -> float:
    """Median seconds of ``fn()`` over ``repeats`` timed calls after ``warmup`` untimed ones
    (:func:`median_seconds` for one function)."""
    return median_seconds({"fn": fn}, repeats, device, warmup)["fn"]


def saved_for_backward(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn()`` runs.

    Every tensor an operation saves (activations, and the weights a matrix product needs for
    the gradient of its input) passes the pack hook of
    ``torch.autograd.graph.saved_tensors_hooks``; a storage saved several times (by several
    operations, or as views) is counted once. Under no_grad nothing is saved: 0. Regions that
    install their own hooks (non-reentrant gradient checkpointing) save through those, so
    what they drop is not counted — which is what checkpointing is for.

    ``fn`` may run the backward pass too (a whole training step): the count is of what was
    saved, not of what is still alive at the end. The storages are referenced until ``fn``
    returns, so that a freed address reused by a later tensor is not mistaken for the same one.
    """
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages.setdefault(id(storage), storage)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    total = sum(s.nbytes() for s in storages.values())
    storages.clear()
    return total


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of tensor storages created inside the block while they are alive.

    Every ATen operation's outputs pass through ``__torch_dispatch__`` (autograd's backward
    included); a storage is counted when an operation creates it and uncounted when it is
    freed. ``peak`` is then the CPU analogue of ``torch.cuda.max_memory_allocated`` minus what
    was allocated before the block: exact tensor bytes, without allocator rounding or caching
    (nor the scratch space that kernels allocate internally).
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted: set[int] = set()

    def _free(self, key: int, nbytes: int) -> None:
        self._counted.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()  # views and in-place results share their input's storage
            key = id(storage)
            if key in inputs or key in self._counted:
                continue
            nbytes = storage.nbytes()
            self._counted.add(key)
            self.live += nbytes
            self.peak = max(self.peak, self.live)
            weakref.finalize(storage, self._free, key, nbytes)
        return out


@contextlib.contextmanager
def peak_memory(device: str | torch.device = "cpu") -> Iterator[dict]:
    """Measure the peak of allocated tensor bytes *above the level at entry* inside the block.

    Yields a dict filled on exit: ``peak_bytes`` and ``method`` (what was measured:
    ``torch.cuda.max_memory_allocated`` on a GPU, :class:`LiveTensorBytes` on a CPU)::

        with peak_memory("cuda") as peak:
            step()
        peak["peak_bytes"]
    """
    result: dict = {}
    if torch.device(device).type == "cuda":
        synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        synchronize(device)
        result.update(peak_bytes=torch.cuda.max_memory_allocated(device) - base,
                      method="torch.cuda.max_memory_allocated")
    else:
        with LiveTensorBytes() as tracker:
            yield result
        result.update(peak_bytes=tracker.peak, method="live tensor storages counted by a TorchDispatchMode")
