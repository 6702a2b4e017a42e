"""Rotary embedding and the KV-cache write of one attention layer, as one kernel.

The unfused GPU path runs, per layer, the compiled rotary (two kernels) and
two `index_copy_` launches (K, then V). At decode batch sizes each moves a
few kilobytes and costs its launch and latency: on the 8B shape at batch 1
those four were ~250 us of a 3.6 ms int8 decode step (H200 profile in
docs/benchmarks.md). Here one program per token rotates the token's query
heads in place, and rotates its key heads and writes them, with its value
heads, into the token's cache slot.

    q [T, H, D], k [T, Hkv, D], v [T, Hkv, D]   views with a contiguous last dim (the fused QKV output)
    k_cache, v_cache [S, Hkv, D]                 slots [T], positions [T]
    cos, sin [P, D]                              rotate-half layout: both halves of a row are equal

Numerics follow the compiled path: cos and sin rounded to the model dtype,
arithmetic in float32, one rounding at the store. An fp8 cache stores the
rotated key (rounded to the model dtype first, as the unfused path does)
divided by the layer's scale and clamped to e4m3's range.
"""

from __future__ import annotations

import torch

from fms_worker.quantization.fp8 import FP8, FP8_MAX
from fms_worker.quantization.kv_fp8 import write_kv

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None


def rope_cache_ref(q, k, v, k_cache, v_cache, slots, positions, cos, sin, k_scale=1.0, v_scale=1.0):
    """Plain torch, the same contract (q rotated in place; k and v written to their slots by write_kv, as the
    unfused path writes them)."""
    c = cos[positions, : cos.shape[1] // 2].unsqueeze(1).to(q.dtype).float()  # [T, 1, D/2]
    s = sin[positions, : sin.shape[1] // 2].unsqueeze(1).to(q.dtype).float()

    def rotate(x):
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)

    q.copy_(rotate(q))
    write_kv(k_cache, slots, rotate(k), k_scale)
    write_kv(v_cache, slots, v, v_scale)


def supported(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    """Whether the kernel takes this layer: CUDA (or the interpreter's CPU tensors), an even head dim, a
    cache of the model dtype or fp8."""
    d = q.shape[-1]
    return (triton is not None and d % 2 == 0
            and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
            and k_cache.dtype in (q.dtype, FP8))


if triton is not None:

    @triton.jit
    def _rotate(ptr, mask, c, s, HALF: tl.constexpr):
        x1 = tl.load(ptr, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(ptr + HALF, mask=mask, other=0.0).to(tl.float32)
        return x1 * c - x2 * s, x2 * c + x1 * s

    @triton.jit
    def as_stored(x, scale, dtype: tl.constexpr, model_dtype: tl.constexpr, FP8_CACHE: tl.constexpr,
                  FP8_MAX: tl.constexpr):
        """float32 x as a cache of `dtype` stores it: rounded to the model dtype, and for fp8 divided by the
        layer's scale and clamped to e4m3's range (kernels/paged_attention.py stores decode tokens with it too)."""
        if FP8_CACHE:
            x = x.to(model_dtype).to(tl.float32) / scale
            return tl.clamp(x, -FP8_MAX, FP8_MAX).to(dtype)
        else:
            return x.to(dtype)

    @triton.jit
    def _rope_cache_kernel(
        Q, K, V, KC, VC, POS, SLOT, COS, SIN,
        stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh,
        stride_ks, stride_kch, stride_vs, stride_vch, stride_p,
        k_scale, v_scale,
        H: tl.constexpr, HKV: tl.constexpr, HALF: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, FP8_CACHE: tl.constexpr, FP8_MAX: tl.constexpr,
    ):
        t = tl.program_id(0).to(tl.int64)
        pos = tl.load(POS + t).to(tl.int64)
        slot = tl.load(SLOT + t).to(tl.int64)
        dt = Q.dtype.element_ty
        rd = tl.arange(0, BLOCK_D)
        d_ok = rd < HALF
        c = tl.load(COS + pos * stride_p + rd, mask=d_ok, other=0.0).to(dt).to(tl.float32)[None, :]
        s = tl.load(SIN + pos * stride_p + rd, mask=d_ok, other=0.0).to(dt).to(tl.float32)[None, :]
        rh = tl.arange(0, BLOCK_H)[:, None]
        col = rd[None, :]

        q_ok = (rh < H) & d_ok[None, :]
        q_ptr = Q + t * stride_qt + rh * stride_qh + col
        q1, q2 = _rotate(q_ptr, q_ok, c, s, HALF)
        tl.store(q_ptr, q1.to(dt), mask=q_ok)
        tl.store(q_ptr + HALF, q2.to(dt), mask=q_ok)

        kv_ok = (rh < HKV) & d_ok[None, :]
        k1, k2 = _rotate(K + t * stride_kt + rh * stride_kh + col, kv_ok, c, s, HALF)
        kc_ptr = KC + slot * stride_ks + rh * stride_kch + col
        kc_dt = KC.dtype.element_ty
        tl.store(kc_ptr, as_stored(k1, k_scale, kc_dt, dt, FP8_CACHE, FP8_MAX), mask=kv_ok)
        tl.store(kc_ptr + HALF, as_stored(k2, k_scale, kc_dt, dt, FP8_CACHE, FP8_MAX), mask=kv_ok)

        v_ptr = V + t * stride_vt + rh * stride_vh + col
        vc_ptr = VC + slot * stride_vs + rh * stride_vch + col
        vc_dt = VC.dtype.element_ty
        for half in tl.static_range(2):
            x = tl.load(v_ptr + half * HALF, mask=kv_ok, other=0.0).to(tl.float32)
            tl.store(vc_ptr + half * HALF, as_stored(x, v_scale, vc_dt, dt, FP8_CACHE, FP8_MAX), mask=kv_ok)


def rope_cache(q, k, v, k_cache, v_cache, slots, positions, cos, sin, k_scale: float = 1.0,
               v_scale: float = 1.0) -> None:
    """Rotate q [T, H, D] in place; write rotated k and v [T, Hkv, D] into k_cache/v_cache [S, Hkv, D] at slots."""
    t, h, d = q.shape
    hkv = k.shape[1]
    if t == 0:
        return
    if q.stride(2) != 1 or k.stride(2) != 1 or v.stride(2) != 1 or k_cache.stride(2) != 1 or v_cache.stride(2) != 1:
        raise ValueError("rope_cache needs a contiguous head dim in q, k, v and the caches")
    if cos.shape[1] != d or cos.stride(1) != 1 or sin.stride() != cos.stride():
        raise ValueError(f"rope_cache: cos/sin {tuple(cos.shape)} do not match head dim {d}")
    half = d // 2
    block_h = triton.next_power_of_2(max(h, hkv))
    _rope_cache_kernel[(t,)](
        q, k, v, k_cache, v_cache, positions, slots, cos, sin,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
        k_cache.stride(0), k_cache.stride(1), v_cache.stride(0), v_cache.stride(1), cos.stride(0),
        float(k_scale), float(v_scale),
        H=h, HKV=hkv, HALF=half, BLOCK_H=block_h, BLOCK_D=triton.next_power_of_2(half),
        FP8_CACHE=k_cache.dtype == FP8, FP8_MAX=FP8_MAX, num_warps=4 if block_h * half >= 2048 else 2,
    )
