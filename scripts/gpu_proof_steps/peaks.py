"""Dense peak FLOP/s of the GPUs the proof is likely to meet, for model FLOP utilisation (MFU).

Figures are NVIDIA's datasheet numbers in TFLOP/s: "NVIDIA H200 Tensor Core GPU" datasheet
(H200 SXM and NVL), "NVIDIA H100 Tensor Core GPU" datasheet (SXM, PCIe, NVL) and "NVIDIA A100
Tensor Core GPU" datasheet (SXM4 and PCIe, 40 and 80 GB). The datasheets print the tensor-core
figures *with structured sparsity* (marked with an asterisk); dense work gets half, which is what
is listed here. fp32 is the plain (non-tensor-core) rate; tf32 the tensor-core rate fp32 work
gets where TF32 is allowed: PyTorch allows it for cuDNN convolutions by default
(``torch.backends.cudnn.allow_tf32``), not for matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    """One GPU's dense peaks (TFLOP/s) and the substring of its CUDA device name that picks it."""

    gpu: str
    match: str
    fp32: float
    tf32: float
    fp16: float
    bf16: float
    source: str


_H200 = "NVIDIA H200 Tensor Core GPU datasheet (sparse figures halved)"
_H100 = "NVIDIA H100 Tensor Core GPU datasheet (sparse figures halved)"
_A100 = "NVIDIA A100 Tensor Core GPU datasheet (sparse figures halved)"
# Most specific name first: "H200 NVL" before "H200", "H100 PCIe"/"H100 NVL" before "H100".
PEAKS: tuple[Peak, ...] = (
    Peak("H200 NVL", "H200 NVL", 60.0, 417.5, 835.5, 835.5, _H200),
    Peak("H200 SXM", "H200", 67.0, 494.7, 989.4, 989.4, _H200),
    Peak("H100 NVL", "H100 NVL", 60.0, 417.5, 835.5, 835.5, _H100),
    Peak("H100 PCIe", "H100 PCIe", 51.0, 378.0, 756.5, 756.5, _H100),
    Peak("H100 SXM", "H100", 67.0, 494.7, 989.4, 989.4, _H100),
    Peak("A100", "A100", 19.5, 156.0, 312.0, 312.0, _A100),
)


def peak_for(device_name: str) -> Peak | None:
    """The table's row for a CUDA device name (``torch.cuda.get_device_name()``), or ``None``."""
    return next((p for p in PEAKS if p.match.lower() in device_name.lower()), None)


def dense_tflops(peak: Peak, precision: str, *, tf32: bool) -> tuple[float, str]:
    """The peak a case at ``precision`` can reach, and which rate it is.

    fp32 work counts against the TF32 tensor-core peak when TF32 is allowed (convolutions in a
    default PyTorch), else against the plain fp32 rate.
    """
    if precision == "fp32":
        return (peak.tf32, "tf32 tensor core") if tf32 else (peak.fp32, "fp32 (no tensor core)")
    if precision == "fp16":
        return peak.fp16, "fp16 tensor core"
    if precision == "bf16":
        return peak.bf16, "bf16 tensor core"
    raise ValueError(f"no peak for precision {precision!r}; one of fp32, fp16, bf16")
