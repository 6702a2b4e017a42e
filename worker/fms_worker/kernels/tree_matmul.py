"""Matmuls whose every output is the same float32 sum however the input dimension is split across ranks.

y = x @ w.T adds K products per output, and in floating point the order of the additions shows in the
result. Split over tensor-parallel ranks, a row-parallel layer's outputs are each rank's partial sum
rounded to the model dtype and then added again, so TP=2 differs from TP=1 by rounding, and greedy
decoding flips wherever two tokens lie that close. In tree mode (`precision.tp_invariant`) every matmul
cuts K into SLICES equal slices, sums each slice in order, BLOCK_K columns at a time, with the same
tensor-core tile on every shape, and adds the slice sums in float32 as a binary tree:

    ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))

A rank of degree d (1, 2, 4 or 8) holds 8/d consecutive slices of a row-parallel layer's input: it
computes the subtree over them, and the d float32 subtotals are added across ranks as the top of the
same tree (`tree_sum`, parallel/comm.tp_tree_sum) before the one rounding. Column-parallel layers split
outputs, not K: each output is the whole tree on every rank. So degrees 1, 2, 4 and 8 add the same
numbers in the same order, and their outputs agree bit for bit; rows do not affect each other either.

GPU: one Triton kernel. CPU: each row and slice through torch.mv in float32, whose result for a row does
not depend on how many rows or output columns share the call (tests/unit/worker/layers/test_tree_matmul.py).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None

SLICES = 8  # the most ranks a row-parallel layer's input can be split over and still match one GPU
# One tile for every shape and row count: the tensor-core instruction, and with it each output's sum, must not
# depend on the matmul's size.
TILE = dict(BLOCK_M=64, BLOCK_N=32, BLOCK_K=64, num_warps=4, num_stages=3)


def check_slices(k: int, slices: int) -> None:
    if slices not in (1, 2, 4, 8) or k % slices:
        raise ValueError(f"tp_invariant splits a matmul's {k} input columns into {slices} equal slices; "
                         f"the tensor degree must be 1, 2, 4 or 8 and divide every layer's input size")


def tree_sum(parts: torch.Tensor) -> torch.Tensor:
    """[n, ...] float32 partial sums (n a power of two, in slice order) -> their binary-tree sum."""
    while parts.shape[0] > 1:
        parts = parts[0::2] + parts[1::2]
    return parts[0]


def tree_matmul_reference(x: torch.Tensor, w: torch.Tensor, slices: int, out_dtype: torch.dtype) -> torch.Tensor:
    """The CPU path: x [M, K] @ w [N, K].T over `slices` slices of K, each summed by torch.mv per row."""
    m, k = x.shape
    check_slices(k, slices)
    if m == 0:
        return x.new_empty(0, w.shape[0], dtype=out_dtype)
    width = k // slices
    xs = x.float().view(m, slices, width)
    ws = w.float().view(w.shape[0], slices, width).transpose(0, 1).contiguous()  # [slices, N, width]
    parts = torch.stack([torch.stack([torch.mv(ws[s], xs[r, s]) for r in range(m)]) for s in range(slices)])
    return tree_sum(parts).to(out_dtype)


if triton is not None:

    @triton.jit
    def _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, start,
                   K_SLICE: tl.constexpr, IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   BLOCK_K: tl.constexpr):
        ks = tl.arange(0, BLOCK_K)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, K_SLICE, BLOCK_K):
            inside = (k + ks) < K_SLICE
            col = start + k + ks
            a = tl.load(X + rows[:, None] * stride_x + col[None, :], mask=(rows[:, None] < M) & inside[None, :],
                        other=0.0)
            b = tl.load(W + cols[None, :] * stride_w + col[:, None], mask=(cols[None, :] < N) & inside[:, None],
                        other=0.0)
            if IEEE:
                acc = tl.dot(a, b, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, b, acc)
        return acc

    @triton.jit
    def _tree_mm_kernel(X, W, Y, M, N, stride_x, stride_w, stride_y,
                        K_SLICE: tl.constexpr, SLICES_HERE: tl.constexpr, IEEE: tl.constexpr,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
        cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        s = _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, 0, K_SLICE, IEEE, BLOCK_M, BLOCK_N, BLOCK_K)
        if SLICES_HERE >= 2:
            s = s + _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, K_SLICE, K_SLICE, IEEE,
                               BLOCK_M, BLOCK_N, BLOCK_K)
        if SLICES_HERE >= 4:
            s2 = _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, 2 * K_SLICE, K_SLICE, IEEE,
                            BLOCK_M, BLOCK_N, BLOCK_K)
            s3 = _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, 3 * K_SLICE, K_SLICE, IEEE,
                            BLOCK_M, BLOCK_N, BLOCK_K)
            s = s + (s2 + s3)
        if SLICES_HERE >= 8:
            s4 = _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, 4 * K_SLICE, K_SLICE, IEEE,
                            BLOCK_M, BLOCK_N, BLOCK_K)
            s5 = _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, 5 * K_SLICE, K_SLICE, IEEE,
                            BLOCK_M, BLOCK_N, BLOCK_K)
            s6 = _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, 6 * K_SLICE, K_SLICE, IEEE,
                            BLOCK_M, BLOCK_N, BLOCK_K)
            s7 = _slice_sum(X, W, rows, cols, M, N, stride_x, stride_w, 7 * K_SLICE, K_SLICE, IEEE,
                            BLOCK_M, BLOCK_N, BLOCK_K)
            s = s + ((s4 + s5) + (s6 + s7))
        tl.store(Y + rows[:, None] * stride_y + cols[None, :], s.to(Y.dtype.element_ty),
                 mask=(rows[:, None] < M) & (cols[None, :] < N))


def tree_matmul(x: torch.Tensor, w: torch.Tensor, slices: int = SLICES,
                out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """x [..., K] @ w [N, K].T -> [..., N] in `out_dtype` (default x's), K summed as `slices` slices of a tree.

    A row-parallel rank passes its share of the slices (SLICES / degree) and float32, for `tree_sum`."""
    flat = x.reshape(-1, x.shape[-1])
    run = triton_tree_matmul if x.is_cuda else tree_matmul_reference
    return run(flat, w, slices, out_dtype or x.dtype).reshape(*x.shape[:-1], -1)


def triton_tree_matmul(x: torch.Tensor, w: torch.Tensor, slices: int, out_dtype: torch.dtype) -> torch.Tensor:
    """The kernel on x [M, K]: every tile the same (TILE), one program per 64 rows x 32 outputs."""
    m, k = x.shape
    check_slices(k, slices)
    x, w = x.contiguous(), w.contiguous()
    y = torch.empty(m, w.shape[0], dtype=out_dtype, device=x.device)
    if m:
        grid = (triton.cdiv(w.shape[0], TILE["BLOCK_N"]), triton.cdiv(m, TILE["BLOCK_M"]))
        _tree_mm_kernel[grid](x, w, y, m, w.shape[0], x.stride(0), w.stride(0), y.stride(0),
                              K_SLICE=k // slices, SLICES_HERE=slices, IEEE=x.dtype == torch.float32, **TILE)
    return y
