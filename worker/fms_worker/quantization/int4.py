"""Weight-only int4: asymmetric, one (scale, zero) per group of `group_size` input columns.

    w[n, k] ~= (q[n, k] - 8) * scale[g, n] + zero[g, n],  q in [0, 15], g = k // group_size

Scales and zeros are kept interleaved as one [K / group, N, 2] tensor (the
layout of PyTorch's tinygemm kernels). On CUDA the codes are packed two per
byte, [N, K / 2], for the Triton kernels of `fms_worker.kernels.int4_gemv_packed`
(one row) and `int4_matmul` (bf16/fp16 activations; on the 8B shapes on H200 they
beat PyTorch's tinygemm `_weight_int4pack_mm` at every row count, 1.1-1.6x at one
row and 7.1-15.8x at 256: see docs/benchmarks.md). On CPU
`_weight_int4pack_mm_for_cpu` runs on its own packing; anything else falls back
to dequantize + matmul. Input widths that the group size does not divide
(SmolLM2's 576) are padded with zero columns, which contribute nothing.
"""

from __future__ import annotations

import logging
import os

import torch
import torch.nn.functional as F

from fms_worker.kernels import int4_gemv_packed as packed_gemv
from fms_worker.kernels.int4_matmul import int4_gemv, int4_matmul
from fms_worker.kernels.tuning import triton_available
from fms_worker.quantization.staged import set_param
from fms_worker.quantization.tuned import TunedLinearMethod


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] (K a multiple of group_size) -> (q [N, K] int32 in 0..15, scale [K/G, N], zero [K/G, N]) float32.

    Per group, round to nearest from the group's minimum to its maximum in 15 steps (asymmetric), unless the
    group already lies on a symmetric grid (codes -8..7 times a step of max|w| / 8, or / 7 where the maximum
    would not round within 7 of those): the weights of a symmetric int4 checkpoint (compressed-tensors W4A16),
    which then come back on their own grid instead of being rounded again. "Lies on" allows each weight a
    sixteenth of a step, for the model dtype's rounding of the checkpoint's values; on dense weights picking the
    smaller error of the two grids instead cost perplexity (SmolLM2 int4 g128: 39.4 against 36.1)."""
    n, k = weight.shape
    w = weight.float().reshape(n, k // group_size, group_size)
    lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / 15.0).clamp(min=1e-8)
    q = torch.round((w - lo) / scale).clamp(0, 15)
    zero = lo + 8.0 * scale  # so that (q - 8) * scale + zero == q * scale + lo
    err = ((q - 8.0) * scale + zero - w).square().sum(-1, keepdim=True)
    amax = torch.maximum(hi, -lo).clamp(min=1e-8)
    for step in (amax / 8.0, amax / 7.0):
        fits = hi < 7.5 * step  # rounding keeps every code within -8..7: no clamping
        q_sym = torch.round(w / step).clamp(-8, 7) + 8.0
        diff = (q_sym - 8.0) * step - w
        on_grid = diff.abs().amax(-1, keepdim=True) <= step / 16
        err_sym = diff.square().sum(-1, keepdim=True)
        better = fits & on_grid & (err_sym < err)
        q, scale, zero, err = (torch.where(better, q_sym, q), torch.where(better, step, scale),
                               torch.where(better, torch.zeros_like(zero), zero), torch.where(better, err_sym, err))
    return (q.to(torch.int32).reshape(n, k), scale.squeeze(-1).t().contiguous(),
            zero.squeeze(-1).t().contiguous())


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = q.shape
    qg = q.float().reshape(n, k // group_size, group_size)
    return ((qg - 8.0) * scale.t()[..., None].float() + zero.t()[..., None].float()).reshape(n, k)


def pack_nibbles(q: torch.Tensor, group: int) -> torch.Tensor:
    """[N, K] int 0..15 -> [N, K/2] uint8. Within each group of columns, byte j holds column j in its low
    nibble and column j + group/2 in its high one, so a kernel reads the activations of both nibbles as
    two contiguous runs."""
    n, k = q.shape
    halves = q.reshape(n, k // group, 2, group // 2).to(torch.int32)
    return (halves[:, :, 0] | halves[:, :, 1] << 4).reshape(n, k // 2).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor, group: int) -> torch.Tensor:
    p = packed.to(torch.int32).reshape(packed.shape[0], -1, group // 2)
    return torch.stack([p & 0xF, p >> 4], dim=2).reshape(packed.shape[0], -1)


def _inner_k_tiles(k: int) -> int | None:
    for tiles in (8, 4, 2):
        if k % (tiles * 16) == 0:
            return tiles
    return None


# The int4 kernels turn codes into weights two at a time by inline PTX (kernels/int4_ptx.py): one-row matmuls
# through the packed-pair GEMV (kernels/int4_gemv_packed.py), more rows through tiles that dequantize in pairs.
# Faster on every 8B shape measured on H200 (docs/quantization.md); FMS_INT4_PAIRS=0 in the worker's environment
# selects the one-nibble-per-instruction kernels instead (for comparison, or a GPU whose PTX assembler refuses them).
PAIRS = os.environ.get("FMS_INT4_PAIRS", "1") != "0"
log = logging.getLogger(__name__)


class Int4LinearMethod(TunedLinearMethod):
    def __init__(self, group_size: int = 128, quantize_lm_head: bool = True):
        if group_size not in (32, 64, 128):
            raise ValueError(f"int4 group size {group_size} is not supported; use 32, 64 or 128")
        self.group_size = group_size
        # A GPTQ/AWQ checkpoint keeps its head dense on purpose; a dense checkpoint's head is quantized too.
        self.quantize_lm_head = quantize_lm_head
        if not PAIRS:
            log.warning("FMS_INT4_PAIRS=0: the int4 kernels dequantize one weight an instruction (slower)")

    def for_lm_head(self):
        return self if self.quantize_lm_head else None

    def convert(self, layer, weight):
        n, k = weight.shape
        g = self.group_size
        k_pad = -k % g
        if k_pad:
            weight = F.pad(weight, (0, k_pad))
        q, scale, zero = quantize_int4(weight, g)
        layer.int4_k_pad = k_pad
        kernel = self._kernel(weight, n)
        layer.int4_kernel = kernel
        if kernel == "cpu":
            packed = torch._convert_weight_to_int4pack_for_cpu(q, _inner_k_tiles(k + k_pad) or 2)
        else:
            packed = pack_nibbles(q, g)  # [N, K/2]: the Triton kernels' layout, unpacked per call by the fallback
        set_param(layer, "qweight", packed)
        set_param(layer, "scales_and_zeros", torch.stack([scale, zero], dim=-1).to(weight.dtype))  # [K/G, N, 2]

    @staticmethod
    def _kernel(weight: torch.Tensor, n: int) -> str:
        if weight.device.type == "cpu":
            return "cpu" if n % 16 == 0 else "dequant"  # the CPU packer needs N divisible by 16
        if weight.device.type == "cuda" and triton_available() and weight.dtype in (torch.bfloat16, torch.float16):
            return "triton"
        return "dequant"

    def rows(self, layer, x):
        """x [..., K] -> [T, K + pad]: zero columns up to the padded width the weight was quantized at."""
        x2 = super().rows(layer, x)
        return F.pad(x2, (0, layer.int4_k_pad)) if layer.int4_k_pad else x2

    def _triton_ok(self, layer, x) -> bool:
        return layer.int4_kernel == "triton" and x.dtype == layer.scales_and_zeros.dtype

    def _matmul(self, layer, x2, out_dtype=None, gated=False):
        """The Triton kernels on rows x2 (gated: one row, silu(gate) * up)."""
        if PAIRS and x2.shape[0] == 1 and packed_gemv.supported(x2, layer.qweight):
            return packed_gemv.int4_gemv_packed(x2, layer.qweight, layer.scales_and_zeros, self.group_size,
                                                out_dtype=out_dtype, gated=gated)
        if gated:
            return int4_gemv(x2, layer.qweight, layer.scales_and_zeros, self.group_size, gated=True)
        return int4_matmul(x2, layer.qweight, layer.scales_and_zeros, self.group_size, out_dtype=out_dtype,
                           pairs=PAIRS)

    def apply_float32(self, layer, x):
        """The kernels write their float32 accumulators unrounded (LM-head logits without bf16 ties)."""
        if self._triton_ok(layer, x):
            y = self._matmul(layer, self.rows(layer, x), out_dtype=torch.float32)
            return y.reshape(*x.shape[:-1], -1)
        return super().apply_float32(layer, x)

    def apply_silu_mul(self, layer, x, bias):
        """One row (decode at batch 1): the GEMV reads gate and up rows together and writes silu(gate) * up."""
        if self._triton_ok(layer, x) and bias is None and x.numel() == x.shape[-1]:
            y = self._matmul(layer, self.rows(layer, x), gated=True)
            return y.reshape(*x.shape[:-1], -1)
        return super().apply_silu_mul(layer, x, bias)

    def warm_up_input(self, layer):
        if layer.int4_kernel != "triton":
            return None
        sz = layer.scales_and_zeros
        return torch.zeros(1, layer.qweight.shape[1] * 2 - layer.int4_k_pad, dtype=sz.dtype, device=sz.device)

    def apply(self, layer, x, bias):
        shape = x.shape
        x2 = self.rows(layer, x)
        sz = layer.scales_and_zeros
        if self._triton_ok(layer, x):
            y = self._matmul(layer, x2)
        elif layer.int4_kernel == "cpu":
            y = torch._weight_int4pack_mm_for_cpu(x2, layer.qweight, self.group_size, sz.to(x.dtype))
        else:  # dequant, or activations of another dtype than the Triton kernels were set up for
            w = dequantize_int4(unpack_nibbles(layer.qweight, self.group_size), sz[..., 0], sz[..., 1],
                                self.group_size)
            y = F.linear(x2, w.to(x.dtype))
        y = y.reshape(*shape[:-1], -1)
        return y + bias if bias is not None else y
