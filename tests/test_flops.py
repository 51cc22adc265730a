"""Tests for harness.measure.flops: exact counts on toy modules, timm's published figures."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from harness.measure.flops import (
    FlopCountError,
    count_gmacs,
    count_macs,
    count_params,
    uncounted_ops,
)

# name -> (input size, exact param count, published GMACs, published params in M).
# Published GMACs/params: timm repo, results/benchmark-infer-amp-nchw-pt240-cu124-rtx4090.csv
# (columns infer_img_size, infer_gmacs, param_count; the row whose infer_img_size
# matches the size below). Exact param counts were measured here with timm 1.0.31
# and each agrees with the published (rounded) millions, checked below.
PUBLISHED: dict[str, tuple[int, int, float, float]] = {
    "resnet18": (224, 11_689_512, 1.82, 11.69),
    "resnet50": (224, 25_557_032, 4.11, 25.56),
    "convnextv2_tiny": (224, 28_635_496, 4.47, 28.64),
    "tf_efficientnetv2_s": (300, 21_458_488, 5.35, 21.46),  # published at its 300 px eval size
    "mobilenetv3_large_100": (224, 5_483_032, 0.23, 5.48),
    "vit_base_patch16_224": (224, 86_567_656, 17.58, 86.57),
    "deit_small_patch16_224": (224, 22_050_664, 4.61, 22.05),
    "swin_tiny_patch4_window7_224": (224, 28_288_354, 4.51, 28.29),
    "coatnet_0_rw_224": (224, 27_435_562, 4.43, 27.44),
    "poolformer_s12": (224, 11_915_176, 1.82, 11.92),
    "repvgg_a2": (224, 28_210_600, 5.70, 28.21),
    "pvt_v2_b0": (224, 3_666_760, 0.57, 3.67),
    "efficientnet_b0": (224, 5_288_548, 0.40, 5.29),
    "mobilevit_xs": (256, 2_317_848, 1.05, 2.32),  # published at its 256 px eval size
    "regnetx_002": (224, 2_684_792, 0.20, 2.68),
    "ghostnet_100": (224, 5_182_508, 0.15, 5.18),
    "lcnet_100": (224, 2_953_800, 0.16, 2.95),
}

# 1% relative, per the spec; but the CSV rounds to 2 decimals, so for sub-0.5 G
# models the rounding alone (up to 0.005 G) exceeds 1% -- allow that half-unit.
REL_TOL = 0.01
ROUNDING_ABS_TOL = 0.005


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> None:
    # The test machine's cores are shared; one thread keeps tracing predictable.
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_matches_timm_published(name: str) -> None:
    size, params, gmacs, params_m = PUBLISHED[name]
    model = timm.create_model(name, pretrained=False).eval()
    assert count_params(model) == params
    assert round(params / 1e6, 2) == params_m
    measured = count_gmacs(model, torch.randn(1, 3, size, size))
    assert measured == pytest.approx(gmacs, rel=REL_TOL, abs=ROUNDING_ABS_TOL)


class _Sdpa(nn.Module):
    """q comes from the input; k and v are fixed buffers of known shape."""

    def __init__(self, batch_heads: tuple[int, ...], source: int, embed: int, value_embed: int) -> None:
        super().__init__()
        self.register_buffer("k", torch.randn(*batch_heads, source, embed))
        self.register_buffer("v", torch.randn(*batch_heads, source, value_embed))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, self.k, self.v)


class _ExplicitAttention(_Sdpa):
    def forward(self, q: torch.Tensor) -> torch.Tensor:
        attn = (q @ self.k.transpose(-2, -1)) * q.shape[-1] ** -0.5
        return attn.softmax(dim=-1) @ self.v


def test_sdpa_macs_exact_4d() -> None:
    # q [1,3,5,8], k [1,3,7,8], v [1,3,7,4]: 1*3 * 5*7 * (8+4) = 1260 MACs.
    model = _Sdpa((1, 3), source=7, embed=8, value_embed=4)
    assert count_macs(model, torch.randn(1, 3, 5, 8)) == 1260
    assert uncounted_ops(model, torch.randn(1, 3, 5, 8)) == {}


def test_sdpa_macs_exact_3d() -> None:
    # q [1,5,8], k [1,7,8], v [1,7,6]: 1 * 5*7 * (8+6) = 490 MACs.
    model = _Sdpa((1,), source=7, embed=8, value_embed=6)
    assert count_macs(model, torch.randn(1, 5, 8)) == 490


def test_sdpa_counts_like_unfused_matmuls() -> None:
    fused = _Sdpa((1, 2), source=9, embed=16, value_embed=16)
    explicit = _ExplicitAttention((1, 2), source=9, embed=16, value_embed=16)
    q = torch.randn(1, 2, 11, 16)
    # 2 * 11*9 * 32 = 6336
    assert count_macs(fused, q) == count_macs(explicit, q) == 6336


def test_conv_macs_exact_and_pooling_uncounted() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    x = torch.randn(1, 3, 8, 8)
    # 8*8 output positions * 4 out channels * (3 in * 3*3 kernel); bias not counted.
    assert count_macs(model, x) == 8 * 8 * 4 * 3 * 3 * 3
    assert count_gmacs(model, x) == pytest.approx(6912 / 1e9)
    assert uncounted_ops(model, x) == {"aten::max_pool2d": 1}


def test_linear_macs_exact() -> None:
    assert count_macs(nn.Linear(10, 7), torch.randn(1, 10)) == 70


def test_params_counts_tied_weights_once() -> None:
    first = nn.Linear(4, 4, bias=False)
    second = nn.Linear(4, 4)
    second.weight = first.weight
    assert count_params(nn.Sequential(first, second)) == 16 + 4


def test_mode_restored_and_counted_in_eval() -> None:
    model = nn.Sequential(nn.Linear(10, 10), nn.Dropout(0.5), nn.Linear(10, 2))
    model.train()
    assert count_macs(model, torch.randn(1, 10)) == 120
    assert model.training and model[1].training
    model.eval()
    assert count_macs(model, torch.randn(1, 10)) == 120
    assert not model.training


def test_no_grad_during_count() -> None:
    seen: list[bool] = []

    class Probe(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.is_grad_enabled())
            return super().forward(x)

    count_macs(Probe(3, 3), torch.randn(1, 3))
    assert seen and not any(seen)


def test_batch_other_than_one_rejected() -> None:
    with pytest.raises(ValueError, match="batch size 1"):
        count_gmacs(nn.Linear(3, 3), torch.randn(2, 3))


def test_trace_failure_names_model_class() -> None:
    class ShapeStrict(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            assert x.shape[-1] == 224, "expected 224 px"
            return x

    model = ShapeStrict().train()
    with pytest.raises(FlopCountError, match="ShapeStrict.*expected 224 px"):
        count_gmacs(model, torch.randn(1, 3, 32, 32))
    assert model.training


def test_non_tensor_rejected() -> None:
    with pytest.raises(TypeError, match="torch.Tensor"):
        count_gmacs(nn.Linear(3, 3), [1.0, 2.0, 3.0])  # type: ignore[arg-type]
