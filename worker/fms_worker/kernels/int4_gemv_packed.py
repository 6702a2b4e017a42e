"""A one-row int4 GEMV that works on two weights per instruction (packed 16-bit float pairs).

Same layout as `int4_matmul` (codes two per byte, byte j of a group holding column j low and column
j + group/2 high; `sz` [K/group, N, 2] = (scale, zero); w = (q - 8) * scale + zero). The weights are
read as 32-bit words (eight codes) and the activations as 64-bit words (four bf16/fp16 values), and
one inline-PTX block (`int4_ptx.word_dot`) turns a weight word and its two activation words into one
float32 partial sum: the codes become (q - 8) as 16-bit float pairs, four packed FMAs multiply them by
the activations and add up, two lanes at a time, and the two lanes become float32.

That is about 20 instructions for eight weights, against ~8 instructions a weight for the
one-nibble-per-element GEMV in `int4_matmul` (`python3 bench/kernel_ptx.py --kernel int4-packed`).
Each group's partial sums then take the group's scale, and its zero times the group's activation sum:
sum_k x_k w_k = s * sum_k x_k (q_k - 8) + z * sum_k x_k.

Rounding: within a word the products and their sums are rounded to the activation dtype (four terms
a lane) before float32 takes over; the error is far below int4's own (GPU tests compare with the
dequantized reference).

The engine's one-row int4 matmul (quantization/int4.py; FMS_INT4_PAIRS=0 selects int4_matmul's GEMV instead).
On H200 it read 1.5-3.0 TB/s of packed weight on the 8B shapes, 1.3-2.0x faster than that GEMV
(bench/decode_kernels_gpu.py --sections int4; docs/benchmarks.md). Off CUDA (the interpreter) the same sums
are computed with plain integer and float operations.
"""

from __future__ import annotations

import torch

from fms_worker.kernels import int4_ptx
from fms_worker.kernels.tuning import (group_gemv_rows, group_gemv_store, group_gemv_tuner, group_gemv_weights,
                                      pdl_done, pdl_launch, pdl_wait)

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None

# (BLOCK_N, groups per step, warps, stages) at group 128; other group sizes keep the bytes per step. More rows a
# thread share each activation word (fewer shared-memory loads): 3.4-5.8 SASS instructions a weight for these.
_CONFIGS = [(8, 4, 4, 3), (16, 4, 4, 3), (32, 2, 4, 3), (64, 1, 4, 4), (16, 4, 2, 4), (32, 2, 2, 4), (64, 1, 2, 4),
            (128, 1, 4, 3)]


def configs(group: int) -> list[dict]:
    return [dict(BLOCK_N=bn, GPS=max(1, gps * 128 // group), num_warps=w, num_stages=st)
            for bn, gps, w, st in _CONFIGS]


def supported(x: torch.Tensor, packed: torch.Tensor) -> bool:
    """16-bit activations whose row reads as 64-bit words, and whole 32-bit weight words per row."""
    return (x.dtype in (torch.bfloat16, torch.float16) and x.shape[0] == 1 and x.is_contiguous()
            and x.data_ptr() % 8 == 0 and packed.is_contiguous() and packed.shape[1] % 4 == 0
            and packed.data_ptr() % 4 == 0)


if triton is not None:
    _ASM_BF16 = tl.constexpr(int4_ptx.word_dot("bf16"))
    _ASM_FP16 = tl.constexpr(int4_ptx.word_dot("f16"))

    @triton.jit
    def _lane(words, i, IS_BF16: tl.constexpr):
        """The i-th 16-bit float of 64-bit words, as float32 (the interpreter's path)."""
        h = ((words >> (16 * i)) & 0xFFFF).to(tl.int16)
        if IS_BF16:
            return h.to(tl.bfloat16, bitcast=True).to(tl.float32)
        return h.to(tl.float16, bitcast=True).to(tl.float32)

    @triton.jit
    def _word_dot(w, xl, xh, IS_BF16: tl.constexpr, ASM: tl.constexpr):
        """sum over a word's eight codes of (q - 8) * x, float32."""
        if ASM:
            if IS_BF16:
                return tl.inline_asm_elementwise(_ASM_BF16, "=r,r,l,l", [w, xl, xh], dtype=tl.float32,
                                                 is_pure=True, pack=1)
            return tl.inline_asm_elementwise(_ASM_FP16, "=r,r,l,l", [w, xl, xh], dtype=tl.float32,
                                             is_pure=True, pack=1)
        acc = tl.zeros(w.shape, tl.float32)
        for i in tl.static_range(4):
            b = (w >> (8 * i)) & 0xFF
            acc += ((b & 0xF) - 8).to(tl.float32) * _lane(xl, i, IS_BF16)
            acc += ((b >> 4) - 8).to(tl.float32) * _lane(xh, i, IS_BF16)
        return acc

    @triton.jit
    def _rows_step(acc, q_ptr, sz_ptr, xl, xh, xs, g_ok, EVEN: tl.constexpr, IS_BF16: tl.constexpr,
                   ASM: tl.constexpr):
        """acc [BLOCK_N, GPS] plus one step: per group, scale * sum (q - 8) x + zero * sum x."""
        if EVEN:
            w = tl.load(q_ptr)
            s = tl.load(sz_ptr).to(tl.float32)
            z = tl.load(sz_ptr + 1).to(tl.float32)
        else:
            w = tl.load(q_ptr, mask=g_ok[None, :, None], other=0)  # its activations load as 0
            s = tl.load(sz_ptr, mask=g_ok[None, :], other=0.0).to(tl.float32)
            z = tl.load(sz_ptr + 1, mask=g_ok[None, :], other=0.0).to(tl.float32)
        p = tl.sum(_word_dot(w, xl[None], xh[None], IS_BF16, ASM), axis=2)
        return acc + s * p + z * xs[None, :]

    @triton.jit
    def _packed_gemv_kernel(X, XW, QW, SZ, Y, N, K, stride_qw, GROUP: tl.constexpr, GATED: tl.constexpr,
                            EVEN: tl.constexpr, IS_BF16: tl.constexpr, ASM: tl.constexpr,
                            BLOCK_N: tl.constexpr, GPS: tl.constexpr, STAGES: tl.constexpr,
                            USE_PDL: tl.constexpr = 0):
        """QW [N, K/8] int32 weight words; XW [K/4] int64 activation words; X [K] the same activations."""
        pdl_wait(USE_PDL)
        WB: tl.constexpr = GROUP // 8  # weight words per group and row
        rn, n_ok, rows, sz_ptr, up_sz_ptr, sz_step = group_gemv_rows(SZ, N, GATED, BLOCK_N, GPS)
        gi = tl.arange(0, GPS)
        wi = tl.arange(0, WB)
        q_ptr, up_ptr = group_gemv_weights(QW, rows, N, stride_qw, GPS, WB)  # [BLOCK_N, GPS, WB]
        xl_ptr = XW + (gi * (GROUP // 4))[:, None] + wi[None, :]  # [GPS, WB]: a group's low nibbles' words
        xs_ptr = X + gi[:, None] * GROUP + tl.arange(0, GROUP)[None, :]  # [GPS, GROUP]
        acc = tl.zeros([BLOCK_N, GPS], dtype=tl.float32)
        acc_up = tl.zeros([BLOCK_N, GPS], dtype=tl.float32)
        for k in tl.range(0, K, GPS * GROUP, num_stages=STAGES):
            g_ok = (k // GROUP + gi) < K // GROUP
            if EVEN:
                xl = tl.load(xl_ptr)
                xh = tl.load(xl_ptr + GROUP // 8)  # the high nibbles' columns start half a group later
                xs = tl.sum(tl.load(xs_ptr).to(tl.float32), axis=1)
            else:
                xl = tl.load(xl_ptr, mask=g_ok[:, None], other=0)
                xh = tl.load(xl_ptr + GROUP // 8, mask=g_ok[:, None], other=0)
                xs = tl.sum(tl.load(xs_ptr, mask=g_ok[:, None], other=0.0).to(tl.float32), axis=1)
            acc = _rows_step(acc, q_ptr, sz_ptr, xl, xh, xs, g_ok, EVEN, IS_BF16, ASM)
            if GATED:
                acc_up = _rows_step(acc_up, up_ptr, up_sz_ptr, xl, xh, xs, g_ok, EVEN, IS_BF16, ASM)
                up_ptr += GPS * WB
                up_sz_ptr += sz_step
            q_ptr += GPS * WB
            sz_ptr += sz_step
            xl_ptr += GPS * (GROUP // 4)
            xs_ptr += GPS * GROUP
        group_gemv_store(Y, rn, n_ok, tl.sum(acc, axis=1), tl.sum(acc_up, axis=1), GATED)
        pdl_done(USE_PDL)

    _tuned = group_gemv_tuner(_packed_gemv_kernel, configs)
    _gated_tuned = group_gemv_tuner(_packed_gemv_kernel, configs)


def int4_gemv_packed(x, packed, sz, group: int, *, config: dict | None = None, out_dtype=None,
                     gated: bool = False):
    """y [1, N] = x [1, K] @ dequant(packed, sz).T (gated: silu(gate) * up of a [2N, K/2] weight), for
    inputs `supported` accepts. `config` (tests): an entry of `configs(group)`."""
    if triton is None:
        raise RuntimeError("int4_gemv_packed needs triton")
    if not supported(x, packed):
        raise ValueError(f"int4_gemv_packed: x {tuple(x.shape)} {x.dtype}, packed {tuple(packed.shape)}")
    k = x.shape[1]
    n = packed.shape[0] // 2 if gated else packed.shape[0]
    if packed.shape[1] * 2 != k or k % group or sz.shape != (k // group, packed.shape[0], 2):
        raise ValueError(f"int4_gemv_packed: x {tuple(x.shape)}, packed {tuple(packed.shape)}, sz {tuple(sz.shape)}")
    y = torch.empty(1, n, dtype=out_dtype or x.dtype, device=x.device)
    qw = packed.view(torch.int32)
    args = (x, x.view(torch.int64), qw, sz, y, n, k, qw.stride(0))
    fixed = dict(GROUP=group, GATED=gated, IS_BF16=x.dtype == torch.bfloat16, ASM=x.is_cuda, **pdl_launch(x))
    if config is not None:
        _packed_gemv_kernel[(triton.cdiv(n, config["BLOCK_N"]),)](
            *args, **fixed, EVEN=(k // group) % config["GPS"] == 0, BLOCK_N=config["BLOCK_N"], GPS=config["GPS"],
            STAGES=config["num_stages"], num_warps=config["num_warps"])
    else:
        (_gated_tuned if gated else _tuned)[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **fixed)
    return y
