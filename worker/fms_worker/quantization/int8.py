"""Weight-only int8: one symmetric scale per output channel, activations stay in the model dtype.

    w[n, k] ~= q[n, k] * scale[n],  q in [-127, 127]

`torch._weight_int8pack_mm` does the matmul without materialising the dense
weight where it has a kernel; elsewhere the weight is upcast per call
(torch.compile fuses the upcast into the GEMM prologue).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fms_worker.quantization.staged import StagedLinearMethod, set_param


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (q [N, K] int8, scale [N] float32)."""
    w = weight.float()
    scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return q.float() * scale.float()[:, None]


@functools.cache
def has_int8pack_kernel(device_type: str) -> bool:
    """Whether `_weight_int8pack_mm` runs on this device type (CPU always; CUDA depends on the build)."""
    try:
        x = torch.ones(2, 32, dtype=torch.bfloat16, device=device_type)
        torch._weight_int8pack_mm(x, torch.ones(8, 32, dtype=torch.int8, device=device_type),
                                  torch.ones(8, dtype=torch.bfloat16, device=device_type))
        return True
    except (RuntimeError, NotImplementedError):
        return False


class Int8LinearMethod(StagedLinearMethod):
    def __init__(self, use_kernel: bool | None = None):
        self.use_kernel = use_kernel  # None: decide per device

    def convert(self, layer, weight):
        q, scale = quantize_int8(weight)
        set_param(layer, "qweight", q)  # [N, K]
        set_param(layer, "scales", scale.to(weight.dtype))  # [N]
        use = self.use_kernel if self.use_kernel is not None else has_int8pack_kernel(weight.device.type)
        layer.int8_kernel = use

    def apply(self, layer, x, bias):
        if layer.int8_kernel:
            shape = x.shape
            y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), layer.qweight, layer.scales.to(x.dtype))
            y = y.reshape(*shape[:-1], -1)
        else:
            y = F.linear(x, layer.qweight.to(x.dtype)) * layer.scales.to(x.dtype)
        return y + bias if bias is not None else y
