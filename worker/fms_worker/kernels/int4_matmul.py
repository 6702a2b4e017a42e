"""Weight-only int4 matmul with group-wise scales and zero points (the layout of quantization/int4.py):

    w[n, k] = (q[n, k] - 8) * s[g, n] + z[g, n],  q in 0..15, g = k // group
    q packed [N, K/2] uint8: in group g, byte j holds column g*group + j (low nibble) and column
      g*group + group/2 + j (high nibble), so each nibble's activations are one contiguous run
    sz [K/group, N, 2] = (s, z)
    y [M, N] = x [M, K] @ w.T in x's dtype (bf16/fp16; float32 for LM-head logits; float32 x for the interpreter)

They replace PyTorch's tinygemm (`_weight_int4pack_mm`), which on the 8B shapes on H200 was 1.5x faster
at one row but 1.7x slower at 16 rows and 9x slower at 256 (docs/benchmarks.md). Two kernels:

- one row (decode at batch 1): a CUDA-core GEMV like the int8 one (per-lane float32 partial sums over a
  software-pipelined K loop). A program reads `GPS` whole groups per step, so each weight needs one scale
  and zero without any per-step reduction. Nibbles become floats by bit operations, not by the I2F
  instruction Hopper issues at a quarter rate, and dequantize in one FMA (see `_row_dot`). Its loop is
  bound by instruction issue, not memory (bench/kernel_ptx.py counts it). GATED reads a gated MLP's gate
  and up rows and writes silu(gate) * up.
- more rows: tensor-core tiles; each K step is one group: its low and high nibbles are dequantized to
  the activation dtype in registers ([BLOCK_N, group/2] each) and multiplied with the two halves of the
  group's activations, accumulating in float32 (the product of the rounded dequantized weight, as the
  dense reference computes it).

Both autotune on first use per (row bucket, N, K, group); the engine makes those first calls at start-up.
"""

from __future__ import annotations

import torch

from fms_worker.kernels import int4_ptx
from fms_worker.kernels.tuning import (GEMV_MAX_M, group_gemv_rows, group_gemv_store, group_gemv_tuner,
                                      group_gemv_weights, m_bucket, short_bench, tile_ids)

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None


def int4_matmul_ref(x, packed, sz, group: int, out_dtype=None):
    """Plain torch: dequantize (rounded to x's dtype, as the tiles do), multiply in float32."""
    p = packed.to(torch.int32).reshape(packed.shape[0], -1, group // 2)
    q = torch.stack([p & 0xF, p >> 4], dim=2).reshape(packed.shape[0], -1).float()  # [N, K]
    s = sz[..., 0].float().t().repeat_interleave(group, dim=1)  # [N, K]
    z = sz[..., 1].float().t().repeat_interleave(group, dim=1)
    w = ((q - 8.0) * s + z).to(x.dtype)
    return (x.float() @ w.float().t()).to(out_dtype or x.dtype)


# GEMV candidates: (BLOCK_N, groups per step, warps, stages). Groups per step x group = weights per step.
_GEMV = [(8, 4, 4, 3), (8, 8, 4, 3), (16, 4, 4, 3), (16, 8, 8, 3), (4, 16, 4, 3), (32, 4, 8, 3)]


def gemv_configs(group: int) -> list[dict]:
    """The GEMV's candidate tiles for a group size (a step covers 512-2048 weights of a row)."""
    out = []
    for bn, gps, warps, stages in _GEMV:
        gps = max(1, gps * 128 // group)  # the same bytes per step for every group size
        out.append(dict(BLOCK_N=bn, GPS=gps, num_warps=warps, num_stages=stages))
    return out


def _tile(bm, bn, warps, stages):
    return dict(BLOCK_M=bm, BLOCK_N=bn, GROUP_N=8, num_warps=warps, num_stages=stages)


# (BLOCK_N, warps, stages) for up to 64 rows; (BLOCK_M, BLOCK_N, warps, stages) beyond. A K step is one group.
_DECODE = [(32, 4, 4), (64, 4, 4), (128, 4, 3), (64, 4, 3)]
_WIDE = [(64, 4, 4), (128, 4, 3), (128, 8, 3)]
_PREFILL = [(128, 128, 4, 4), (128, 256, 8, 3), (64, 128, 4, 4), (128, 64, 4, 4), (256, 128, 8, 3)]


def tile_configs(bucket: int) -> list[dict]:
    """Tensor-core tiles for one row bucket."""
    if bucket <= 16:
        return [_tile(16, *c) for c in _DECODE]
    if bucket <= 64:
        return [_tile(bucket, *c) for c in _WIDE]
    return [_tile(*c) for c in _PREFILL]


if triton is not None:

    @triton.jit
    def _dequant(nibble, s, z):
        """nibble (int32, 0..15) -> (nibble - 8) * s + z in float32: 0x4B000000 | q is the float 2^23 + q."""
        return ((nibble | 0x4B000000).to(tl.float32, bitcast=True) - 8388616.0) * s + z

    @triton.jit
    def _row_dot(acc, q_ptr, sz_ptr, x_lo, x_hi, g_ok, EVEN: tl.constexpr):
        """acc [BLOCK_N, GPS, GROUP / 2] plus one K step of its rows: both nibbles of each byte times their
        activations (x_lo, x_hi [GPS, GROUP / 2]); scales and zeros [BLOCK_N, GPS].

        A nibble q placed in the top mantissa bits of 1.0 is the float v = 1 + q / 16, so the weight
        (q - 8) * s + z is one FMA, v * 16s + (z - 24s), with 16s and z - 24s formed once per row and group:
        no convert instruction and no per-weight subtract."""
        if EVEN:
            b = tl.load(q_ptr).to(tl.int32)
            s = tl.load(sz_ptr).to(tl.float32)
            z = tl.load(sz_ptr + 1).to(tl.float32)
        else:
            b = tl.load(q_ptr, mask=g_ok[None, :, None], other=0).to(tl.int32)
            s = tl.load(sz_ptr, mask=g_ok[None, :], other=0.0).to(tl.float32)
            z = tl.load(sz_ptr + 1, mask=g_ok[None, :], other=0.0).to(tl.float32)
        s16 = (16.0 * s)[:, :, None]
        c = (z - 24.0 * s)[:, :, None]
        lo = (((b << 19) & 0x780000) | 0x3F800000).to(tl.float32, bitcast=True)
        hi = (((b << 15) & 0x780000) | 0x3F800000).to(tl.float32, bitcast=True)
        acc = acc + (lo * s16 + c) * x_lo[None]
        acc = acc + (hi * s16 + c) * x_hi[None]
        return acc

    @triton.jit
    def _int4_gemv_kernel(X, Q, SZ, Y, N, K, stride_qn, GROUP: tl.constexpr, GATED: tl.constexpr,
                          EVEN: tl.constexpr, BLOCK_N: tl.constexpr, GPS: tl.constexpr, STAGES: tl.constexpr):
        """GPS groups a step: [BLOCK_N, GPS, GROUP / 2] bytes, activations [GPS, GROUP / 2] (two-dimensional
        loads, so the pipeliner streams them with the weights instead of one scalar load per element)."""
        HB: tl.constexpr = GROUP // 2
        rn, n_ok, rows, sz_ptr, up_sz_ptr, sz_step = group_gemv_rows(SZ, N, GATED, BLOCK_N, GPS)
        gi = tl.arange(0, GPS)
        rb = tl.arange(0, HB)
        # Pointers of the first step, advanced per step.
        q_ptr, up_ptr = group_gemv_weights(Q, rows, N, stride_qn, GPS, HB)  # [BLOCK_N, GPS, HB]
        x_ptr = X + gi[:, None] * GROUP + rb[None, :]  # [GPS, HB]: the low nibbles' columns; + HB: the high ones'
        acc = tl.zeros([BLOCK_N, GPS, HB], dtype=tl.float32)
        acc_up = tl.zeros([BLOCK_N, GPS, HB], dtype=tl.float32)
        for k in tl.range(0, K, GPS * GROUP, num_stages=STAGES):
            g_ok = (k // GROUP + gi) < K // GROUP  # [GPS]
            if EVEN:
                x_lo = tl.load(x_ptr).to(tl.float32)
                x_hi = tl.load(x_ptr + HB).to(tl.float32)
            else:
                x_lo = tl.load(x_ptr, mask=g_ok[:, None], other=0.0).to(tl.float32)
                x_hi = tl.load(x_ptr + HB, mask=g_ok[:, None], other=0.0).to(tl.float32)
            acc = _row_dot(acc, q_ptr, sz_ptr, x_lo, x_hi, g_ok, EVEN)
            if GATED:
                acc_up = _row_dot(acc_up, up_ptr, up_sz_ptr, x_lo, x_hi, g_ok, EVEN)
                up_ptr += GPS * HB
                up_sz_ptr += sz_step
            q_ptr += GPS * HB
            sz_ptr += sz_step
            x_ptr += GPS * GROUP
        group_gemv_store(Y, rn, n_ok, tl.sum(tl.sum(acc, axis=2), axis=1), tl.sum(tl.sum(acc_up, axis=2), axis=1),
                         GATED)

    _DEQUANT_BF16 = tl.constexpr(int4_ptx.dequant("bf16"))
    _DEQUANT_FP16 = tl.constexpr(int4_ptx.dequant("f16"))

    @triton.jit
    def _tile_weights(b, s, z, like, ASM: tl.constexpr):
        """Bytes [BLOCK_N, HB] and their rows' scale and zero ([BLOCK_N, 1], in the activation dtype) -> the low
        and the high nibbles' weights in `like`'s dtype. ASM (CUDA, bf16/fp16): two weights an instruction,
        rounded once from the exact (q - 8) * s + z (`int4_ptx.dequant`); otherwise float32 math, rounded."""
        if ASM:
            s = tl.broadcast_to(s, b.shape)
            z = tl.broadcast_to(z, b.shape)
            if like.dtype == tl.bfloat16:
                lo, hi = tl.inline_asm_elementwise(_DEQUANT_BF16, "=r,=r,=r,=r,r,r,r,r,r", [b, s, z],
                                                   dtype=(tl.bfloat16, tl.bfloat16), is_pure=True, pack=4)
            else:
                lo, hi = tl.inline_asm_elementwise(_DEQUANT_FP16, "=r,=r,=r,=r,r,r,r,r,r", [b, s, z],
                                                   dtype=(tl.float16, tl.float16), is_pure=True, pack=4)
        else:
            bi = b.to(tl.int32)
            sf, zf = s.to(tl.float32), z.to(tl.float32)
            lo = _dequant(bi & 0xF, sf, zf).to(like.dtype)
            hi = _dequant(bi >> 4, sf, zf).to(like.dtype)
        return lo, hi

    @triton.jit
    def _int4_mm_kernel(X, Q, SZ, Y, M, N, K, stride_xm, stride_qn, stride_ym, M_BUCKET, GROUP: tl.constexpr,
                        ASM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_N: tl.constexpr):
        HB: tl.constexpr = GROUP // 2
        pid_m, pid_n = tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_N)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rows = rn % N
        m_ok = rm < M
        q_ptr = Q + rows.to(tl.int64)[:, None] * stride_qn + tl.arange(0, HB)[None, :]  # [BLOCK_N, HB]
        x_ptr = X + rm.to(tl.int64)[None, :] * stride_xm + tl.arange(0, HB)[:, None]  # x^T [HB, BLOCK_M]
        sz_ptr = SZ + rows.to(tl.int64) * 2
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        for k in range(0, K, GROUP):  # one group a step (K is a multiple of GROUP)
            b = tl.load(q_ptr)
            g_off = (k // GROUP) * N * 2  # < 2^31 for any real shape (448 groups x 128256 rows x 2)
            s = tl.load(sz_ptr + g_off)[:, None]
            z = tl.load(sz_ptr + g_off + 1)[:, None]
            x_lo = tl.load(x_ptr, mask=m_ok[None, :], other=0.0)
            x_hi = tl.load(x_ptr + HB, mask=m_ok[None, :], other=0.0)
            lo, hi = _tile_weights(b, s, z, x_lo, ASM)
            acc = tl.dot(lo, x_lo, acc)
            acc = tl.dot(hi, x_hi, acc)
            q_ptr += HB
            x_ptr += GROUP
        y_ptr = Y + rm.to(tl.int64)[None, :] * stride_ym + rn[:, None]
        tl.store(y_ptr, acc.to(Y.dtype.element_ty), mask=(rn < N)[:, None] & m_ok[None, :])

    _int4_gemv_tuned = group_gemv_tuner(_int4_gemv_kernel, gemv_configs)
    _int4_gemv_gated_tuned = group_gemv_tuner(_int4_gemv_kernel, gemv_configs)  # its own choices: twice the rows

    def _mm_prune(configs, named_args, **kwargs):
        return [triton.Config({k: v for k, v in c.items() if not k.startswith("num_")}, num_warps=c["num_warps"],
                              num_stages=c["num_stages"])
                for c in tile_configs(m_bucket(named_args["M"]))]

    _int4_mm_tuned = triton.autotune(
        configs=[triton.Config({"BLOCK_M": 16}), triton.Config({"BLOCK_M": 64})],  # placeholders: see _mm_prune
        key=["M_BUCKET", "N", "K", "GROUP"],
        prune_configs_by={"early_config_prune": _mm_prune},
        do_bench=short_bench,
        cache_results=True,
    )(_int4_mm_kernel)


def _check(x, packed, sz, group):
    m, k = x.shape
    n = packed.shape[0]
    if (packed.shape != (n, k // 2) or packed.dtype != torch.uint8 or k % group or sz.shape != (k // group, n, 2)
            or x.stride(1) != 1 or not packed.is_contiguous() or not sz.is_contiguous()):
        raise ValueError(f"int4_matmul: x {tuple(x.shape)} stride {x.stride()}, packed {tuple(packed.shape)} "
                         f"{packed.dtype}, sz {tuple(sz.shape)}, group {group}")


def int4_gemv(x, packed, sz, group: int, *, config: dict | None = None, out_dtype=None, gated: bool = False):
    """One row of x. gated: packed [2N, K/2] holds a gated MLP's gate rows then its up rows; returns
    silu(x @ gate.T) * (x @ up.T), [1, N]. `config` (tests): an entry of `gemv_configs(group)`."""
    if triton is None:
        raise RuntimeError("int4_gemv needs triton")
    _check(x, packed, sz, group)
    m, k = x.shape
    if m != GEMV_MAX_M:
        raise ValueError(f"int4_gemv takes {GEMV_MAX_M} row, got {m}")
    n = packed.shape[0] // 2 if gated else packed.shape[0]
    if gated and packed.shape[0] % 2:
        raise ValueError(f"gated int4_gemv takes an even row count, got {packed.shape[0]}")
    y = torch.empty(1, n, dtype=out_dtype or x.dtype, device=x.device)
    args = (x, packed, sz, y, n, k, packed.stride(0))
    if config is not None:
        even = (k // group) % config["GPS"] == 0
        _int4_gemv_kernel[(triton.cdiv(n, config["BLOCK_N"]),)](
            *args, GROUP=group, GATED=gated, EVEN=even, BLOCK_N=config["BLOCK_N"], GPS=config["GPS"],
            STAGES=config["num_stages"], num_warps=config["num_warps"])
    else:
        tuned = _int4_gemv_gated_tuned if gated else _int4_gemv_tuned
        tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, GROUP=group, GATED=gated)
    return y


def int4_matmul(x, packed, sz, group: int, *, config: dict | None = None, out_dtype=None, pairs: bool = False):
    """y [M, N] = x [M, K] @ dequant(packed, sz).T in `out_dtype` (default x's). `config` (tests): an entry of
    `tile_configs` (more than one row) or `gemv_configs` (one row). `pairs`: the tiles dequantize two weights
    an instruction by inline PTX (`int4_ptx.dequant`; the engine's default, see quantization/int4.py)."""
    if triton is None:
        raise RuntimeError("int4_matmul needs triton")
    _check(x, packed, sz, group)
    m, k = x.shape
    n = packed.shape[0]
    if m == GEMV_MAX_M and (config is None or "GPS" in config):
        return int4_gemv(x, packed, sz, group, config=config, out_dtype=out_dtype)
    y = torch.empty(m, n, dtype=out_dtype or x.dtype, device=x.device)
    if m == 0:
        return y
    args = (x, packed, sz, y, m, n, k, x.stride(0), packed.stride(0), y.stride(0), m_bucket(m))

    # The packed-pair dequantization needs scales and zeros in the activations' 16-bit dtype, on CUDA.
    asm = pairs and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and sz.dtype == x.dtype

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    if config is not None:
        _int4_mm_kernel[grid](*args, GROUP=group, ASM=asm, **config)
    else:
        _int4_mm_tuned[grid](*args, GROUP=group, ASM=asm)
    return y
