"""All-reduce, residual add and RMSNorm in one kernel, over symmetric memory (decode steps under TP).

After each row-parallel projection a tensor-parallel decoder layer sums the
ranks' partial outputs, adds the residual and normalizes the sum for the next
projection. Done separately, that is a one-shot all-reduce kernel and a
compiled add+norm kernel, 64 pairs a step for an 8B model, each a few
microseconds at batch 1. Here one program per group of rows:

1. copies this rank's partial rows into its symmetric buffer;
2. signals the same program on every peer and waits for each peer's signal
   (a put/consume flag per program and peer in the buffer's signal pad,
   released and acquired at system scope, so the copies are visible);
3. reads the rows from every rank's buffer over NVLink, sums them in float32
   in rank order (every rank computes the same sum, so residual streams stay
   equal), then rounds, adds and normalizes as `layers/fused._add_rms_norm`
   does after an all-reduce.

A rank may start its next call while a slower peer still reads this call's
rows, so calls alternate between two halves of the buffer (`parity`): the
attention's reduction uses one, the MLP's the other. By the time a rank writes
a half again, every peer has signalled in the call between, which it does
only after finishing the call that read that half.

`push` (the default for two and four ranks, parallel/reduce_norm.py): step 1 writes this rank's rows
into its slot of every rank's half instead, and step 3 reads them all from the
rank's own buffer, which trades the reads over NVLink for posted writes.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fms_worker.kernels.tuning import pdl_done, pdl_launch, pdl_wait

MAX_PROGRAMS = tl.constexpr(128)  # signal slots: 2 halves x MAX_PROGRAMS x world; torch's default pad holds 2,304


@triton.jit
def _reduce_add_norm(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, buf_ptrs, sig_ptrs,
                     rank, rows, hidden, half_elems, slot_elems, eps, programs,
                     PARITY: tl.constexpr, WORLD: tl.constexpr, WORLD_P2: tl.constexpr, ITERS: tl.constexpr,
                     PUSH: tl.constexpr, BLOCK: tl.constexpr, USE_PDL: tl.constexpr = 0):
    pdl_wait(USE_PDL)  # the projection's partial rows are written before any peer is told so
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < hidden
    dtype = x_ptr.dtype.element_ty
    half = PARITY * half_elems
    own = tl.multiple_of(tl.load(buf_ptrs + rank).to(tl.pointer_type(dtype)) + half, 16)
    for i in tl.static_range(ITERS):  # rows pid, pid + programs, ...
        row = pid + i * programs
        m = mask & (row < rows)
        xr = tl.load(x_ptr + row * hidden + cols, mask=m)
        if PUSH:  # into this rank's slot of every rank's half: the reads below stay local
            for q in tl.static_range(WORLD):
                base = tl.load(buf_ptrs + q).to(tl.pointer_type(dtype))
                dst = tl.multiple_of(base + half + rank * slot_elems, 16)
                tl.store(dst + row * hidden + cols, xr, mask=m)
        else:
            tl.store(own + row * hidden + cols, xr, mask=m)
    tl.debug_barrier()
    # Flags: slot (parity, program, sender) of each receiver's pad. All peers at once, one thread each.
    peers = tl.arange(0, WORLD_P2)
    is_peer = peers < WORLD
    slots = (PARITY * MAX_PROGRAMS + pid) * WORLD
    pads = tl.load(sig_ptrs + peers, mask=is_peer, other=0).to(tl.pointer_type(tl.int32))
    tl.atomic_xchg(pads + slots + rank, 1, mask=is_peer, sem="release", scope="sys")  # put mine in theirs
    mine = tl.load(sig_ptrs + rank).to(tl.pointer_type(tl.int32)) + slots + peers
    ready = 0
    while ready == 0:  # until every peer's flag is in mine
        seen = tl.atomic_add(mine, 0, mask=is_peer, sem="acquire", scope="sys")
        ready = tl.min(tl.where(is_peer, seen, 1))
    tl.store(mine, 0, mask=is_peer)  # consumed; no peer sets it again before this rank's next call signals
    tl.debug_barrier()
    w = tl.load(w_ptr + cols, mask=mask)
    for i in tl.static_range(ITERS):
        row = pid + i * programs
        m = mask & (row < rows)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for q in tl.static_range(WORLD):
            if PUSH:  # rank q's rows, which it wrote into this rank's buffer
                src = own + q * slot_elems
            else:  # rank q's rows in its own buffer, over NVLink
                src = tl.multiple_of(tl.load(buf_ptrs + q).to(tl.pointer_type(dtype)) + half, 16)
            acc += tl.load(src + row * hidden + cols, mask=m, other=0.0, cache_modifier=".cg").to(tl.float32)
        res = tl.load(res_ptr + row * hidden + cols, mask=m, other=0.0)
        # the all-reduce's rounding, then x + residual rounded as torch adds them
        r = (acc.to(dtype).to(tl.float32) + res.to(tl.float32)).to(dtype)
        h = r.to(tl.float32)
        inv = 1.0 / tl.sqrt(tl.sum(h * h, axis=0) / hidden + eps)
        normed = (h * inv).to(dtype)
        tl.store(res_out_ptr + row * hidden + cols, r, mask=m)
        tl.store(out_ptr + row * hidden + cols, (w.to(tl.float32) * normed.to(tl.float32)).to(dtype), mask=m)
    pdl_done(USE_PDL)


def grid_size(rows: int) -> int:
    return min(rows, MAX_PROGRAMS.value)


def slot_size(half_elems: int, world: int, push: bool) -> int:
    """Elements a rank's rows may take: the half, or (push) its world-th part, 16-byte aligned."""
    return (half_elems // world) // 64 * 64 if push else half_elems


def reduce_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
                        buf_ptrs: torch.Tensor, sig_ptrs: torch.Tensor, rank: int, world: int,
                        half_elems: int, parity: int, push: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(normed, new residual) of sum over ranks of x, plus residual. x, residual: [rows, hidden], contiguous.
    buf_ptrs / sig_ptrs: int64 tensors of every rank's buffer and signal-pad addresses (on x's device);
    each buffer holds two halves of `half_elems` elements of x's dtype. push: each rank writes its rows into
    every rank's half (one slot per rank) and reads only its own buffer, instead of reading the peers'."""
    rows, hidden = x.shape
    slot = slot_size(half_elems, world, push)
    if rows * hidden > slot:
        raise ValueError(f"{rows} x {hidden} values exceed the buffer {'slot' if push else 'half'} of {slot}")
    out, res_out = torch.empty_like(x), torch.empty_like(residual)
    if rows == 0:
        return out, res_out
    block = triton.next_power_of_2(hidden)
    grid = grid_size(rows)
    _reduce_add_norm[(grid,)](x, residual, weight, out, res_out, buf_ptrs, sig_ptrs, rank, rows, hidden,
                              half_elems, slot, eps, grid, PARITY=parity, WORLD=world,
                              WORLD_P2=triton.next_power_of_2(world), ITERS=triton.cdiv(rows, grid), PUSH=push,
                              BLOCK=block, num_warps=max(1, min(16, block // 256)), **pdl_launch(x, grid))
    return out, res_out
