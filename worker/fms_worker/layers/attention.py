"""Attention over the paged KV cache.

The cache of one layer is one tensor [2, num_slots, Hkv, D] (slot = block *
block_size + offset). The model runner builds an `AttentionMetadata` once per
step; a backend rotates q and k, writes the step's K/V into their slots and
attends. The eager backend here works on any device; the GPU backend
(attention_triton.py) fuses the rotation with the cache write and attends with a
Triton kernel, over the same metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fms_worker.quantization.kv_fp8 import read_kv, write_kv


@dataclass
class PrefillSpan:
    """A sequence computing more than one token this step (prompt chunk or recompute)."""

    start: int  # rows [start, end) of the step's flattened tokens
    end: int
    context_slots: torch.Tensor | None  # [ctx] slots of all its tokens so far; None when nothing was cached before
    mask: torch.Tensor | None  # [n, ctx] bool, causal with the cached prefix in front; None -> plain causal


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] where each new token's K/V goes
    prefills: list[PrefillSpan] = field(default_factory=list)
    decode_rows: torch.Tensor | None = None  # [B] rows of one-token sequences
    decode_slots: torch.Tensor | None = None  # [B, L] their context slots, right-padded
    decode_mask: torch.Tensor | None = None  # [B, 1, 1, L] True where a slot is real


class AttentionBackend:
    """k_scale/v_scale: what an fp8 cache's stored values are multiplied by on read."""

    def rope_and_store(self, rotary, positions, q, k, v, kv_cache: torch.Tensor, meta: AttentionMetadata,
                       k_scale: float = 1.0, v_scale: float = 1.0):
        """Rotate q and k (`rotary` None: as given) and write k, v into the step's slots.

        Returns (q, k) as `attend` takes them; a backend that reads keys only from the cache may return None
        for k."""
        if rotary is not None:
            q, k = rotary(positions, q, k)
        write_kv(kv_cache[0], meta.slot_mapping, k, k_scale)
        write_kv(kv_cache[1], meta.slot_mapping, v, v_scale)
        return q, k

    def attend(self, q, k, v, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float,
               k_scale: float = 1.0, v_scale: float = 1.0) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, rotary, positions, q, k, v, kv_cache: torch.Tensor, meta: AttentionMetadata, scale: float,
                k_scale: float = 1.0, v_scale: float = 1.0) -> torch.Tensor:
        """A layer's whole attention: rotate, store, attend (a backend may do all three in one kernel)."""
        q, k = self.rope_and_store(rotary, positions, q, k, v, kv_cache, meta, k_scale, v_scale)
        return self.attend(q, k, v, kv_cache, meta, scale, k_scale, v_scale)


class TorchSDPABackend(AttentionBackend):
    """Eager path: gather K/V by slot, then torch SDPA (one call per prefill, one batched call for all decodes)."""

    def attend(self, q, k, v, kv_cache, meta, scale, k_scale=1.0, v_scale=1.0):
        k_cache, v_cache = kv_cache[0], kv_cache[1]  # [S, Hkv, D]
        out = torch.empty_like(q)  # [T, H, D]
        for p in meta.prefills:
            qs = q[p.start : p.end].transpose(0, 1).unsqueeze(0)  # [1, H, n, D]
            if p.context_slots is None:
                ks, vs = k[p.start : p.end], v[p.start : p.end]
            else:
                ks = read_kv(k_cache, p.context_slots, k_scale, q.dtype)  # [ctx, Hkv, D]
                vs = read_kv(v_cache, p.context_slots, v_scale, q.dtype)
            ks, vs = ks.transpose(0, 1).unsqueeze(0), vs.transpose(0, 1).unsqueeze(0)  # [1, Hkv, ctx, D]
            o = F.scaled_dot_product_attention(
                qs, ks, vs, attn_mask=p.mask, is_causal=p.mask is None, scale=scale, enable_gqa=True
            )
            out[p.start : p.end] = o[0].transpose(0, 1)
        if meta.decode_rows is not None:
            qd = q[meta.decode_rows].unsqueeze(2)  # [B, H, 1, D]
            # [B, L, Hkv, D] -> [B, Hkv, L, D]
            kd = read_kv(k_cache, meta.decode_slots, k_scale, q.dtype).permute(0, 2, 1, 3)
            vd = read_kv(v_cache, meta.decode_slots, v_scale, q.dtype).permute(0, 2, 1, 3)
            o = F.scaled_dot_product_attention(qd, kd, vd, attn_mask=meta.decode_mask, scale=scale, enable_gqa=True)
            out[meta.decode_rows] = o.squeeze(2)
        return out


class Attention(nn.Module):
    """Holds the layer's KV cache (bound by the model runner) and its rotary embedding, and delegates both
    to a backend (which may fuse the rotation with the cache write)."""

    def __init__(self, num_heads: int, head_dim: int, num_kv_heads: int, backend: AttentionBackend | None = None,
                 rotary: nn.Module | None = None):
        super().__init__()
        self.num_heads, self.head_dim, self.num_kv_heads = num_heads, head_dim, num_kv_heads
        self.scale = head_dim**-0.5
        self.backend = backend or TorchSDPABackend()
        self.rotary = rotary
        self.kv_cache = torch.empty(0)  # replaced by the runner: [2, num_slots, Hkv, D]
        self.k_scale = self.v_scale = 1.0  # fp8 KV cache: stored = value / scale

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        """q [T, H, D], k and v [T, Hkv, D] before the rotary embedding -> [T, H, D]."""
        return self.backend.forward(self.rotary, positions, q, k, v, self.kv_cache, meta, self.scale,
                                    self.k_scale, self.v_scale)
