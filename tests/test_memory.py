"""Tests for harness.measure.memory: exact live-storage peaks on hand-checked cases."""
from __future__ import annotations

import gc

import pytest
import timm
import torch
from torch import nn

from harness.measure.memory import LiveStorageTracker, module_bytes, peak_bytes, storage_bytes

CPU = torch.device("cpu")
F32 = 4  # bytes per float32 element


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> None:
    # Shared test machine: one thread; seeded so any random init is reproducible.
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_linear_forward_counts_weights_input_output() -> None:
    layer = nn.Linear(1000, 1000, bias=False)
    x = torch.randn(8, 1000)
    with torch.no_grad():
        peak = peak_bytes(lambda: layer(x), CPU, [*layer.parameters(), x])
    # weight 1000*1000 + input 8*1000 + output 8*1000 float32 elements
    assert peak == 4_000_000 + 32_000 + 32_000


def test_resident_tensors_deduplicated_by_storage() -> None:
    x = torch.randn(10, 100)
    assert peak_bytes(lambda: None, CPU, [x, x.view(-1), x[0], x.t()]) == 1000 * F32
    assert peak_bytes(lambda: None, CPU) == 0


def _mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(100, 200, bias=False), nn.Linear(200, 300, bias=False), nn.Linear(300, 50, bias=False)
    )


def test_peak_is_max_not_sum_when_activations_are_freed() -> None:
    mlp = _mlp()
    x = torch.randn(4, 100)
    weights = (100 * 200 + 200 * 300 + 300 * 50) * F32
    with torch.inference_mode():
        peak = peak_bytes(lambda: mlp(x), CPU, [*mlp.parameters(), x])
    # x (400) + h1 (800) + h2 (1200) are live together; h1 is freed before h3 (200).
    assert peak == weights + (400 + 800 + 1200) * F32
    assert peak < weights + (400 + 800 + 1200 + 200) * F32


def test_saved_activations_stay_counted_with_grad_enabled() -> None:
    mlp = _mlp()
    x = torch.randn(4, 100)
    weights = (100 * 200 + 200 * 300 + 300 * 50) * F32
    # With grad on, each Linear saves its input for the weight gradient, so h1 survives.
    assert peak_bytes(lambda: mlp(x), CPU, [*mlp.parameters(), x]) == weights + (400 + 800 + 1200 + 200) * F32


def test_output_saved_by_autograd_outlives_its_python_tensor() -> None:
    x = torch.randn(1000, requires_grad=True)

    def fn() -> torch.Tensor:
        y = x.exp()  # exp saves its *output* (via a shallow copy autograd owns)
        total = y.sum()
        del y  # the Python tensor dies; the storage must stay counted
        torch.empty(2000)
        return total

    # x 4000 + exp output 4000 + sum 4 + empty 8000
    assert peak_bytes(fn, CPU, [x]) == 4000 + 4000 + 4 + 8000


def test_views_and_inplace_ops_not_double_counted() -> None:
    x = torch.randn(10, 100)

    def fn() -> None:
        y = x.view(100, 10)
        y.add_(1.0)
        x[::2].mul_(3.0)
        x.t().relu_()
        a = x * 2  # the only new storage: 4000 B
        a.relu_()
        a[:5].mul_(2.0)
        a.view(-1).unsqueeze(0).squeeze(0)

    assert peak_bytes(fn, CPU, [x]) == 4000 + 4000


def test_storage_resized_by_out_argument() -> None:
    x = torch.randn(1000)

    def fn() -> None:
        out = torch.empty(0)
        torch.add(x, x, out=out)  # resizes out's storage from 0 to 4000 B

    assert peak_bytes(fn, CPU, [x]) == 8000


def test_freed_memory_is_released() -> None:
    def fn() -> None:
        for _ in range(5):
            torch.empty(1000)  # each freed before the next is allocated

    assert peak_bytes(fn, CPU) == 4000


def test_training_step_counts_grads_and_optimizer_state() -> None:
    model = nn.Linear(256, 128, bias=False)
    x = torch.randn(16, 256)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = model(x).sum()
        loss.backward()
        opt.step()

    weight = 128 * 256 * F32
    first = peak_bytes(step, CPU, [model.weight, x])
    # At the momentum-buffer clone: weight + input + grad + new momentum + the 4 B loss.
    assert first == 3 * weight + 16 * 256 * F32 + 4
    momentum = [opt.state[model.weight]["momentum_buffer"]]
    second = peak_bytes(step, CPU, [model.weight, x, *momentum])
    # At the weight-grad mm: weight + input + momentum + grad + loss (4 B) + the
    # autograd seed gradient (4 B, expanded as a view, so stored once).
    assert second == 3 * weight + 16 * 256 * F32 + 4 + 4
    assert peak_bytes(step, CPU, [model.weight, x, *momentum]) == second


def test_resnet18_forward_is_deterministic() -> None:
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    resident = [*model.parameters(), *model.buffers(), x]
    with torch.inference_mode():
        runs = [peak_bytes(lambda: model(x), CPU, resident) for _ in range(2)]
    assert runs[0] == runs[1]
    assert runs[0] > module_bytes(model) + x.numel() * F32


def test_gc_state_restored() -> None:
    assert gc.isenabled()
    peak_bytes(lambda: None, CPU)
    assert gc.isenabled()
    with pytest.raises(RuntimeError, match="boom"):
        peak_bytes(lambda: (_ for _ in ()).throw(RuntimeError("boom")), CPU)
    assert gc.isenabled()


def test_module_bytes_counts_params_buffers_and_ties_once() -> None:
    assert module_bytes(nn.Linear(1000, 1000)) == (1000 * 1000 + 1000) * F32
    assert module_bytes(nn.BatchNorm2d(8)) == 8 * 2 * F32 + 8 * 2 * F32 + 8  # 8-byte int64 counter
    first, second = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    second.weight = first.weight
    assert module_bytes(nn.Sequential(first, second)) == 16 * F32


def test_storage_bytes_and_tracker_device_filter() -> None:
    x = torch.randn(3, 4)
    assert storage_bytes([x, x[1:], x.reshape(-1)]) == 12 * F32
    with LiveStorageTracker(torch.device("meta"), [x]) as tracker:
        torch.empty(10)
    assert tracker.peak == 0


def test_bad_input_raises_clear_errors() -> None:
    with pytest.raises(TypeError, match="callable"):
        peak_bytes(42, CPU)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'cpu' and 'cuda'"):
        peak_bytes(lambda: None, torch.device("meta"))
    with pytest.raises(TypeError, match="resident must hold tensors"):
        peak_bytes(lambda: None, CPU, [nn.Linear(2, 2)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="nn.Module"):
        module_bytes(torch.zeros(3))  # type: ignore[arg-type]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_includes_resident_and_new_allocation() -> None:
    device = torch.device("cuda")
    x = torch.randn(1024, 1024, device=device)  # 4 MiB, a multiple of the 512 B block size
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    peak = peak_bytes(lambda: torch.empty(1 << 20, device=device), device)
    assert peak == before + (1 << 20) * F32
    assert peak >= x.numel() * F32
    layer = nn.Linear(1000, 1000, bias=False).to(device)
    xin = torch.randn(8, 1000, device=device)
    with torch.no_grad():
        layer(xin)  # warm up cuBLAS so its workspace exists in both runs
        runs = [peak_bytes(lambda: layer(xin), device) for _ in range(2)]
    assert runs[0] == runs[1] >= 4_000_000 + 32_000 + 32_000
