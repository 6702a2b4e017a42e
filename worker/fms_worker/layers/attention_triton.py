"""The GPU attention backend: the Triton paged-attention kernel over block tables.

Its metadata is sized by sequences and blocks, not by context tokens, so
building it costs the host O(batch x blocks) per step, and its tensors have
fixed shapes per batch size, which is what CUDA graphs need.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from fms_worker.kernels.paged_attention import NewTokens, paged_attention
from fms_worker.kernels.rope_cache import rope_cache
from fms_worker.kernels.rope_cache import supported as rope_cache_supported
from fms_worker.layers import fused
from fms_worker.layers.attention import AttentionBackend, AttentionMetadata
from fms_worker.layers.rotary import RotaryEmbedding


# Decode steps rotate and store their new tokens inside the attention kernel (one launch a layer instead of two);
# FMS_ROPE_IN_ATTENTION=0 in the worker's environment keeps the separate rotary/cache-write kernel.
ROPE_IN_ATTENTION = os.environ.get("FMS_ROPE_IN_ATTENTION", "1") != "0"


@dataclass
class PagedAttentionMetadata(AttentionMetadata):
    block_tables: torch.Tensor | None = None  # [B, max_blocks] int32
    seq_lens: torch.Tensor | None = None  # [B] int32, keys per sequence including this step's tokens
    query_start: torch.Tensor | None = None  # [B + 1] int32, cumulative new tokens
    max_q_len: int = 1  # host int: 1 means a pure decode step
    num_splits: int = 1  # host int: key splits per sequence (flash-decoding)
    block_size: int = 16


class TritonPagedBackend(AttentionBackend):
    def forward(self, rotary, positions, q, k, v, kv_cache, meta, scale, k_scale=1.0, v_scale=1.0):
        """At decode with the fused kernels on, one kernel rotates, stores and attends; otherwise two."""
        if not (ROPE_IN_ATTENTION and meta.max_q_len == 1 and self._fuses(rotary, q, kv_cache)):
            return super().forward(rotary, positions, q, k, v, kv_cache, meta, scale, k_scale, v_scale)
        new = NewTokens(k, v, meta.slot_mapping, rotary.cos, rotary.sin)  # positions: seq_lens - 1
        return self._paged(q, kv_cache, meta, scale, k_scale, v_scale, new)

    @staticmethod
    def _fuses(rotary, q, kv_cache) -> bool:
        return fused.is_enabled() and isinstance(rotary, RotaryEmbedding) and rope_cache_supported(q, kv_cache)

    def rope_and_store(self, rotary, positions, q, k, v, kv_cache, meta, k_scale=1.0, v_scale=1.0):
        """One kernel (kernels/rope_cache.py) where the fused kernels are on; the unfused path otherwise
        (enforce_eager, or a layout the kernel does not take)."""
        if not self._fuses(rotary, q, kv_cache):
            return super().rope_and_store(rotary, positions, q, k, v, kv_cache, meta, k_scale, v_scale)
        rope_cache(q, k, v, kv_cache[0], kv_cache[1], meta.slot_mapping, positions, rotary.cos, rotary.sin,
                   k_scale, v_scale)
        return q, None  # the kernel below reads the keys from the cache

    def attend(self, q, k, v, kv_cache, meta: PagedAttentionMetadata, scale, k_scale=1.0, v_scale=1.0):
        return self._paged(q, kv_cache, meta, scale, k_scale, v_scale, None)

    @staticmethod
    def _paged(q, kv_cache, meta: PagedAttentionMetadata, scale, k_scale, v_scale, new: NewTokens | None):
        k_cache, v_cache = kv_cache[0], kv_cache[1]  # [S, Hkv, D]
        hkv, d = k_cache.shape[1], k_cache.shape[2]
        return paged_attention(
            q, k_cache.view(-1, meta.block_size, hkv, d), v_cache.view(-1, meta.block_size, hkv, d),
            meta.block_tables, meta.seq_lens, meta.query_start, scale,
            max_q_len=meta.max_q_len, num_splits=meta.num_splits, k_scale=k_scale, v_scale=v_scale, new=new,
        )
