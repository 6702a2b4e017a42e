"""fp8 KV cache: K and V stored as float8_e4m3fn, divided by a per-layer scale on write and
multiplied back on read. One byte per element instead of two halves the cache, so twice the
blocks (and sequences) fit in the same memory.

The scale defaults to 1.0: K and V of common models stay well inside e4m3's +-448 range, and
values beyond it are clamped rather than turned into NaN.
"""

from __future__ import annotations

import torch

from fms_worker.quantization.fp8 import FP8, FP8_MAX, require_fp8


def kv_cache_dtype(kv_cache_dtype: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The cache's storage dtype for `precision.kv_cache_dtype` ("auto" is the model dtype)."""
    if kv_cache_dtype == "auto":
        return model_dtype
    if kv_cache_dtype != "fp8":
        raise ValueError(f"precision.kv_cache_dtype {kv_cache_dtype!r} is not one of auto, fp8")
    if device.type == "cuda":  # the Triton kernel converts e4m3 pages; on CPU the eager path upcasts
        require_fp8(device, "kv_cache_dtype fp8")
    return FP8


def write_kv(cache: torch.Tensor, slots: torch.Tensor, values: torch.Tensor, scale: float) -> None:
    """cache [S, Hkv, D], slots [T], values [T, Hkv, D]."""
    if cache.dtype != FP8:
        cache.index_copy_(0, slots, values.to(cache.dtype))
        return
    q = (values.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    # index_copy_ has no fp8 kernel on CPU; the bytes are the same through a uint8 view.
    cache.view(torch.uint8).index_copy_(0, slots, q.view(torch.uint8))


def read_kv(cache: torch.Tensor, index: torch.Tensor, scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Gather cache[index] and return it in the compute dtype."""
    gathered = cache[index]
    if cache.dtype != FP8:
        return gathered
    return (gathered.float() * scale).to(dtype) if scale != 1.0 else gathered.to(dtype)
