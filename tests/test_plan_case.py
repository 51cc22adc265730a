"""Batch-size planning probes: they must reach the regime where memory grows with the batch."""

from __future__ import annotations

from harness.edge.planning import estimate_max_batch, search_max_batch
from harness.kinds.plan import BATCH_LIMIT, growing_probes

MiB = 2**20


def training_like(batch: int) -> int:
    """A training step's peak: weights+grads+momentum (120 MiB), then max(optimiser temporaries
    of 40 MiB, 300 KiB of activations per image)."""
    return 120 * MiB + max(40 * MiB, batch * 300 * 1024)


def test_probes_skip_the_flat_regime_and_the_estimate_is_exact() -> None:
    probes = growing_probes(training_like, 2, budget_bytes=512 * MiB)
    # 128 * 300 KiB = 37.5 MiB sits under the 40 MiB optimiser floor; 256 is past the knee.
    assert probes == (256, 512)
    estimate = estimate_max_batch(training_like, 512 * MiB, probe_batches=probes)
    assert estimate.max_batch == search_max_batch(training_like, 512 * MiB, start=estimate.max_batch) == (512 - 120) * 1024 // 300


def test_a_naive_small_pair_would_overestimate() -> None:
    # The pair (2, 8) sits in the flat regime: no growth, so planning from it is impossible.
    assert training_like(8) == training_like(2)


def test_probes_stop_at_the_budget() -> None:
    assert growing_probes(lambda b: 10 * MiB, 1, budget_bytes=MiB) == (1, 2)
    assert growing_probes(lambda b: MiB, 1, budget_bytes=10 * MiB) == (BATCH_LIMIT // 2, BATCH_LIMIT)


def test_the_search_never_measures_below_the_least_runnable_batch() -> None:
    seen: list[int] = []

    def untrainable_below_two(batch: int) -> int:
        seen.append(batch)
        assert batch >= 2, "batch norm cannot train on one image"
        return batch * 10 * MiB

    assert search_max_batch(untrainable_below_two, 35 * MiB, start=8, least=2) == 3
    assert search_max_batch(untrainable_below_two, 15 * MiB, start=2, least=2) == 0  # not even 2 fits
    assert min(seen) == 2
