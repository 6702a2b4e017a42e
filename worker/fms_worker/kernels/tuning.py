"""What the autotuned weight-only kernels (int8, int4) share: the row-count buckets they tune for, and a
short timing run per candidate."""

from __future__ import annotations

try:
    import triton
except ImportError:  # CPU-only installs
    triton = None

GEMV_MAX_M = 1  # one row: the CUDA-core GEMVs; from two rows on, tensor-core tiles (faster there)


def triton_available() -> bool:
    return triton is not None


def m_bucket(m: int) -> int:
    """The autotuning key for M: every batch up to 16 shares the 16-row tiles, then powers of two."""
    if m <= 16:
        return 16
    return min(1 << (m - 1).bit_length(), 4096)


def short_bench(fn, quantiles):
    """The autotuners' timer: shorter than Triton's default 25 + 100 ms, ~30 ms a compiled config."""
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)
