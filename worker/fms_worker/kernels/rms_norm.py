"""RMSNorm (and residual add + RMSNorm) of a few decode rows as one Triton kernel (experiment: FMS_DECODE_NORM).

On one GPU a decode step's norms are Inductor's compiled kernels (layers/fused.py), which launch without
programmatic dependent launch: each one ends the overlap of the step's chain of PDL kernels (the GEMVs, the
attention; kernels/tuning.py). This kernel computes what `fused._add_rms_norm` / `fused._rms_norm` do (the
add rounded to the rows' dtype, the mean of squares in float32, the normed rows rounded before the weight
multiplies them) and joins the chain. One program a row; rows up to `MAX_ROWS` (decode batches).
`FMS_DECODE_NORM=triton` in the worker's environment turns it on; not yet measured on a GPU.
"""

from __future__ import annotations

import os

import torch

from fms_worker.kernels.tuning import pdl_done, pdl_launch, pdl_wait

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs
    triton = None

ENV_SWITCH = "FMS_DECODE_NORM"
MAX_ROWS = 16


def enabled() -> bool:
    value = os.environ.get(ENV_SWITCH, "compiled")
    if value not in ("compiled", "triton"):
        raise ValueError(f"{ENV_SWITCH}={value!r}: use compiled or triton")
    return value == "triton"


ON = enabled()


def supported(x: torch.Tensor, weight: torch.Tensor, residual: torch.Tensor | None = None) -> bool:
    """Rows this kernel takes: a few contiguous 16-bit CUDA rows, the weight (and residual) of their dtype."""
    return (triton is not None and x.is_cuda and x.dim() == 2 and 0 < x.shape[0] <= MAX_ROWS and x.is_contiguous()
            and x.dtype in (torch.bfloat16, torch.float16) and weight.dtype == x.dtype
            and (residual is None or (residual.dtype == x.dtype and residual.shape == x.shape
                                      and residual.is_contiguous())))


if triton is not None:

    @triton.jit
    def _rms_norm_rows(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, hidden, eps, HAS_RES: tl.constexpr,
                       BLOCK: tl.constexpr, USE_PDL: tl.constexpr = 0):
        pdl_wait(USE_PDL)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        m = cols < hidden
        dtype = x_ptr.dtype.element_ty
        x = tl.load(x_ptr + row * hidden + cols, mask=m, other=0.0)
        if HAS_RES:  # x + residual, rounded as torch adds them
            r = (x.to(tl.float32) + tl.load(res_ptr + row * hidden + cols, mask=m, other=0.0).to(tl.float32)).to(dtype)
            tl.store(res_out_ptr + row * hidden + cols, r, mask=m)
            h = r.to(tl.float32)
        else:
            h = x.to(tl.float32)
        inv = tl.math.rsqrt(tl.sum(h * h, axis=0) / hidden + eps)
        normed = (h * inv).to(dtype).to(tl.float32)
        w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * hidden + cols, (w * normed).to(dtype), mask=m)
        pdl_done(USE_PDL)


def rms_norm_rows(x: torch.Tensor, weight: torch.Tensor, eps: float,
                  residual: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """`fused._rms_norm(x, weight, eps)`, or with `residual` `fused._add_rms_norm` (normed, new residual), for
    rows `supported` accepts."""
    rows, hidden = x.shape
    out = torch.empty_like(x)
    res_out = torch.empty_like(x) if residual is not None else out
    block = triton.next_power_of_2(hidden)
    _rms_norm_rows[(rows,)](x, residual if residual is not None else x, weight, out, res_out, hidden, eps,
                            HAS_RES=residual is not None, BLOCK=block, num_warps=max(1, min(16, block // 512)),
                            **pdl_launch(x, rows))
    return out if residual is None else (out, res_out)
