"""Quantization, fp8 KV cache and 2:4 sparsity: one `LinearMethod` per scheme (see docs/quantization.md)."""

from fms_worker.quantization.checkpoint import check_dense_checkpoint
from fms_worker.quantization.kv_fp8 import kv_cache_dtype
from fms_worker.quantization.registry import get_linear_method

__all__ = ["check_dense_checkpoint", "get_linear_method", "kv_cache_dtype"]
