"""fp8 W8A8 (Hopper, Ada): float8_e4m3fn weights with one scale per output channel, activations
quantized per token on the fly, one `torch._scaled_mm` with row-wise scales.

    y[m, n] = (xq[m, :] . wq[n, :]) * x_scale[m] * w_scale[n]

Also the capability check that fp8 KV caches share.
"""

from __future__ import annotations

import logging
import os

import torch

from fms_worker.layers import fused
from fms_worker.layers.quantized_rows import InputFormat, QuantizedRows
from fms_worker.quantization.staged import StagedLinearMethod, set_param

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448


def fp8_unsupported_reason(device: torch.device | str | None) -> str | None:
    """None when the device runs fp8 matmuls; otherwise what the device is."""
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda":
        return f"this device is {'CPU' if device is None or device.type == 'cpu' else device.type}"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return f"this device is {torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"
    return None


def require_fp8(device: torch.device | str | None, what: str = "fp8") -> None:
    reason = fp8_unsupported_reason(device)
    if reason is not None:
        raise ValueError(
            f"{what} needs an NVIDIA GPU with compute capability >= 8.9 (H100, H200, L4, L40S); {reason}; "
            "use int8 or none"
        )


def quantize_fp8_rows(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, K] -> (fp8 [R, K], float32 scale [R, 1]) with one scale per row."""
    scale = t.abs().amax(dim=-1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX
    q = (t.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q, scale


# The RMSNorm before the QKV and gate-up projections and the gated activation before the down projection write
# fp8 rows and their scales in their own compiled kernel, instead of each projection running a quantization pass
# of its own (three of the four a layer). Measured on H200 (docs/quantization.md): a 256-sequence 8B step 10.1 ->
# 9.3 ms. FMS_FP8_FUSED_INPUT=0 in the worker's environment gives each projection its own pass again.
FUSED_INPUT = os.environ.get("FMS_FP8_FUSED_INPUT", "1") != "0"
ROWS = InputFormat("fp8_rows", quantize_fp8_rows)
log = logging.getLogger(__name__)


class Fp8LinearMethod(StagedLinearMethod):
    def __init__(self, fused_input: bool | None = None):
        self.fused_input = FUSED_INPUT if fused_input is None else fused_input
        if not self.fused_input and fused_input is None:
            log.warning("FMS_FP8_FUSED_INPUT=0: each fp8 projection quantizes its own input (slower)")

    def input_format(self):
        return ROWS if self.fused_input else None

    def convert(self, layer, weight):
        require_fp8(weight.device)
        if weight.dtype != torch.bfloat16:
            raise ValueError(f"fp8 quantization computes in bfloat16; set precision.dtype bfloat16 (got {weight.dtype})")
        n, k = weight.shape
        if n % 16 or k % 16:
            raise ValueError(f"fp8 matmuls need both weight dimensions divisible by 16; this layer is [{n}, {k}]")
        q, scale = quantize_fp8_rows(weight)
        set_param(layer, "qweight", q)  # [N, K]
        set_param(layer, "w_scale", scale.t().contiguous())  # [1, N] float32

    def apply(self, layer, x, bias):
        if isinstance(x, QuantizedRows):  # the layer before wrote ROWS
            (xq, x_scale), shape, dtype = x.parts, x.shape, x.dtype
        else:
            shape, dtype = x.shape, x.dtype
            # One fused kernel on CUDA (amax, scale, cast); eager it would be five passes over x per linear.
            xq, x_scale = fused.maybe_compiled(ROWS.name, ROWS.quantize)(x.reshape(-1, shape[-1]))  # [M, K], [M, 1]
        # _scaled_mm wants the second operand column-major: the transpose of a row-major [N, K] is.
        y = torch._scaled_mm(xq, layer.qweight.t(), scale_a=x_scale, scale_b=layer.w_scale, bias=bias,
                             out_dtype=dtype, use_fast_accum=True)
        return y.reshape(*shape[:-1], -1)
