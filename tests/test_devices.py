"""Devices: name parsing, the contract's vocabularies, the out-of-memory errors and the one slug."""

from __future__ import annotations

import pytest
import torch

from harness import contract
from harness.contract import slug
from harness.errors import OUT_OF_MEMORY
from harness.runtime.devices import DEVICE_TYPES, DTYPES, PRECISIONS, parse_device

GOOD = [("cpu", "cpu"), (" CUDA ", "cuda"), ("cuda:1", "cuda:1"), ("mps", "mps")]
BAD = [
    ("tpu", "unknown device 'tpu' (did you mean cpu?); valid: cpu, cuda, cuda:N, mps"),
    ("cuda:x", "unknown device 'cuda:x' (did you mean cuda:N"),
    ("", "unknown device ''; valid: cpu, cuda, cuda:N, mps"),
]


@pytest.mark.parametrize(("text", "expected"), GOOD)
def test_parse_device_normalises(text: str, expected: str) -> None:
    assert parse_device(text) == expected


@pytest.mark.parametrize(("text", "message"), BAD)
def test_parse_device_names_the_valid_devices(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_device(text)
    assert message in str(info.value)


def test_vocabularies_are_the_contract_s() -> None:
    assert DEVICE_TYPES is contract.DEVICE_TYPES and PRECISIONS is contract.PRECISIONS
    assert tuple(DTYPES) == PRECISIONS


def test_out_of_memory_covers_device_and_host() -> None:
    assert OUT_OF_MEMORY == (torch.OutOfMemoryError, MemoryError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Intel(R) Xeon(R) CPU @ 2.20GHz", "intel-xeon-cpu"),
        ("NVIDIA GeForce RTX 3090", "nvidia-geforce-rtx-3090"),
        ("t4-mem2048mib-cuda0.5-cpus0-3", "t4-mem2048mib-cuda0.5-cpus0-3"),
        ("MAXN_SUPER", "maxn-super"),
        ("AMD Ryzen 9 7950X 16-Core Processor", "amd-ryzen-9-7950x-16-core-processor"),
    ],
)
def test_slug(text: str, expected: str) -> None:
    assert slug(text) == expected


def test_unavailable_reasons_name_what_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.runtime import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.unavailable_reason("cpu") is None
    assert devices.unavailable_reason("cuda") == "no CUDA device is visible (torch.cuda.is_available() is False)"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert devices.unavailable_reason("cuda:1") is None
    assert devices.unavailable_reason("cuda:5") == "only 2 CUDA device(s) are visible (cuda:0 to cuda:1)"
