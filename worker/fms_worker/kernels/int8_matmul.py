"""Weight-only int8 matmul: y = (x @ q.T) * scale (+ bias), one scale per output channel.

    x [M, K] bf16/fp16, q [N, K] int8 (row-major), scale [N], bias [N], y [M, N] in x's dtype
    (or float32: the accumulator unrounded, for LM-head logits)

PyTorch's CUDA `_weight_int8pack_mm` runs one thread per output element, far
slower than a bf16 GEMM. Here each program streams int8 weight tiles through
shared memory, upcasts them in registers inside the K loop and multiplies on
tensor cores with float32 accumulation; the scale (and bias) is applied once
at the end. The weight is the dot's left operand, so Hopper's wgmma takes the
upcast tile straight from registers.

- Decode (M <= 64) is bound by reading the weight: tiles are narrow along N so
  that a batch of one still spreads over the SMs. Where N alone gives too few
  programs, K is split too: each split writes float32 partials and a second
  small kernel sums them in a fixed order (no atomics, so runs reproduce bit
  for bit) and applies scale and bias.
- Prefill is compute bound: large tensor-core tiles.

Tiles (and the K split) are autotuned on the first call per (M bucket, N, K,
dtypes), timing the split's sum kernel too; the engine makes those first calls
at start-up (`LinearMethod.warm_up`). With a persistent Triton cache the choices
survive restarts.

The one-row GEMV also runs on unquantized 16-bit weights (`gemv16`, no scales):
bf16 decode at batch 1 (layers/quant_method.py; FMS_BF16_GEMV=0 turns it off).
"""

from __future__ import annotations

import functools
import os

import torch

from fms_worker.kernels.tuning import (GEMV_MAX_M, GEMV_PREFETCH, l2_prefetch_rows, m_bucket, pdl_done, pdl_launch,
                                      pdl_wait, short_bench, tile_ids)

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None


def int8_matmul_ref(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None):
    """Plain torch reference, in float32 until the final cast."""
    y = (x.float() @ q.float().t()) * scale.float()
    if bias is not None:
        y = y + bias.float()
    return y.to(x.dtype)


def _cfg(bm, bn, bk, warps, stages):
    return dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_N=8, num_warps=warps, num_stages=stages)


# Decode tiles are narrow in N (many programs) and deep in K and stages (many weight bytes in flight);
# one warp per 16 weight rows on mma.sync, or a warpgroup per 64 rows on wgmma.
_DECODE = [(16, 256, 1, 4), (32, 256, 2, 4), (64, 128, 4, 4), (64, 256, 4, 3)]
_DECODE_WIDE = [(32, 128, 2, 4), (64, 128, 4, 4), (128, 128, 4, 3), (128, 128, 8, 4)]
_PREFILL = [
    _cfg(128, 128, 64, 4, 4), _cfg(256, 128, 64, 8, 3), _cfg(128, 256, 64, 8, 3), _cfg(128, 128, 128, 8, 3),
    _cfg(128, 64, 64, 4, 4), _cfg(64, 128, 128, 4, 4), _cfg(64, 64, 128, 4, 4),
]


def configs_for(bucket: int) -> list[dict]:
    """The candidate tiles of one M bucket (see `m_bucket`), before any K split."""
    if bucket <= 16:
        return [_cfg(16, *t) for t in _DECODE]
    if bucket <= 64:
        return [_cfg(bucket, *t) for t in _DECODE_WIDE]
    return list(_PREFILL)


def split_k_for(cfg: dict, m: int, n: int, k: int, sm_count: int) -> int:
    """K splits (a power of two) that bring a decode tile to ~8 warps an SM, each split keeping >= 4 K steps."""
    if m > 64:
        return 1
    warps = -(-m // cfg["BLOCK_M"]) * -(-n // cfg["BLOCK_N"]) * cfg["num_warps"]
    split = 1
    while warps * split < 8 * sm_count and k // (2 * split) >= 4 * cfg["BLOCK_K"] and split < 16:
        split *= 2
    return split


def candidates(m: int, n: int, k: int, sm_count: int) -> list[dict]:
    """What the autotuner times for this shape: each tile unsplit and, where it helps fill the GPU, split."""
    out = []
    for cfg in configs_for(m_bucket(m)):
        out.append(dict(cfg, SPLIT_K=1))
        split = split_k_for(cfg, m, n, k, sm_count)
        if split > 1:
            out.append(dict(cfg, SPLIT_K=split))
    return out


@functools.cache
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 132  # CPU tensors (the Triton interpreter): pretend to be an H100


if triton is not None:

    @triton.jit
    def _upcast(w, dtype: tl.constexpr):
        """int8 -> dtype, exactly. Triton lowers int8 -> bf16 with bit tricks but int8 -> fp16 with a slow
        convert instruction each, so fp16 builds the value itself: bits 0x6480 + q are 1152 + q."""
        if dtype == tl.float16:
            return (w.to(tl.int16) + 0x6480).to(tl.float16, bitcast=True) - 1152.0
        else:
            return w.to(dtype)

    @triton.jit
    def _int8_mm_kernel(
        X, Q, S, B, Y, P,
        M, N, K,
        stride_xm, stride_qn, stride_ym,
        M_BUCKET,  # only an autotuning key
        SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_N: tl.constexpr,
    ):
        split = tl.program_id(1)
        pid_m, pid_n = tile_ids(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_N)

        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rk = tl.arange(0, BLOCK_K)
        n_ok = rn < N
        m_ok = rm < M
        if SPLIT_K == 1:
            k_lo = 0
            k_hi = K
        else:
            per_split = tl.cdiv(tl.cdiv(K, BLOCK_K), SPLIT_K) * BLOCK_K
            k_lo = split * per_split
            k_hi = tl.minimum(k_lo + per_split, K)

        # Rows past N read row n % N (always valid) and are dropped at the store; rows past M are masked
        # so a batch of 1 does not read 15 padding rows of x.
        q_ptr = Q + (rn % N).to(tl.int64)[:, None] * stride_qn + (k_lo + rk)[None, :]
        x_ptr = X + rm.to(tl.int64)[None, :] * stride_xm + (k_lo + rk)[:, None]  # x^T tile [BLOCK_K, BLOCK_M]
        acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
        for k in range(k_lo, k_hi, BLOCK_K):
            if EVEN_K:
                w = tl.load(q_ptr)
                xt = tl.load(x_ptr, mask=m_ok[None, :], other=0.0)
            else:
                k_ok = k + rk < K
                w = tl.load(q_ptr, mask=k_ok[None, :], other=0)
                xt = tl.load(x_ptr, mask=m_ok[None, :] & k_ok[:, None], other=0.0)
            acc = tl.dot(_upcast(w, xt.dtype), xt, acc)
            q_ptr += BLOCK_K
            x_ptr += BLOCK_K
        mask = n_ok[:, None] & m_ok[None, :]
        if SPLIT_K == 1:
            out = acc * tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)[:, None]
            if HAS_BIAS:
                out += tl.load(B + rn, mask=n_ok, other=0.0).to(tl.float32)[:, None]
            y_ptr = Y + rm.to(tl.int64)[None, :] * stride_ym + rn[:, None]
            tl.store(y_ptr, out.to(Y.dtype.element_ty), mask=mask)
        else:
            p_ptr = P + (split * M + rm).to(tl.int64)[None, :] * N + rn[:, None]
            tl.store(p_ptr, acc, mask=mask)

    @triton.jit
    def _split_k_sum_kernel(P, S, B, Y, M, N, stride_ym,
                            SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < N
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for s in tl.static_range(SPLIT_K):  # fixed order: reproducible sums
            acc += tl.load(P + (s * M + row).to(tl.int64) * N + cols, mask=ok, other=0.0)
        acc = acc * tl.load(S + cols, mask=ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(B + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(Y + row.to(tl.int64) * stride_ym + cols, acc.to(Y.dtype.element_ty), mask=ok)

    def _sum_splits(args: dict) -> None:
        split = args["SPLIT_K"]
        if split > 1:
            m, n, block = args["M"], args["N"], 512
            _split_k_sum_kernel[(m, triton.cdiv(n, block))](
                args["P"], args["S"], args["B"], args["Y"], m, n, args["stride_ym"],
                SPLIT_K=split, HAS_BIAS=args["HAS_BIAS"], BLOCK=block)

    def _prune(configs, named_args, **kwargs):
        a = named_args
        return [triton.Config({k: v for k, v in c.items() if not k.startswith("num_")},
                              num_warps=c["num_warps"], num_stages=c["num_stages"])
                for c in candidates(a["M"], a["N"], a["K"], _sm_count(a["X"].device))]

    _int8_mm = triton.heuristics({"EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})(_int8_mm_kernel)
    _int8_mm_tuned = triton.autotune(
        # Placeholders: `_prune` hands out the shape's own `candidates` (the list needs two entries to tune).
        configs=[triton.Config({"BLOCK_M": 16}), triton.Config({"BLOCK_M": 64})],
        key=["M_BUCKET", "N", "K"],
        prune_configs_by={"early_config_prune": _prune},
        post_hook=lambda args, exception: exception is None and _sum_splits(args),  # time the split's sum too
        do_bench=short_bench,
        cache_results=True,  # kept in the Triton cache dir, so later starts skip the timing
    )(_int8_mm)


# (BLOCK_N, BLOCK_K, warps, stages): a program reads BLOCK_N weight rows in BLOCK_K-byte strips, `stages` strips
# in flight. Swept on H200 over 92 tiles, stage counts and K splits (8B shapes): these won; K splits never did.
_GEMV = [(8, 512, 4, 3), (16, 512, 4, 3), (16, 512, 8, 3), (8, 1024, 4, 3), (4, 512, 4, 3), (8, 256, 4, 4)]

# The byte-permute conversions (MAGIC 2 and 3, see `_int8_to_f32`) are among the GEMV's candidates: faster than the
# magic add on every 8B shape on H200, int8 batch 1 +4.7% with them (docs/benchmarks.md, quantization).
# FMS_INT8_PERMUTE=0 leaves them out.
PERMUTE = os.environ.get("FMS_INT8_PERMUTE", "1") != "0"

# int8 -> float32 for four weights of one 32-bit word ($4) -> $0..$3: flip the sign bits (q + 128, unsigned), let a
# byte permute put each byte under the exponent of 2^23 (the float 2^23 + q + 128), subtract 2^23 + 128: exact.
# Two instructions a weight and a quarter, against the magic add's sign extension, add and subtract.
BYTES_TO_F32_PTX = "\n".join([
    "{",
    ".reg .b32 u, k;",
    "xor.b32 u, $4, 0x80808080;",
    "mov.b32 k, 0x4B000000;",
    *(f"prmt.b32 ${i}, u, k, 0x744{i};" for i in range(4)),
    *(f"sub.f32 ${i}, ${i}, 0f4B000080;" for i in range(4)),
    "}",
])

# The same without the subtract: each byte goes to bits 8-15 under the exponent of 2^15, the float OFFSET + q with
# OFFSET = 2^15 + 128, and the GEMV takes OFFSET * sum(x) off each row's sum once instead (MAGIC 3): a permute a
# weight and a quarter. Not exact: the running sums carry OFFSET * x, so float32 keeps fewer bits of the q * x part
# (0.5-1.5e-4 relative on CPU at K ~1,000, against 1-2e-7 exact): below a bf16 output's rounding, not for float32
# outputs (docs/benchmarks.md).
OFFSET = 32896.0
BYTES_TO_OFFSET_F32_PTX = "\n".join([
    "{",
    ".reg .b32 u, k;",
    "xor.b32 u, $4, 0x80808080;",
    "mov.b32 k, 0x47000000;",
    *(f"prmt.b32 ${i}, u, k, 0x74{i}4;" for i in range(4)),
    "}",
])


def gemv_configs(permute: bool | None = None) -> list[dict]:
    """The GEMV's candidate tiles, each with each int8 -> float32 conversion (see `_int8_to_f32`): the convert
    instruction (MAGIC 0), the magic add (1) and, where `permute` (default: FMS_INT8_PERMUTE), the byte permutes
    (2 exact, 3 offset)."""
    modes = (0, 1, 2, 3) if (PERMUTE if permute is None else permute) else (0, 1)
    return [dict(BLOCK_N=bn, BLOCK_K=bk, num_warps=w, num_stages=st, MAGIC=magic)
            for magic in modes for bn, bk, w, st in _GEMV]


def gemv16_configs() -> list[dict]:
    """The GEMV's candidate tiles for 16-bit weights (their conversion to float32 is exact and cheap)."""
    return [c for c in gemv_configs() if not c["MAGIC"]]


if triton is not None:

    _BYTES_TO_F32 = tl.constexpr(BYTES_TO_F32_PTX)
    _BYTES_TO_OFFSET_F32 = tl.constexpr(BYTES_TO_OFFSET_F32_PTX)
    _OFFSET = tl.constexpr(OFFSET)

    @triton.jit
    def _int8_to_f32(w, MAGIC: tl.constexpr, ASM: tl.constexpr):
        """int8 -> float32, exactly. The plain convert (MAGIC 0) is an I2F instruction, which Hopper issues at
        a quarter of the FP32 rate: at ~3.4e12 weights/s a GEMV nears that limit. MAGIC 1 builds the float
        instead: the bits 0x4B000080 + q are the float 2^23 + 128 + q (integer add, then one float subtract).
        MAGIC 2 builds the same float with a byte permute (BYTES_TO_F32_PTX, four weights an instance; off
        CUDA, where inline PTX cannot run, MAGIC 1's arithmetic). MAGIC 3 returns OFFSET + q, not q
        (BYTES_TO_OFFSET_F32_PTX; the caller takes OFFSET * sum(x) off)."""
        if MAGIC == 0:
            return w.to(tl.float32)
        elif MAGIC == 3:
            if ASM:
                return tl.inline_asm_elementwise(_BYTES_TO_OFFSET_F32, "=r,=r,=r,=r,r", [w], dtype=tl.float32,
                                                 is_pure=True, pack=4)
            else:
                return w.to(tl.float32) + _OFFSET  # exact: small integers
        elif MAGIC == 2 and ASM:
            return tl.inline_asm_elementwise(_BYTES_TO_F32, "=r,=r,=r,=r,r", [w], dtype=tl.float32, is_pure=True,
                                             pack=4)
        else:
            return (w.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0

    @triton.jit
    def _int8_gemv_kernel(X, Q, S, B, Y, N, K, stride_qn, HAS_BIAS: tl.constexpr, EVEN_K: tl.constexpr,
                          GATED: tl.constexpr, MAGIC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                          STAGES: tl.constexpr, SCALED: tl.constexpr = True, ASM: tl.constexpr = True,
                          USE_PDL: tl.constexpr = 0, PREFETCH: tl.constexpr = 0):
        """Decode at batch 1, bound by reading the weight once: each program owns BLOCK_N output channels and
        keeps per-lane float32 partial sums [BLOCK_N, BLOCK_K] over the K loop (no tensor-core layouts, one
        cross-lane reduction at the end). The loop is software-pipelined (STAGES strips of the weight in
        flight), which took it from ~2.1 to 2.4-3.5 TB/s on H200 (8B shapes).

        GATED: q is a gated MLP's [2N, K] gate-up weight; each program also reads the up rows n + N and
        writes silu(gate) * up [N] (no [2N] intermediate, no activation kernel).

        SCALED=False: q holds 16-bit weights themselves (`gemv16`); S is not read. USE_PDL: tuning.PDL_MODES.
        PREFETCH (with PDL): bytes of each of the program's rows to ask L2 for before the wait (tuning.GEMV_PREFETCH)."""
        pid = tl.program_id(0)
        rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        if PREFETCH and USE_PDL:  # the weights never depend on the kernel before
            row_bytes = stride_qn * Q.dtype.element_ty.primitive_bitwidth // 8
            l2_prefetch_rows(Q, (rn % N).to(tl.int64), row_bytes, PREFETCH)
            if GATED:
                l2_prefetch_rows(Q, ((rn % N) + N).to(tl.int64), row_bytes, PREFETCH)
        pdl_wait(USE_PDL)
        rk = tl.arange(0, BLOCK_K)
        n_ok = rn < N
        q_ptr = Q + (rn % N).to(tl.int64)[:, None] * stride_qn + rk[None, :]  # rows past N: dropped at the store
        up_ptr = Q + ((rn % N) + N).to(tl.int64)[:, None] * stride_qn + rk[None, :]  # read only when GATED
        x_ptr = X + rk
        acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        acc_up = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
        x_sum = tl.zeros([BLOCK_K], dtype=tl.float32)  # MAGIC 3: the weights come as OFFSET + q
        for k in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            if EVEN_K:
                w = tl.load(q_ptr)
                xs = tl.load(x_ptr)
                if GATED:
                    w_up = tl.load(up_ptr)
            else:
                k_ok = k + rk < K
                w = tl.load(q_ptr, mask=k_ok[None, :], other=0)
                xs = tl.load(x_ptr, mask=k_ok, other=0.0)
                if GATED:
                    w_up = tl.load(up_ptr, mask=k_ok[None, :], other=0)
            xf = xs.to(tl.float32)[None, :]
            if MAGIC == 3:
                x_sum += xs.to(tl.float32)
            acc += _int8_to_f32(w, MAGIC, ASM) * xf
            if GATED:
                acc_up += _int8_to_f32(w_up, MAGIC, ASM) * xf
                up_ptr += BLOCK_K
            q_ptr += BLOCK_K
            x_ptr += BLOCK_K
        out = tl.sum(acc, axis=1)
        if MAGIC == 3:
            offset_x = _OFFSET * tl.sum(x_sum, axis=0)
            out -= offset_x
        if SCALED:
            out *= tl.load(S + rn, mask=n_ok, other=0.0).to(tl.float32)
        if HAS_BIAS:
            out += tl.load(B + rn, mask=n_ok, other=0.0).to(tl.float32)
        if GATED:
            up = tl.sum(acc_up, axis=1)
            if MAGIC == 3:
                up -= offset_x
            if SCALED:
                up *= tl.load(S + N + rn, mask=n_ok, other=0.0).to(tl.float32)
            out = out / (1.0 + tl.exp(-out)) * up
        tl.store(Y + rn, out.to(Y.dtype.element_ty), mask=n_ok)
        pdl_done(USE_PDL)

    _int8_gemv = triton.heuristics({"EVEN_K": lambda a: a["K"] % a["BLOCK_K"] == 0})(_int8_gemv_kernel)

    def _gemv_tuner(configs):
        return triton.autotune(
            configs=[triton.Config({"BLOCK_N": c["BLOCK_N"], "BLOCK_K": c["BLOCK_K"], "STAGES": c["num_stages"],
                                    "MAGIC": c["MAGIC"]}, num_warps=c["num_warps"]) for c in configs],
            key=["N", "K"],
            do_bench=short_bench,
            cache_results=True,
        )(_int8_gemv)

    _int8_gemv_tuned = _gemv_tuner(gemv_configs())
    _int8_gemv_gated_tuned = _gemv_tuner(gemv_configs())  # its own choices: a program reads twice the rows
    # float32 out (LM-head logits, kept unrounded) without MAGIC 3, whose offset costs float32 bits
    _int8_gemv_f32_tuned = _gemv_tuner([c for c in gemv_configs() if c["MAGIC"] != 3])
    _gemv16_tuned = _gemv_tuner(gemv16_configs())
    _gemv16_gated_tuned = _gemv_tuner(gemv16_configs())


def int8_gemv(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, *,
              config: dict | None = None, out_dtype: torch.dtype | None = None, gated: bool = False) -> torch.Tensor:
    """`int8_matmul` for one row of x (decode at batch 1). `config` (tests): an entry of `gemv_configs`.

    gated: q [2N, K] holds a gated MLP's gate rows then its up rows; returns silu(x q_gate.T) * (x q_up.T),
    [1, N], each product scaled by its rows' scales first (bias not allowed)."""
    m, k = x.shape
    n = q.shape[0] // 2 if gated else q.shape[0]
    if m != GEMV_MAX_M:
        raise ValueError(f"int8_gemv takes {GEMV_MAX_M} row, got {m}")
    if gated and (bias is not None or q.shape[0] % 2):
        raise ValueError(f"gated int8_gemv takes an even row count and no bias, got {tuple(q.shape)}")
    y = torch.empty(m, n, dtype=out_dtype or x.dtype, device=x.device)
    args = (x, q, scale, bias if bias is not None else scale, y, n, k, q.stride(0))
    tuned = (_int8_gemv_gated_tuned if gated else
             _int8_gemv_f32_tuned if y.dtype == torch.float32 else _int8_gemv_tuned)
    _run_gemv(args, n, dict(HAS_BIAS=bias is not None, GATED=gated, ASM=x.is_cuda, **_gemv_pdl(x)), config, tuned)
    return y


def _gemv_pdl(x: torch.Tensor) -> dict:
    """The GEMV's launch arguments for programmatic dependent launch, with its L2 prefetch where that is on."""
    launch = pdl_launch(x)
    return {**launch, "PREFETCH": GEMV_PREFETCH if launch["USE_PDL"] else 0}


def _run_gemv(args: tuple, n: int, fixed: dict, config: dict | None, tuned) -> None:
    """Launch the GEMV over N output rows: with `config` (tests) as given, otherwise through the autotuner `tuned`."""
    if config is not None:
        _int8_gemv[(triton.cdiv(n, config["BLOCK_N"]),)](*args, **fixed, BLOCK_N=config["BLOCK_N"],
                                                        BLOCK_K=config["BLOCK_K"], STAGES=config["num_stages"],
                                                        MAGIC=config.get("MAGIC", False), num_warps=config["num_warps"])
    else:
        tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **fixed)


def gemv16_supported(x: torch.Tensor, w: torch.Tensor) -> bool:
    """One CUDA row of bf16/fp16 activations against a contiguous weight of the same dtype."""
    return (triton is not None and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and w.dtype == x.dtype
            and x.numel() == x.shape[-1] and x.is_contiguous() and w.dim() == 2 and w.is_contiguous())


def gemv16(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, *, config: dict | None = None,
           gated: bool = False, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """y [1, N] = x [1, K] @ w.T (+ bias) for 16-bit weights w [N, K], by the int8 GEMV without scales; gated: w
    [2N, K] holds gate then up rows and y = silu(gate) * up (no bias). `config` (tests): a `gemv16_configs` entry.
    `out_dtype` float32 keeps the accumulator unrounded (the LM head's logits)."""
    m, k = x.shape
    n = w.shape[0] // 2 if gated else w.shape[0]
    if m != GEMV_MAX_M or w.shape[1] != k or (gated and (bias is not None or w.shape[0] % 2)):
        raise ValueError(f"gemv16: x {tuple(x.shape)}, w {tuple(w.shape)}, gated {gated}, bias {bias is not None}")
    y = torch.empty(1, n, dtype=out_dtype or x.dtype, device=x.device)
    args = (x, w, w, bias if bias is not None else w, y, n, k, w.stride(0))
    _run_gemv(args, n, dict(HAS_BIAS=bias is not None, GATED=gated, SCALED=False, **_gemv_pdl(x)), config,
              _gemv16_gated_tuned if gated else _gemv16_tuned)
    return y


def int8_matmul(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, *,
                config: dict | None = None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """y [M, N] = (x [M, K] @ q [N, K].T) * scale [N] (+ bias [N]) in `out_dtype` (default x's: bf16 or fp16;
    float32 keeps the accumulator unrounded).

    `config` (tests) skips the autotuner: an entry of `configs_for`, optionally with SPLIT_K.
    float32 x runs too (as TF32 on GPU); it is there for the Triton interpreter, which mishandles bf16 dots.
    """
    if triton is None:
        raise RuntimeError("int8_matmul needs triton")
    m, k = x.shape
    n = q.shape[0]
    if q.shape != (n, k) or q.dtype != torch.int8 or scale.shape != (n,) or x.stride(1) != 1 or q.stride(1) != 1:
        raise ValueError(f"int8_matmul: x {tuple(x.shape)} stride {x.stride()}, q {tuple(q.shape)} {q.dtype}, "
                         f"scale {tuple(scale.shape)}")
    if m == GEMV_MAX_M and config is None:
        return int8_gemv(x, q, scale, bias, out_dtype=out_dtype)
    y = torch.empty(m, n, dtype=out_dtype or x.dtype, device=x.device)
    if m == 0:
        return y
    if config is not None:
        config = dict(config)
        max_split = config.setdefault("SPLIT_K", 1)
    else:
        max_split = max(c["SPLIT_K"] for c in candidates(m, n, k, _sm_count(x.device)))
    part = torch.empty(max_split, m, n, dtype=torch.float32, device=x.device) if max_split > 1 else y
    args = (x, q, scale, bias if bias is not None else scale, y, part, m, n, k,
            x.stride(0), q.stride(0), y.stride(0), m_bucket(m))

    def grid(meta):
        return triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]), meta["SPLIT_K"]

    if config is not None:
        _int8_mm[grid](*args, HAS_BIAS=bias is not None, **config)
        split = config["SPLIT_K"]
    else:
        _int8_mm_tuned[grid](*args, HAS_BIAS=bias is not None)
        split = _int8_mm_tuned.best_config.kwargs["SPLIT_K"]
    _sum_splits(dict(SPLIT_K=split, M=m, N=n, P=part, S=scale, B=args[3], Y=y, stride_ym=y.stride(0),
                     HAS_BIAS=bias is not None))
    return y
