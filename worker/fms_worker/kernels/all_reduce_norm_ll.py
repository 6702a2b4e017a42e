"""The fused all-reduce + add + RMSNorm with flags inside the data (experiment: FMS_FUSED_NORM=ll).

The push variant (kernels/all_reduce_norm.py) writes a rank's rows into every
peer's buffer, then fences at system scope and sets a flag per peer, and the
peer polls that flag before reading: the fence waits for the writes to land over
NVLink, and the flag costs another crossing. Here every 8-byte word a rank
sends carries 4 bytes of its rows (one float32, or two 16-bit values) and 4
bytes of an epoch, written with one strong store, so a word is whole or absent:
the receiver polls the words themselves until each shows this call's epoch, with
no fence and no separate flag (the low-latency protocol NCCL's LL uses for
small messages). Words are twice the rows' bytes, so a slot holds half the
rows of a push slot.

Each program keeps its own epoch counter per parity in device memory (`epochs`,
zeros at first, like the buffer): every rank makes the same calls with the same
rows, so the counters agree without talking, and a slot's stale words (an
earlier epoch) are never mistaken for this call's. Halves alternate by parity
as in the other variants, which is what keeps a fast rank from overwriting
words a slow peer has not read: it writes a half again only after the peer's
words of the call between have reached it.

The sums run in rank order in float32 and round as the other variants do, so
the residual is the same bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fms_worker.kernels.all_reduce_norm import MAX_PROGRAMS, grid_size
from fms_worker.kernels.tuning import pdl_done, pdl_launch, pdl_wait

_PUT = tl.constexpr("{ .reg .pred p; setp.ne.b32 p, $3, 0; @p st.relaxed.sys.global.b64 [$1], $2; mov.b32 $0, 0; }")


@triton.jit
def _put(ptrs, words, ok, ASM: tl.constexpr):
    """One strong 8-byte store a word (on GPUs; the interpreter has no inline PTX and runs programs one by one)."""
    if ASM:
        tl.inline_asm_elementwise(_PUT, "=r,l,l,r", [ptrs, words, ok.to(tl.int32)], dtype=tl.int32, is_pure=False,
                                  pack=1)
    else:
        tl.store(ptrs, words, mask=ok)


@triton.jit
def _halves(words, dtype: tl.constexpr, PAIRS: tl.constexpr):
    """float32 (low, high) of 32-bit data words: two 16-bit values each (PAIRS), or one float32 (high unused)."""
    if PAIRS:
        lo = words.to(tl.int16).to(dtype, bitcast=True).to(tl.float32)
        hi = (words >> 16).to(tl.int16).to(dtype, bitcast=True).to(tl.float32)
        return lo, hi
    else:
        return words.to(tl.float32, bitcast=True), tl.zeros_like(words).to(tl.float32)


@triton.jit
def _pack(lo, hi, dtype: tl.constexpr, PAIRS: tl.constexpr):
    """32-bit data words of float32 (low, high), rounded to `dtype`."""
    if PAIRS:
        lo_bits = lo.to(dtype).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        hi_bits = hi.to(dtype).to(tl.int16, bitcast=True).to(tl.int32) << 16
        return lo_bits | hi_bits
    else:
        return lo.to(tl.int32, bitcast=True)


@triton.jit
def _round(v, dtype: tl.constexpr):
    return v.to(dtype).to(tl.float32)


@triton.jit
def _reduce_add_norm_ll(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, buf_ptrs, epochs,
                        rank, rows, words, half_words, slot_words, eps, hidden, programs,
                        DTYPE: tl.constexpr, PAIRS: tl.constexpr, PARITY: tl.constexpr, WORLD: tl.constexpr,
                        WORLD_P2: tl.constexpr, ITERS: tl.constexpr, BLOCK: tl.constexpr, ASM: tl.constexpr,
                        USE_PDL: tl.constexpr = 0):
    """x, residual, weight, out, res_out: 32-bit data words ([rows, words] each, `words` a row). buf_ptrs: every
    rank's buffer as 8-byte words; epochs: this rank's counters, [2, MAX_PROGRAMS] int32."""
    pdl_wait(USE_PDL)
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < words
    counter = epochs + PARITY * MAX_PROGRAMS + pid
    epoch = tl.load(counter) + 1
    tag = epoch.to(tl.int64) << 32
    half = PARITY * half_words
    for i in tl.static_range(ITERS):  # rows pid, pid + programs, ...: into this rank's slot of every rank's half
        row = pid + i * programs
        m = mask & (row < rows)
        data = tl.load(x_ptr + row * words + cols, mask=m, other=0)
        sent = tag | data.to(tl.uint32, bitcast=True).to(tl.int64)  # zero-extended
        for q in tl.static_range(WORLD):
            base = tl.load(buf_ptrs + q).to(tl.pointer_type(tl.int64))
            _put(base + half + rank * slot_words + row * words + cols, sent, m, ASM)
    own = tl.load(buf_ptrs + rank).to(tl.pointer_type(tl.int64)) + half
    w_lo, w_hi = _halves(tl.load(w_ptr + cols, mask=mask, other=0), DTYPE, PAIRS)
    ranks = tl.arange(0, WORLD_P2)[:, None]
    for i in tl.static_range(ITERS):
        row = pid + i * programs
        m = (ranks < WORLD) & (mask & (row < rows))[None, :]
        # every rank's words of this row at once (their loads in flight together), again until all carry this epoch
        src = own + ranks * slot_words + row * words + cols[None, :]
        got = tl.load(src, mask=m, other=0, volatile=True)
        while tl.min(tl.where(m, (got >> 32).to(tl.int32) == epoch, True).to(tl.int32)) == 0:
            got = tl.load(src, mask=m, other=0, volatile=True)
        lo, hi = _halves(got.to(tl.int32), DTYPE, PAIRS)
        acc_lo = tl.zeros([BLOCK], dtype=tl.float32)
        acc_hi = tl.zeros([BLOCK], dtype=tl.float32)
        for q in tl.static_range(WORLD):  # in rank order; the other ranks' entries add zeros
            acc_lo += tl.sum(tl.where(ranks == q, lo, 0.0), axis=0)
            acc_hi += tl.sum(tl.where(ranks == q, hi, 0.0), axis=0)
        m = mask & (row < rows)
        r_lo, r_hi = _halves(tl.load(res_ptr + row * words + cols, mask=m, other=0), DTYPE, PAIRS)
        # the all-reduce's rounding, then x + residual rounded as torch adds them
        h_lo = _round(_round(acc_lo, DTYPE) + r_lo, DTYPE)
        h_hi = _round(_round(acc_hi, DTYPE) + r_hi, DTYPE)
        inv = 1.0 / tl.sqrt((tl.sum(h_lo * h_lo, axis=0) + tl.sum(h_hi * h_hi, axis=0)) / hidden + eps)
        tl.store(res_out_ptr + row * words + cols, _pack(h_lo, h_hi, DTYPE, PAIRS), mask=m)
        out = _pack(w_lo * _round(h_lo * inv, DTYPE), w_hi * _round(h_hi * inv, DTYPE), DTYPE, PAIRS)
        tl.store(out_ptr + row * words + cols, out, mask=m)
    tl.store(counter, epoch)
    pdl_done(USE_PDL)


_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def slot_words(half_elems: int, world: int, itemsize: int) -> int:
    """8-byte words of one rank's slot in a half of `half_elems` values of `itemsize` bytes."""
    return half_elems * itemsize // 8 // world


def capacity(half_elems: int, world: int, itemsize: int) -> int:
    """Values of one call that fit a slot: each 8-byte word carries 4 bytes of them."""
    return slot_words(half_elems, world, itemsize) * 4 // itemsize


def reduce_add_rms_norm_ll(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                           buf_ptrs: torch.Tensor, epochs: torch.Tensor, rank: int, world: int, half_elems: int,
                           parity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(normed, new residual) of sum over ranks of x, plus residual, as `all_reduce_norm.reduce_add_rms_norm`.
    buf_ptrs: every rank's buffer address (two halves of `half_elems` values of x's dtype each, zeroed before
    first use, like `epochs`: int32 [2 * MAX_PROGRAMS] on x's device)."""
    rows, hidden = x.shape
    size = x.element_size()
    if x.dtype not in _DTYPES or hidden * size % 4:
        raise ValueError(f"the LL all-reduce + norm takes float32, bf16 or fp16 rows of whole 4-byte words, "
                         f"got {x.dtype} x {hidden}")
    if rows * hidden > capacity(half_elems, world, size):
        raise ValueError(f"{rows} x {hidden} values exceed the buffer slot of {capacity(half_elems, world, size)}")
    out, res_out = torch.empty_like(x), torch.empty_like(residual)
    if rows == 0:
        return out, res_out
    words = hidden * size // 4
    block = triton.next_power_of_2(words)
    grid = grid_size(rows)
    as_words = [t.view(torch.int32) for t in (x, residual, weight, out, res_out)]
    _reduce_add_norm_ll[(grid,)](*as_words, buf_ptrs, epochs, rank, rows, words, half_elems * size // 8,
                                 slot_words(half_elems, world, size), eps, hidden, grid,
                                 DTYPE=_DTYPES[x.dtype], PAIRS=size == 2, PARITY=parity, WORLD=world,
                                 WORLD_P2=triton.next_power_of_2(world), ITERS=triton.cdiv(rows, grid), BLOCK=block,
                                 ASM=x.is_cuda, num_warps=max(1, min(16, block // 128)), **pdl_launch(x, grid))
    return out, res_out
