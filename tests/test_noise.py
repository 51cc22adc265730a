"""Session-to-session noise: stored runs of the machine, with the baseline's settings, set the floor
a latency change must clear."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.results.compare import compare_runs
from harness.results.noise import HISTORY_MIN, RunNoise, run_noise
from harness.results.runs import Run
from harness.results.tolerances import parse_tolerances
from tests.data import synth

DEFAULTS = parse_tolerances(None)


def session(seed: int, *, session_sd: float, slow: float = 1.0) -> Run:
    """Five backbones' cases where the whole session runs ``exp(N(0, session_sd))`` slower, as a
    co-tenant or a frequency change does, and resnet18 is ``slow`` times slower on top."""
    rng = np.random.default_rng(seed)
    factor = math.exp(rng.normal(0.0, session_sd))
    benches = [
        synth.inference_case(b, synth.latency_samples(rng, ms * factor * (slow if b == "resnet18" else 1.0), 0.03, 40))
        for b, (_, _, _, ms, _) in synth.BACKBONES.items()
    ]
    return Run.from_json(synth.make_run(benches), source=f"session {seed}")


def alarms(base: Run, cur: Run, history: list[Run]) -> list[str]:
    rows = compare_runs(base, cur, DEFAULTS, history=history).rows
    return [r.case_id for r in rows if r.metric == "latency_p50_ms" and r.verdict == "regression"]


def test_noise_of_known_values() -> None:
    noise = RunNoise(runs=4, mean_log=math.log(10.0), sd_log=0.1)
    assert noise.excess_pct(12.0) == pytest.approx(20.0)
    # t(0.995, 3) = 5.8409; 5.8409 * 0.1 * sqrt(1.25) = 0.65303 -> +92.2%
    assert noise.upper_pct() == pytest.approx((math.exp(5.840909 * 0.1 * math.sqrt(1.25)) - 1) * 100, rel=1e-4)


def test_fewer_runs_than_the_minimum_give_no_noise_estimate() -> None:
    runs = [session(s, session_sd=0.1) for s in range(HISTORY_MIN - 1)]
    assert run_noise(runs[1:], runs[0], ["latency_p50_ms"]) == {}
    assert len(run_noise([session(9, session_sd=0.1), *runs[1:]], runs[0], ["latency_p50_ms"])) == 5


def test_aa_with_session_noise_raises_alarms_without_history_and_none_with_it() -> None:
    """Sessions 15% apart (sd of log): the rank test alone flags many A/A pairs. With five
    stored runs of history each case may still land past its 99.5% prediction bound by
    chance: 5 cases x 100 pairs x 0.5% = 2.5 expected at most (fewer, as the tolerance and the
    rank test must agree too)."""
    without, with_history = 0, 0
    for trial in range(100):
        runs = [session(1000 * trial + i, session_sd=0.15) for i in range(7)]
        base, cur, history = runs[0], runs[1], runs[2:]
        without += bool(alarms(base, cur, []))
        with_history += bool(alarms(base, cur, history))
    assert without >= 20  # the problem is real: a whole session shifts past the 10% tolerance
    assert with_history <= 3


def test_a_25_percent_slowdown_is_still_caught_on_a_quiet_machine_with_history() -> None:
    caught = 0
    for trial in range(50):
        runs = [session(1000 * trial + i, session_sd=0.02) for i in range(7)]
        slow = session(1000 * trial + 99, session_sd=0.02, slow=1.25)
        caught += alarms(runs[0], slow, runs[2:]) == ["inference/resnet18-cpu-bs1-32px-fp32"]
    assert caught == 50


RESNET = "inference/resnet18-cpu-bs1-32px-fp32"


def _session(seed: int, factor: float, *, threads: int = 4, slow: float = 1.0) -> Run:
    """resnet18 alone, schema 2, the whole session ``factor`` times slower, ``threads`` as a setting."""
    rng = np.random.default_rng(seed)
    bench = synth.inference_case("resnet18", synth.latency_samples(rng, 2.1 * factor * slow, 0.03, 40))
    return Run.from_json(synth.make_run([synth.with_settings(bench, threads=threads)], schema=3), source=f"session {seed}")


def test_history_pools_only_runs_with_the_baselines_settings() -> None:
    """Five stored sessions far apart (0.7x to 1.45x): pooled, their bound (+269%) absorbs a real
    25% slowdown. Run with 2 threads instead of 4, they are other cases and must not count."""
    base, cur = _session(0, 1.0), _session(1, 1.0, slow=1.25)
    spread = (0.7, 1.45, 0.8, 1.35, 1.25)
    same = [_session(10 + i, f) for i, f in enumerate(spread)]
    other = [_session(10 + i, f, threads=2) for i, f in enumerate(spread)]
    assert alarms(base, cur, []) == [RESNET]
    assert alarms(base, cur, same) == []  # comparable history: within this machine's noise
    assert alarms(base, cur, other) == [RESNET]  # incomparable history is ignored
    assert run_noise(other, base) == {} and run_noise(same, base)[(RESNET, "latency_p50_ms")].runs == 6
    mixed = run_noise([*same[:2], *other[2:]], base)[(RESNET, "latency_p50_ms")]
    assert mixed.runs == 3


def test_detectable_includes_the_history_bound() -> None:
    base, cur = _session(0, 1.0), _session(1, 1.0)
    history = [_session(10 + i, f) for i, f in enumerate((0.9, 1.1, 0.95, 1.05))]
    (row,) = [r for r in compare_runs(base, cur, DEFAULTS, history=history).rows if r.metric == "latency_p50_ms"]
    noise = run_noise(history, base)[(RESNET, "latency_p50_ms")]
    assert row.baseline is not None
    bound = (noise.upper_value() / row.baseline - 1) * 100
    assert bound > 10 and row.detectable is not None and row.detectable.amount == pytest.approx(bound)
    assert str(row.detectable) == f">+{bound:.1f}%"


def _own_session(seed: int, factor: float, code: str, *, slow: float = 1.0) -> Run:
    """:func:`_session` of a team's own backbone: its record carries ``backbone_code_digest``."""
    rng = np.random.default_rng(seed)
    bench = synth.inference_case("resnet18", synth.latency_samples(rng, 2.1 * factor * slow, 0.03, 40))
    bench["extra_info"]["backbone_code_digest"] = code
    return Run.from_json(synth.make_run([synth.with_settings(bench, threads=4)], schema=3), source=f"session {seed}")


def test_history_never_pools_runs_of_other_code_but_compare_still_judges_them() -> None:
    """An own backbone's stored runs of another code digest are another model's noise: they do not widen
    the bound. Across a code change the case is still judged, each row saying the digest changed."""
    base, cur = _own_session(0, 1.0, "aaaa"), _own_session(1, 1.0, "bbbb", slow=1.25)
    spread = (0.7, 1.45, 0.8, 1.35, 1.25)
    other_code = [_own_session(10 + i, f, "cccc") for i, f in enumerate(spread)]
    same_code = [_own_session(10 + i, f, "aaaa") for i, f in enumerate(spread)]
    assert run_noise(other_code, base) == {} and run_noise(same_code, base)[(RESNET, "latency_p50_ms")].runs == 6
    rows = compare_runs(base, cur, DEFAULTS, history=other_code).rows
    latency = next(r for r in rows if r.metric == "latency_p50_ms")
    assert latency.verdict == "regression" and latency.note.startswith("code digest changed (aaaa → bbbb); Mann-Whitney")
    assert all(r.note.startswith("code digest changed (aaaa → bbbb)") for r in rows)
