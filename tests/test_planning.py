"""Batch-size planning on synthetic measures with exact answers, and once on a real CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.edge.planning import PlanningError, estimate_max_batch, search_max_batch
from harness.errors import OUT_OF_MEMORY


def linear(batch: int) -> int:
    return 1000 + 300 * batch  # fits budget 10000 up to batch 30 exactly


def superlinear(batch: int) -> int:
    return 1000 + 100 * batch + 10 * batch * batch  # 9750 at 25, 10360 at 26


def test_estimate_linear_is_exact() -> None:
    estimate = estimate_max_batch(linear, 10_000)
    assert (estimate.max_batch, estimate.fixed_bytes, estimate.per_sample_bytes) == (30, 1000.0, 300.0)
    assert estimate.probes == ((1, 1300), (2, 1600))


def test_estimate_superlinear_overshoots_by_the_fit() -> None:
    estimate = estimate_max_batch(superlinear, 10_000)
    # probes 1110 and 1240: per-sample 130, fixed 980 -> floor(9020 / 130) = 69
    assert (estimate.max_batch, estimate.fixed_bytes, estimate.per_sample_bytes) == (69, 980.0, 130.0)


def test_least_squares_over_three_probes() -> None:
    estimate = estimate_max_batch(superlinear, 10_000, probe_batches=(1, 2, 4))
    # points (1,1110) (2,1240) (4,1560): slope 1060/7, intercept 950 (least squares, exact)
    assert estimate.per_sample_bytes == pytest.approx(1060 / 7)
    assert estimate.fixed_bytes == pytest.approx(950.0)
    assert estimate.max_batch == 59  # floor(9050 * 7 / 1060) = floor(59.76)


def test_search_exact_for_linear_and_superlinear() -> None:
    assert search_max_batch(linear, 10_000) == 30
    assert search_max_batch(superlinear, 10_000) == 25
    assert search_max_batch(superlinear, 10_000, start=64) == 25  # start above the answer bisects down
    assert search_max_batch(linear, 10**9, limit=100) == 100  # capped at limit
    assert search_max_batch(linear, 1000) == 0  # not even batch 1 fits


def test_out_of_memory_is_the_torch_and_the_host_error() -> None:
    assert OUT_OF_MEMORY == (torch.OutOfMemoryError, MemoryError)
    assert issubclass(torch.cuda.OutOfMemoryError, OUT_OF_MEMORY)


def test_search_treats_out_of_memory_as_failure() -> None:
    calls: list[int] = []

    def oom_above_17(batch: int) -> int:
        calls.append(batch)
        if batch > 17:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return 0

    assert search_max_batch(oom_above_17, 10**12) == 17
    assert len(calls) == len(set(calls))  # no batch measured twice

    def host_oom(batch: int) -> int:
        if batch > 5:
            raise MemoryError
        return 0

    assert search_max_batch(host_oom, 10**12) == 5


def test_planning_errors_name_the_fix() -> None:
    with pytest.raises(PlanningError, match="at least two distinct"):
        estimate_max_batch(linear, 10_000, probe_batches=(2, 2))
    with pytest.raises(PlanningError, match=r"probe batches further apart, e.g. \(1, 8\)"):
        estimate_max_batch(lambda batch: 5000, 10_000)

    def oom(batch: int) -> int:
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(PlanningError, match="probe batch 1 ran out of memory"):
        estimate_max_batch(oom, 10_000)
    with pytest.raises(ValueError, match="start <= limit"):
        search_max_batch(linear, 10_000, start=10, limit=5)


def test_plan_on_a_tiny_cnn_with_the_memory_probe() -> None:
    memory = pytest.importorskip("harness.measure.memory")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    ).eval()
    device = torch.device("cpu")
    weights = [*model.parameters(), *model.buffers()]

    def measure(batch: int) -> int:
        images = torch.zeros(batch, 3, 32, 32)

        def step() -> object:
            with torch.no_grad():
                return model(images)

        return memory.peak_bytes(step, device, resident=[*weights, images])

    one, eight = measure(1), measure(8)
    assert eight > one
    budget = one + (eight - one) * 3  # room for about 22 images
    estimate = estimate_max_batch(measure, budget, probe_batches=(1, 8))
    searched = search_max_batch(measure, budget, start=max(1, estimate.max_batch), limit=256)
    assert 10 <= searched <= 40
    assert 0.8 <= estimate.max_batch / searched <= 1.25
    assert measure(searched) <= budget < measure(searched + 1)


class _StaysPut(nn.Linear):
    """A model whose ``.to(...)`` is a no-op, so a "cuda" spec runs on a machine without one."""

    def to(self, *args: object, **kwargs: object) -> _StaysPut:
        return self


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_plan_batches_releases_the_inference_model_before_training_probes(monkeypatch: pytest.MonkeyPatch, device: str) -> None:
    # On CUDA the training probes read max_memory_allocated, which counts every live
    # allocation: an inference model still alive would add a copy of the weights to each.
    import weakref

    from harness.kinds import plan
    from harness.matrix.cases import CaseSpec

    built: list[weakref.ref[nn.Module]] = []

    def create_backbone(name: str, **kwargs: object) -> nn.Module:
        model = _StaysPut(4, 2)
        built.append(weakref.ref(model))
        return model

    inference_models: list[weakref.ref[nn.Module]] = []

    def inference_peak(spec: CaseSpec, batch: int, model: nn.Module | None = None) -> int:
        assert model is not None
        inference_models.append(weakref.ref(model))
        return linear(batch)

    alive_at_train: list[bool] = []
    emptied: list[str] = []
    emptied_at_train: list[bool] = []

    def train_peak(spec: CaseSpec, batch: int) -> int:
        alive_at_train.append(any(ref() is not None for ref in inference_models))
        emptied_at_train.append(bool(emptied))
        return linear(batch)

    monkeypatch.setattr(plan, "create_backbone", create_backbone)
    monkeypatch.setattr(plan, "inference_peak", inference_peak)
    monkeypatch.setattr(plan, "train_peak", train_peak)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append("empty_cache"))
    spec = CaseSpec("plan", "fake", "cnn", False, device, 1, 32, "fp32")
    record = plan.plan_batches(spec, 10_000)
    assert len(built) == 1 and inference_models  # one model, built for the inference probes
    # no gc.collect() in the fake: plan_batches itself must leave the model unreferenced
    assert alive_at_train and not any(alive_at_train), "the inference model was alive during a training probe"
    # on CUDA the allocator's cache is emptied once, before the first training probe
    assert emptied == (["empty_cache"] if device == "cuda" else [])
    assert all(emptied_at_train) == (device == "cuda")
    # the plan itself is unchanged: linear() fits batch 30 exactly, the estimate plans for 90%
    for what, least in (("inference", 1), ("train", 2)):
        assert record[f"plan_{what}_searched_max_batch"] == 30
        assert record[f"plan_{what}_estimate_fits"] is True
        assert record[f"plan_{what}_estimated_max_batch"] == 26  # floor((9000 - 1000) / 300)
        assert record[f"plan_{what}_per_sample_bytes"] == pytest.approx(300.0)
        assert record[f"plan_{what}_probe_batches"][0] >= least
