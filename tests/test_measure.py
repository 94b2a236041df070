"""The measuring helpers of calm_mini.training.measure: the timer calls what it times the stated
number of times and returns a median; the saved-bytes counter counts what autograd keeps."""

import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from calm_mini.training.measure import LiveTensorBytes, median_seconds, peak_memory, saved_for_backward, time_it


def mlp_step(batch: int, layers: int = 3, width: int = 32, checkpointed: bool = False):
    """A forward and backward pass of a small MLP on a (batch, width) input."""
    torch.manual_seed(0)
    model = nn.Sequential(*(nn.Sequential(nn.Linear(width, width), nn.Tanh()) for _ in range(layers)))
    x = torch.randn(batch, width)

    def step():
        h = x
        for block in model:
            h = checkpoint(block, h, use_reentrant=False) if checkpointed else block(h)
        h.sum().backward()

    return step


def test_the_timer_calls_each_function_warmup_plus_repeats_times_and_returns_positive_medians():
    calls = {"a": 0, "b": 0}

    def count(name):
        def fn():
            calls[name] += 1
            sum(range(1000))
        return fn

    seconds = median_seconds({"a": count("a"), "b": count("b")}, repeats=5, warmup=2)
    assert list(seconds) == ["a", "b"] and all(s > 0 for s in seconds.values())
    assert calls == {"a": 7, "b": 7}
    n = []
    assert time_it(lambda: n.append(1), repeats=3, warmup=0) > 0 and len(n) == 3
    with pytest.raises(ValueError, match="repeats"):
        median_seconds({"a": count("a")}, repeats=0)


def test_the_median_is_robust_to_one_slow_call():
    import time

    delays = iter([0.0, 0.05, 0.0, 0.0])  # one warm-up call, then three timed ones: one slow

    def fn():
        time.sleep(next(delays))

    assert time_it(fn, repeats=3, warmup=1) < 0.03


def test_bytes_saved_grow_with_the_batch():
    saved = {batch: saved_for_backward(mlp_step(batch)) for batch in (4, 16, 64)}
    assert 0 < saved[4] < saved[16] < saved[64]
    # Activations grow with the batch, the weights saved by the matrix products do not: linear in it.
    assert saved[64] - saved[16] == 4 * (saved[16] - saved[4])


def test_a_function_that_keeps_nothing_saves_zero_bytes():
    x = torch.randn(8, 8, requires_grad=True)
    with torch.no_grad():
        assert saved_for_backward(lambda: (x @ x).tanh()) == 0
    assert saved_for_backward(lambda: x + 1) == 0  # addition needs nothing for its gradient
    assert saved_for_backward(lambda: torch.randn(8, 8) @ torch.randn(8, 8)) == 0  # nothing requires grad


def test_a_storage_saved_twice_counts_once():
    x = torch.randn(16, requires_grad=True)
    assert saved_for_backward(lambda: x * x) == saved_for_backward(lambda: x.exp()) == 16 * 4


def test_gradient_checkpointing_saves_less():
    assert saved_for_backward(mlp_step(16, checkpointed=True)) < saved_for_backward(mlp_step(16))


def test_live_tensor_bytes_counts_allocations_and_frees():
    before = torch.ones(250)  # allocated before the block: not counted, even when changed in place
    with LiveTensorBytes() as tracker:
        before.mul_(2)
        a = torch.ones(1000)  # 4000 bytes
        b = torch.ones(500, dtype=torch.float64)  # 4000 bytes
        a.add_(1)  # in place: no new storage
        view = a.view(10, 100)  # a view: no new storage
        del b
        c = a * 2  # 4000 bytes, while 4000 are freed
    assert tracker.peak == 8000 and tracker.live == 8000  # a and c still alive
    del a, view, c
    assert tracker.live == 0


def test_peak_memory_on_a_cpu_counts_tensor_bytes():
    with peak_memory("cpu") as peak:
        x = torch.ones(1000)
        del x
    assert peak == {"peak_bytes": 4000, "method": "live tensor storages counted by a TorchDispatchMode"}


def test_measure_imports_nothing_but_torch():
    """The benchmark scripts run on an image with torch and transformers only."""
    code = ("import sys\nfor m in ('datasets', 'plotly', 'ipywidgets', 'gguf'):\n    sys.modules[m] = None\n"
            "import calm_mini.training.measure\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_timer_synchronises_and_the_peak_is_cudas():
    x = torch.randn(1024, 1024, device="cuda")
    assert time_it(lambda: x @ x, repeats=3, device="cuda") > 0
    with peak_memory("cuda") as peak:
        y = torch.empty(1024, 1024, device="cuda")  # 4 MiB above the level at entry
        del y
    assert peak["method"] == "torch.cuda.max_memory_allocated" and peak["peak_bytes"] >= 4 * 2**20
    w = torch.randn(64, 64, device="cuda", requires_grad=True)
    assert saved_for_backward(lambda: (x[:64, :64] @ w).tanh().sum().backward()) > 0
