"""Asking L2 for the next matmul's weights while this one finishes (experiment: FMS_L2_PREFETCH_MB).

A decode step at batch 1 reads every weight once, in an order known at load time (qkv, o, gate-up, down, ...,
the LM head, then the first layer's qkv again), and between two matmuls the memory bus idles: the attention,
the norms and each kernel's ramp-up and tail read next to nothing. A GEMV given a `Prefetch` ends each of its
programs by asking L2 for that program's share of the first bytes of the next matmul's weight
(`prefetch.global.L2`, one 128-byte line per lane, no register written), so those bytes come in while the
kernels in between run, and the next GEMV's first loads hit L2.

A `Prefetch` names one region, or two of the same size where the next matmul reads two row ranges at once (a
gated gate-up GEMV reads gate row n with up row n + N): `second` bytes after the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None

LINE = 128  # bytes a prefetch asks for
_PTX = "{ .reg .pred p; setp.ne.b32 p, $2, 0; @p prefetch.global.L2 [$1]; mov.b32 $0, 0; }"


@dataclass(frozen=True)
class Prefetch:
    """The first `nbytes` bytes of `base` (a uint8 view of a weight), and as many from `second` bytes on when
    `second` > 0."""

    base: torch.Tensor
    nbytes: int
    second: int = 0

    @staticmethod
    def of(weight: torch.Tensor, budget: int, halves: bool = False) -> "Prefetch | None":
        """Up to `budget` bytes of a contiguous weight, in the order its one-row GEMV reads it: from the start,
        or (`halves`: a gated weight, gate rows then up rows) from the start of each half. The GEMVs ignore it
        off CUDA."""
        if budget <= 0 or not weight.is_contiguous():
            return None
        flat = weight.view(-1).view(torch.uint8)
        size = flat.numel()
        if halves:
            half = size // 2
            return Prefetch(flat, min(budget // 2, half), half)
        return Prefetch(flat, min(budget, size))


def kernel_args(prefetch: Prefetch | None, fallback: torch.Tensor) -> dict:
    """The GEMV kernels' PF, PF_BYTES, PF_SECOND and PREFETCH for `prefetch` (None: off, PF any valid pointer)."""
    if prefetch is None:
        return dict(PF=fallback, PF_BYTES=0, PF_SECOND=0, PREFETCH=False)
    return dict(PF=prefetch.base, PF_BYTES=prefetch.nbytes, PF_SECOND=prefetch.second, PREFETCH=True)


if triton is not None:
    _ASM = tl.constexpr(_PTX)

    @triton.jit
    def _ask(ptrs, ok):
        tl.inline_asm_elementwise(_ASM, "=r,l,r", [ptrs, ok.to(tl.int32)], dtype=tl.int32, is_pure=False, pack=1)

    @triton.jit
    def l2_prefetch(PF, PF_BYTES, PF_SECOND, LINES: tl.constexpr):
        """This program's share (by program id) of the region(s) `Prefetch` describes, LINES lines a round."""
        share = tl.cdiv(tl.cdiv(PF_BYTES, tl.num_programs(0)), 128) * 128
        start = tl.program_id(0).to(tl.int64) * share
        lines = tl.arange(0, LINES).to(tl.int64) * 128
        for off in tl.range(start, start + share, LINES * 128):
            o = off + lines
            ok = o < PF_BYTES
            _ask(PF + o, ok)
            if PF_SECOND > 0:
                _ask(PF + PF_SECOND + o, ok)
else:
    l2_prefetch = None
