"""Weight-only int4: asymmetric, one (scale, zero) per group of `group_size` input columns.

    w[n, k] ~= (q[n, k] - 8) * scale[g, n] + zero[g, n],  q in [0, 15], g = k // group_size

That is the layout of PyTorch's tinygemm kernels (`_weight_int4pack_mm` on
CUDA, `_weight_int4pack_mm_for_cpu` on CPU), which take the scales and zeros
interleaved as one [K / group, N, 2] tensor. The CUDA kernel needs bfloat16
activations; anything it cannot take falls back to dequantize + matmul.
Input widths that the group size does not divide (SmolLM2's 576) are padded
with zero columns, which contribute nothing to the product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fms_worker.quantization.staged import StagedLinearMethod, set_param


def quantize_int4(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[N, K] (K a multiple of group_size) -> (q [N, K] int32 in 0..15, scale [K/G, N], zero [K/G, N]) float32."""
    n, k = weight.shape
    w = weight.float().reshape(n, k // group_size, group_size)
    lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / 15.0).clamp(min=1e-8)
    q = torch.round((w - lo) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
    zero = lo + 8.0 * scale  # so that (q - 8) * scale + zero == q * scale + lo
    return q, scale.squeeze(-1).t().contiguous(), zero.squeeze(-1).t().contiguous()


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = q.shape
    qg = q.float().reshape(n, k // group_size, group_size)
    return ((qg - 8.0) * scale.t()[..., None].float() + zero.t()[..., None].float()).reshape(n, k)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """[N, K] int 0..15 -> [N, K/2] uint8, even column in the high nibble (the CUDA packer's input)."""
    return (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    p = packed.to(torch.int32)
    return torch.stack([p >> 4, p & 0xF], dim=-1).reshape(packed.shape[0], -1)


def _inner_k_tiles(k: int) -> int | None:
    for tiles in (8, 4, 2):
        if k % (tiles * 16) == 0:
            return tiles
    return None


class Int4LinearMethod(StagedLinearMethod):
    def __init__(self, group_size: int = 128, quantize_lm_head: bool = True):
        if group_size not in (32, 64, 128):
            raise ValueError(f"int4 group size {group_size} is not supported; use 32, 64 or 128")
        self.group_size = group_size
        # A GPTQ/AWQ checkpoint keeps its head dense on purpose; a dense checkpoint's head is quantized too.
        self.quantize_lm_head = quantize_lm_head

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
        kernel = self._kernel(weight, n, k + k_pad)
        layer.int4_kernel = kernel
        if kernel == "cuda":
            packed = torch._convert_weight_to_int4pack(pack_nibbles(q), _inner_k_tiles(k + k_pad))
        elif kernel == "cpu":
            packed = torch._convert_weight_to_int4pack_for_cpu(q, _inner_k_tiles(k + k_pad) or 2)
        else:
            packed = pack_nibbles(q)  # [N, K/2], unpacked per call
        set_param(layer, "qweight", packed)
        set_param(layer, "scales_and_zeros", torch.stack([scale, zero], dim=-1).to(weight.dtype))  # [K/G, N, 2]

    @staticmethod
    def _kernel(weight: torch.Tensor, n: int, k: int) -> str:
        if weight.device.type == "cpu":
            return "cpu" if n % 16 == 0 else "dequant"  # the CPU packer needs N divisible by 16
        if weight.device.type == "cuda" and weight.dtype == torch.bfloat16 and n % 8 == 0 and _inner_k_tiles(k):
            return "cuda"
        return "dequant"

    def apply(self, layer, x, bias):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if layer.int4_k_pad:
            x2 = F.pad(x2, (0, layer.int4_k_pad))
        sz = layer.scales_and_zeros
        if layer.int4_kernel == "cuda":
            y = torch._weight_int4pack_mm(x2, layer.qweight, self.group_size, sz)
        elif layer.int4_kernel == "cpu":
            y = torch._weight_int4pack_mm_for_cpu(x2, layer.qweight, self.group_size, sz.to(x.dtype))
        else:
            w = dequantize_int4(unpack_nibbles(layer.qweight), sz[..., 0], sz[..., 1], self.group_size)
            y = F.linear(x2, w.to(x.dtype))
        y = y.reshape(*shape[:-1], -1)
        return y + bias if bias is not None else y
