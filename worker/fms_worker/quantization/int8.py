"""Weight-only int8: one symmetric scale per output channel, activations stay in the model dtype.

    w[n, k] ~= q[n, k] * scale[n],  q in [-127, 127]

The product never materialises the dense weight where a kernel exists: on CUDA
the Triton kernel of `fms_worker.kernels.int8_matmul` (bf16/fp16 activations;
PyTorch's own CUDA `_weight_int8pack_mm` is a naive loop, far slower than a
bf16 GEMM), on CPU `torch._weight_int8pack_mm`. Anything else upcasts the
weight per call ("dequant").
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from fms_worker.kernels.int8_matmul import int8_gemv, int8_matmul
from fms_worker.kernels.tuning import triton_available
from fms_worker.quantization.staged import set_param
from fms_worker.quantization.tuned import TunedLinearMethod


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


def int8_kernel_for(weight: torch.Tensor) -> str:
    """The product's path for this weight: "triton" (CUDA, fp16/bf16), "cpu" (`_weight_int8pack_mm`) or
    "dequant" (the weight upcast per call)."""
    dev = weight.device.type
    if dev == "cuda" and triton_available() and weight.dtype in (torch.float16, torch.bfloat16):
        return "triton"
    if dev == "cpu" and has_int8pack_kernel("cpu"):
        return "cpu"
    return "dequant"


class Int8LinearMethod(TunedLinearMethod):
    """Also quantizes an untied LM head (per-row scales keep each logit's error to its own row)."""

    def __init__(self, use_kernel: bool | None = None):
        self.use_kernel = use_kernel  # None: the device's kernel if any; True: insist on one; False: dequant

    def for_lm_head(self):
        return self

    def convert(self, layer, weight):
        q, scale = quantize_int8(weight)
        set_param(layer, "qweight", q)  # [N, K]
        set_param(layer, "scales", scale.to(weight.dtype))  # [N]
        kernel = "dequant" if self.use_kernel is False else int8_kernel_for(weight)
        if self.use_kernel and kernel == "dequant":
            raise ValueError(f"no int8 kernel for {weight.dtype} weights on {weight.device.type}")
        layer.int8_kernel = kernel

    def apply(self, layer, x, bias):
        kernel = layer.int8_kernel
        shape = x.shape
        if kernel == "triton" and x.dtype in (torch.float16, torch.bfloat16):
            return self._triton(layer, x, bias, x.dtype)
        if kernel == "cpu":
            y = torch._weight_int8pack_mm(x.reshape(-1, shape[-1]), layer.qweight, layer.scales.to(x.dtype))
            y = y.reshape(*shape[:-1], -1)
        else:
            y = F.linear(x, layer.qweight.to(x.dtype)) * layer.scales.to(x.dtype)
        return y + bias if bias is not None else y

    def apply_silu_mul(self, layer, x, bias):
        """One row (decode at batch 1): the GEMV reads gate and up rows together and writes silu(gate) * up."""
        if (layer.int8_kernel == "triton" and bias is None and x.dtype in (torch.float16, torch.bfloat16)
                and x.numel() == x.shape[-1] == layer.qweight.shape[1]):
            y = int8_gemv(self.rows(layer, x), layer.qweight, layer.scales, gated=True)
            return y.reshape(*x.shape[:-1], -1)
        return super().apply_silu_mul(layer, x, bias)

    def warm_up_input(self, layer):
        if layer.int8_kernel != "triton":
            return None
        return torch.zeros(1, layer.qweight.shape[1], dtype=layer.scales.dtype, device=layer.qweight.device)

    def apply_float32(self, layer, x):
        """The kernel writes its float32 accumulator unrounded (LM-head logits without bf16 ties)."""
        if layer.int8_kernel == "triton" and x.dtype in (torch.float16, torch.bfloat16):
            return self._triton(layer, x, None, torch.float32)
        return super().apply_float32(layer, x)

    def _triton(self, layer, x, bias, out_dtype):
        y = int8_matmul(self.rows(layer, x), layer.qweight, layer.scales, bias, out_dtype=out_dtype)
        return y.reshape(*x.shape[:-1], -1)

