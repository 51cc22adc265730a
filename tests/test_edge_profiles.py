"""Edge profiles: parsing, errors that name the fix, apply/restore, budget checks."""

from __future__ import annotations

import os

import pytest
import torch

from harness.edge.profiles import (
    NAMED_PROFILES,
    EdgeProfile,
    EdgeProfileError,
    MemoryBudgetExceeded,
    apply,
    check_budget,
    format_cpus,
    parse_bytes,
    parse_cpus,
    parse_edge_profile,
)


def test_named_profiles_exist_with_sane_figures() -> None:
    for name in ("orin-nano-8gb", "orin-nx-16gb", "rpi5-8gb", "rpi4-4gb"):
        profile = parse_edge_profile(name.upper())
        assert profile.name == name and profile.threads >= 4
        assert 0 < profile.mem_budget_bytes < int(name.split("-")[-1][:-2]) * 2**30
    assert parse_edge_profile("orin-nano-8gb").cuda_mem_fraction == 0.75
    assert parse_edge_profile("rpi5-8gb").cuda_mem_fraction is None


def test_unknown_profile_suggests_close_match() -> None:
    with pytest.raises(EdgeProfileError, match=r"unknown edge profile 'orin-nano-8g' \(did you mean orin-nano-8gb, .*\?\); valid: .*rpi4-4gb; or a custom profile"):
        parse_edge_profile("orin-nano-8g")


def test_custom_profile_full() -> None:
    profile = parse_edge_profile("threads=4,mem=2GiB,cuda_mem_fraction=0.5,cpus=0-3")
    assert profile == EdgeProfile("t4-mem2048mib-cuda0.5-cpus0-3", 4, frozenset({0, 1, 2, 3}), 2 * 2**30, 0.5)
    assert profile.key_suffix() == "t4-mem2048mib-cuda0.5-cpus0-3"
    assert profile.as_record() == {
        "edge_profile": profile.name,
        "edge_threads": 4,
        "edge_cpus": "0-3",
        "edge_mem_budget_bytes": 2 * 2**30,
        "edge_cuda_mem_fraction": 0.5,
    }


def test_custom_cpu_list_with_commas() -> None:
    profile = parse_edge_profile("threads=2,cpus=0,2,4-5,mem=512MB")
    assert profile.cpus == frozenset({0, 2, 4, 5}) and profile.mem_budget_bytes == 512 * 10**6


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("threads=4", "lacks mem"),
        ("thread=4,mem=1GiB", r"unknown edge-profile key 'thread' \(did you mean threads\?\); valid: threads, mem"),
        ("threads=0,mem=1GiB", "whole number >= 1"),
        ("threads=4,mem=2", "needs a number and a unit"),
        ("threads=4,mem=2GIGS", "unknown memory unit 'GIGS'; valid: B, KB, MB, GB, KiB, MiB, GiB"),
        ("threads=4,mem=2Gib,cuda_mem_fraction=1.5", r"in \(0, 1\]"),
        ("threads=4,mem=2GiB,cpus=3-1", "CPU list"),
        ("threads=4,7,mem=1GiB", "not key=value"),
    ],
)
def test_custom_profile_errors(text: str, message: str) -> None:
    with pytest.raises(EdgeProfileError, match=message):
        parse_edge_profile(text)


def test_units() -> None:
    assert [parse_bytes(t) for t in ("1B", "1KB", "1KiB", "1.5MiB", "2mb", "1GB")] == [1, 1000, 1024, 1572864, 2 * 10**6, 10**9]
    assert parse_cpus("0-2,5") == frozenset({0, 1, 2, 5}) and format_cpus(frozenset({0, 1, 2, 5, 7, 8})) == "0-2,5,7-8"


def test_apply_sets_and_restores_threads_and_affinity() -> None:
    before_threads, before_cpus = torch.get_num_threads(), os.sched_getaffinity(0)
    one_cpu = min(before_cpus)
    profile = parse_edge_profile(f"threads=1,mem=1GiB,cpus={one_cpu}")
    with apply(profile, device="cpu") as applied:
        assert torch.get_num_threads() == 1
        assert os.sched_getaffinity(0) == {one_cpu}
        assert applied.cpus == frozenset({one_cpu}) and applied.cuda_mem_fraction is None
    assert torch.get_num_threads() == before_threads and os.sched_getaffinity(0) == before_cpus


def test_apply_restores_after_an_exception() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="inside"):
        with apply(parse_edge_profile("threads=1,mem=1GiB"), device="cpu"):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_apply_clamps_or_refuses_cpus() -> None:
    allowed = os.sched_getaffinity(0)
    beyond = max(allowed) + 1000
    with pytest.raises(EdgeProfileError, match=f"may only use {format_cpus(frozenset(allowed))}"):
        with apply(parse_edge_profile(f"threads=1,mem=1GiB,cpus={beyond}"), device="cpu"):
            pass
    partial = parse_edge_profile(f"threads=1,mem=1GiB,cpus={min(allowed)},{beyond}")
    with pytest.warns(UserWarning, match="clamped"):
        with apply(partial, device="cpu") as applied:
            assert applied.cpus == frozenset({min(allowed)})


def test_apply_warns_on_oversubscription() -> None:
    threads = len(os.sched_getaffinity(0)) + 1
    with pytest.warns(UserWarning, match="oversubscribes"):
        with apply(parse_edge_profile(f"threads={threads},mem=1GiB"), device="cpu"):
            assert torch.get_num_threads() == threads


def test_check_budget_message_gives_figures() -> None:
    profile = parse_edge_profile("threads=1,mem=100MiB")
    check_budget(100 * 2**20, profile)  # exactly at budget passes
    with pytest.raises(MemoryBudgetExceeded, match=r"115\.0 MiB exceeds .* budget 100\.0 MiB by 15\.0 MiB \(15\.0%\)") as info:
        check_budget(115 * 2**20, profile)
    assert info.value.over_bytes == 15 * 2**20


def test_named_table_is_frozen_dataclasses() -> None:
    assert all(isinstance(p, EdgeProfile) and p.name == key for key, p in NAMED_PROFILES.items())
