"""Attention over a paged KV cache, one kernel for prefill, chunked prefill and decode.

Every sequence in the batch contributes `q_len` new query tokens (1 for decode)
whose keys and values are already written into the cache; the first
`seq_len - q_len` keys are its context (earlier chunks or prefix-cache hits).
A query at absolute position p attends to keys 0..p (causal).

Layouts:
    q, out        [num_tokens, num_heads, head_dim]       tokens of all sequences, packed
    k_cache/v_cache [num_blocks, block_size, num_kv_heads, head_dim]
    block_tables  [num_seqs, max_blocks_per_seq] int32
    seq_lens      [num_seqs] int32    keys per sequence, new tokens included
    query_start   [num_seqs + 1] int32 cumulative q_len

The Triton kernel packs the query heads that share a KV head into one tile
(rows = query positions x group), so each KV page is read once per KV head.
For small batches it splits each sequence's keys over several programs
(flash-decoding) and merges the partial softmaxes in a second kernel, so a
batch-1 decode still fills the GPU. The softmax runs in base 2; a cache's scales
(fp8: stored = value / scale) act once, on the scores' scale and on the output,
not on every key and value; an fp8 (e4m3) cache's dots run in fp16, to which
e4m3 converts exactly.

A decode step (one new token per sequence) may also hand the kernel its new
token unrotated (`NewTokens`): each program then rotates its query heads and the
new key in registers, the program whose key split holds the last position
writes the key and value into the cache, and the new key joins the softmax from
registers, not from the cache. That replaces kernels/rope_cache.py's launch per
layer at decode with the same numbers: cos and sin rounded to the model dtype,
float32 arithmetic, the key rounded (and for an fp8 cache scaled and clamped) as
stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fms_worker.kernels.tuning import pdl_done, pdl_launch, pdl_wait
from fms_worker.quantization.fp8 import FP8_MAX

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None


def paged_attention_ref(q, k_cache, v_cache, block_tables, seq_lens, query_start, scale):
    """Plain torch reference: gathers each sequence's keys and runs causal SDPA math in float32."""
    out = torch.empty_like(q)
    num_heads, num_kv = q.shape[1], k_cache.shape[2]
    group = num_heads // num_kv
    bs = k_cache.shape[1]
    for i in range(seq_lens.numel()):
        s, e = int(query_start[i]), int(query_start[i + 1])
        n = int(seq_lens[i])
        pages = block_tables[i, : (n + bs - 1) // bs].long()
        k = k_cache[pages].reshape(-1, num_kv, k_cache.shape[-1])[:n]  # [n, kv, D]
        v = v_cache[pages].reshape(-1, num_kv, v_cache.shape[-1])[:n]
        k = k.repeat_interleave(group, dim=1).float()
        v = v.repeat_interleave(group, dim=1).float()
        qi = q[s:e].float()  # [m, H, D]
        scores = torch.einsum("mhd,nhd->hmn", qi, k) * scale
        qpos = torch.arange(n - (e - s), n, device=q.device)
        mask = torch.arange(n, device=q.device)[None, :] <= qpos[:, None]  # [m, n]
        scores = scores.masked_fill(~mask[None], float("-inf"))
        out[s:e] = torch.einsum("hmn,nhd->mhd", scores.softmax(-1), v).to(q.dtype)
    return out


@dataclass
class NewTokens:
    """A decode step's new token per sequence, before the rotary embedding, for the kernel to rotate and store.

    k, v [T, Hkv, D] views with a contiguous last dim (the fused QKV output); slots [T]; cos, sin [P, D] in the
    rotate-half layout (both halves of a row equal). A token's position is its sequence's length before it
    (seq_lens - 1), as the runner's decode inputs have it, so the kernel reads no positions: one dependent load
    fewer ahead of its key loop."""

    k: torch.Tensor
    v: torch.Tensor
    slots: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


if triton is not None:
    from fms_worker.kernels.rope_cache import as_stored

    @triton.jit
    def _rotate_half(x, partner, lower, cs, sn):
        """float32 rotate-half rotary of rows x [.., D], given each element's partner (d +- D/2) and whether d
        lies in the lower half."""
        return tl.where(lower, x * cs - partner * sn, x * cs + partner * sn)

    @triton.jit
    def _paged_attn_kernel(
        Q, K, V, O, LSE,
        block_tables, seq_lens, query_start,
        scale, k_scale, v_scale,
        stride_qt, stride_qh, stride_ot, stride_oh, stride_os,
        stride_kb, stride_ks, stride_kh, stride_vb, stride_vs, stride_vh,
        stride_bt, stride_lt, stride_lh,
        KN, VN, SLOT, COS, SIN, stride_knt, stride_knh, stride_vnt, stride_vnh, stride_p,
        GROUP: tl.constexpr, PAGE: tl.constexpr, HEAD_DIM: tl.constexpr, FP8_CACHE: tl.constexpr,
        BLOCK_Q: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NUM_SPLITS: tl.constexpr,
        NEW_KV: tl.constexpr = False, FP8_MAX: tl.constexpr = 448.0, USE_PDL: tl.constexpr = 0,
    ):
        pdl_wait(USE_PDL)  # first: a program that returns early has waited too
        LN2: tl.constexpr = 0.6931471805599453
        qk_scale = scale * k_scale * 1.4426950408889634  # scores in base 2: exp2 instead of exp
        seq = tl.program_id(0)
        qblk = tl.program_id(1)
        kvh = tl.program_id(2) // NUM_SPLITS
        split = tl.program_id(2) % NUM_SPLITS
        q_start = tl.load(query_start + seq)
        q_len = tl.load(query_start + seq + 1) - q_start
        if qblk * BLOCK_Q >= q_len:
            return
        seq_len = tl.load(seq_lens + seq)
        ctx = seq_len - q_len

        rows = tl.arange(0, BLOCK_M)
        q_pos = qblk * BLOCK_Q + rows // GROUP  # position within this sequence's new tokens
        head = kvh * GROUP + rows % GROUP
        row_ok = (q_pos < q_len) & (rows < BLOCK_Q * GROUP)
        abs_pos = ctx + q_pos
        d = tl.arange(0, HEAD_DIM)
        q_ptr = Q + (q_start + q_pos)[:, None] * stride_qt + head[:, None] * stride_qh
        q = tl.load(q_ptr + d[None, :], mask=row_ok[:, None], other=0.0)
        if NEW_KV:  # decode: rotate q and the new key here (rotate-half: d pairs with d +- HEAD_DIM / 2)
            HALF: tl.constexpr = HEAD_DIM // 2
            dt = Q.dtype.element_ty
            pos = (seq_len - 1).to(tl.int64)  # a decode token's position: the keys before it
            partner = ((d + HALF) % HEAD_DIM)[None, :]
            lower = (d < HALF)[None, :]
            # the new key and value: loaded first, used after the key loop (which their latency overlaps)
            k_ptr = KN + q_start * stride_knt + kvh * stride_knh
            kf = tl.load(k_ptr + d[None, :])
            kp = tl.load(k_ptr + partner)
            vf = tl.load(VN + q_start * stride_vnt + kvh * stride_vnh + d[None, :])
            slot_new = tl.load(SLOT + q_start).to(tl.int64)
            qp = tl.load(q_ptr + partner, mask=row_ok[:, None], other=0.0).to(tl.float32)
            cs = tl.load(COS + pos * stride_p + d % HALF).to(dt).to(tl.float32)[None, :]
            sn = tl.load(SIN + pos * stride_p + d % HALF).to(dt).to(tl.float32)[None, :]
            q = _rotate_half(q.to(tl.float32), qp, lower, cs, sn).to(dt)
        if FP8_CACHE:  # the dots run in fp16, to which e4m3 converts exactly in one instruction a pair
            q = tl.clamp(q.to(tl.float32), -65504.0, 65504.0).to(tl.float16)

        kv_end = tl.minimum(seq_len, ctx + (qblk + 1) * BLOCK_Q)
        seg = tl.cdiv(tl.cdiv(kv_end, NUM_SPLITS), BLOCK_N) * BLOCK_N
        lo = split * seg
        hi = tl.minimum(lo + seg, kv_end)
        if NEW_KV:  # the new key (position seq_len - 1) joins from registers, after the loop over the cache
            last = seq_len - 1
            has_new = (lo <= last) & (last < hi)
            hi = tl.minimum(hi, last)

        m_i = tl.full([BLOCK_M], -1e30, tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        offs = tl.arange(0, BLOCK_N)
        for start in range(lo, hi, BLOCK_N):
            n = start + offs
            n_ok = n < hi
            page = tl.load(block_tables + seq * stride_bt + n // PAGE, mask=n_ok, other=0)
            slot = n % PAGE
            k = tl.load(K + page[:, None] * stride_kb + slot[:, None] * stride_ks + kvh * stride_kh + d[None, :],
                        mask=n_ok[:, None], other=0.0)
            v = tl.load(V + page[:, None] * stride_vb + slot[:, None] * stride_vs + kvh * stride_vh + d[None, :],
                        mask=n_ok[:, None], other=0.0)
            # fp8 -> fp16 is exact; the cache's scales act once, outside the loop (k_scale in qk_scale,
            # v_scale on the output)
            s = tl.dot(q, tl.trans(k.to(q.dtype))) * qk_scale
            ok = (n[None, :] <= abs_pos[:, None]) & n_ok[None, :]
            s = tl.where(ok, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp2(m_i - m_new)
            p = tl.exp2(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype))
            m_i = m_new
        if NEW_KV:  # rotate the new key, store it and the value as the cache holds them (its split's program only)
            k_new = as_stored(_rotate_half(kf.to(tl.float32), kp.to(tl.float32), lower, cs, sn), k_scale,
                              K.dtype.element_ty, dt, FP8_CACHE, FP8_MAX)
            v_new = as_stored(vf.to(tl.float32), v_scale, V.dtype.element_ty, dt, FP8_CACHE, FP8_MAX)
            at = (slot_new // PAGE) * stride_kb + (slot_new % PAGE) * stride_ks + kvh * stride_kh + d[None, :]
            tl.store(K + at, k_new, mask=has_new & (d < HEAD_DIM)[None, :])
            at = (slot_new // PAGE) * stride_vb + (slot_new % PAGE) * stride_vs + kvh * stride_vh + d[None, :]
            tl.store(V + at, v_new, mask=has_new & (d < HEAD_DIM)[None, :])
            s_new = tl.sum(q.to(tl.float32) * k_new.to(tl.float32), 1) * qk_scale
            s_new = tl.where(has_new, s_new, float("-inf"))
            m_new = tl.maximum(m_i, s_new)
            alpha = tl.exp2(m_i - m_new)
            p_new = tl.exp2(s_new - m_new)
            l_i = l_i * alpha + p_new
            acc = acc * alpha[:, None] + p_new.to(q.dtype).to(tl.float32)[:, None] * v_new.to(tl.float32)
            m_i = m_new

        l_safe = tl.where(l_i > 0, l_i, 1.0)
        o = acc * (v_scale / l_safe)[:, None]
        tok = q_start + q_pos
        optr = O + tok[:, None] * stride_ot + head[:, None] * stride_oh + split * stride_os + d[None, :]
        tl.store(optr, o.to(O.dtype.element_ty), mask=row_ok[:, None])
        if NUM_SPLITS > 1:
            lse = tl.where(l_i > 0, (m_i + tl.log2(l_safe)) * LN2, float("-inf"))  # natural log
            tl.store(LSE + tok * stride_lt + head * stride_lh + split, lse, mask=row_ok)
        pdl_done(USE_PDL)

    @triton.jit
    def _merge_splits_kernel(
        PART, LSE, O,
        stride_pt, stride_ph, stride_ps, stride_lt, stride_lh, stride_ot, stride_oh,
        NUM_SPLITS: tl.constexpr, HEAD_DIM: tl.constexpr, USE_PDL: tl.constexpr = 0,
    ):
        pdl_wait(USE_PDL)
        tok = tl.program_id(0)
        head = tl.program_id(1)
        sp = tl.arange(0, NUM_SPLITS)
        d = tl.arange(0, HEAD_DIM)
        lse = tl.load(LSE + tok * stride_lt + head * stride_lh + sp)
        m = tl.max(lse, 0)
        w = tl.exp(lse - m)
        w = w / tl.sum(w, 0)
        part = tl.load(PART + tok * stride_pt + head * stride_ph + sp[:, None] * stride_ps + d[None, :])
        o = tl.sum(part * w[:, None], 0)
        tl.store(O + tok * stride_ot + head * stride_oh + d, o.to(O.dtype.element_ty))
        pdl_done(USE_PDL)


def num_splits_for(num_seqs: int, num_kv_heads: int, max_seq_len: int, sm_count: int = 132) -> int:
    """Enough programs to fill the GPU twice, a power of two, no more than the keys justify."""
    want = max(1, (2 * sm_count) // max(1, num_seqs * num_kv_heads))
    cap = max(1, max_seq_len // 64)  # at least one 64-key tile per split
    return 1 << int(math.log2(max(1, min(want, cap, 32))))


# Key tile, warps and pipeline stages: decode split over keys (small batches), decode one program per sequence and
# KV head (large batches), and prefill. From `bench/attention_gpu.py --sweep` on H200 (docs/benchmarks.md): two
# warps a program took an fp8 cache's 64- and 256-sequence decode from 76.5 / 178.6 us to 48.9 / 115.2 us (bf16
# caches within 2% either way); the split decode's best tile varies with the context, so it keeps 64 keys.
SPLIT_DECODE = dict(BLOCK_N=64, num_warps=4, num_stages=2)
DECODE = dict(BLOCK_N=64, num_warps=2, num_stages=3)
PREFILL = dict(BLOCK_N=64, num_warps=4, num_stages=2)


def config_for(max_q_len: int, num_splits: int) -> dict:
    if max_q_len > 1:
        return PREFILL
    return SPLIT_DECODE if num_splits > 1 else DECODE


def paged_attention(q, k_cache, v_cache, block_tables, seq_lens, query_start, scale, *, max_q_len: int,
                    num_splits: int = 1, k_scale: float = 1.0, v_scale: float = 1.0, out=None,
                    config: dict | None = None, new: NewTokens | None = None):
    """Triton paged attention. `max_q_len` and `num_splits` are host ints (fixed per CUDA graph); `config`
    (benchmarks, tests) replaces `config_for`'s choice of BLOCK_N, num_warps and num_stages. `new` (decode only):
    q and the new tokens are unrotated and not yet in the cache; the kernel rotates and stores them."""
    if new is not None and max_q_len != 1:
        raise ValueError(f"paged_attention rotates and stores new tokens only at decode (max_q_len 1, got {max_q_len})")
    cfg = config or config_for(max_q_len, num_splits)
    num_tokens, num_heads, head_dim = q.shape
    num_kv = k_cache.shape[2]
    group = num_heads // num_kv
    if out is None:
        out = torch.empty_like(q)
    # Decode (max_q_len 1) packs only the group's heads; prefill tiles 16 query positions.
    block_q = max(1, 16 // group) if max_q_len == 1 else 16
    block_m = max(16, triton.next_power_of_2(block_q * group))
    grid = (seq_lens.numel(), triton.cdiv(max_q_len, block_q), num_kv * num_splits)
    if num_splits > 1:
        part = torch.empty(num_tokens, num_heads, num_splits, head_dim, dtype=torch.float32, device=q.device)
        lse = torch.empty(num_tokens, num_heads, num_splits, dtype=torch.float32, device=q.device)
        o, so, lse_t = part, part.stride(2), lse
    else:
        o, so, lse_t = out, 0, out  # LSE unused with one split
    _paged_attn_kernel[grid](
        q, k_cache, v_cache, o, lse_t, block_tables, seq_lens, query_start,
        scale, k_scale, v_scale,
        q.stride(0), q.stride(1), o.stride(0), o.stride(1), so,
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        block_tables.stride(0), lse_t.stride(0) if num_splits > 1 else 0, lse_t.stride(1) if num_splits > 1 else 0,
        *_new_args(new, q),
        GROUP=group, PAGE=k_cache.shape[1], HEAD_DIM=head_dim, FP8_CACHE=k_cache.element_size() == 1,
        BLOCK_Q=block_q, BLOCK_M=block_m, BLOCK_N=cfg["BLOCK_N"], NUM_SPLITS=num_splits,
        NEW_KV=new is not None, FP8_MAX=FP8_MAX, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        **pdl_launch(q, grid[0] * grid[1] * grid[2]),
    )
    if num_splits > 1:
        _merge_splits_kernel[(num_tokens, num_heads)](
            part, lse, out, part.stride(0), part.stride(1), part.stride(2), lse.stride(0), lse.stride(1),
            out.stride(0), out.stride(1), NUM_SPLITS=num_splits, HEAD_DIM=head_dim,
            **pdl_launch(q, num_tokens * num_heads),
        )
    return out


def _new_args(new: NewTokens | None, q: torch.Tensor) -> tuple:
    """The kernel's KN .. stride_p arguments: the new tokens', or placeholders it does not read."""
    if new is None:
        return (q, q, q, q, q, 0, 0, 0, 0, 0)
    k, v, cos = new.k, new.v, new.cos
    if k.stride(2) != 1 or v.stride(2) != 1 or cos.stride(1) != 1 or new.sin.stride() != cos.stride() \
            or cos.shape[1] != q.shape[2] or q.stride(2) != 1:
        raise ValueError("paged_attention: new tokens need a contiguous head dim and cos/sin rows of that size")
    return (k, v, new.slots, cos, new.sin, k.stride(0), k.stride(1), v.stride(0), v.stride(1), cos.stride(0))
