"""Time the paged-attention kernel for decode shapes; print achieved KV bandwidth.

    python bench/attention_gpu.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import triton.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))
from fms_worker.kernels.paged_attention import num_splits_for, paged_attention  # noqa: E402


def bench(batch: int, ctx: int, heads=32, kv=8, d=128, page=16) -> None:
    blocks = (ctx + page - 1) // page
    k = torch.randn(batch * blocks, page, kv, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    table = torch.randperm(batch * blocks, device="cuda").int().view(batch, blocks)
    q = torch.randn(batch, heads, d, device="cuda", dtype=torch.bfloat16)
    sl = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    qs = torch.arange(batch + 1, dtype=torch.int32, device="cuda")
    kv_bytes = 2 * batch * ctx * kv * d * 2
    for splits in sorted({1, 4, num_splits_for(batch, kv, ctx)}):
        ms = triton.testing.do_bench(
            lambda: paged_attention(q, k, v, table, sl, qs, d ** -0.5, max_q_len=1, num_splits=splits),
            warmup=25, rep=100, return_mode="median")
        print(f"decode batch {batch:4d} ctx {ctx:5d} splits {splits:2d}: {ms * 1e3:8.1f} us "
              f"{kv_bytes / ms / 1e6:7.0f} GB/s of KV")


if __name__ == "__main__":
    print(torch.cuda.get_device_name())
    for b, c in [(1, 384), (1, 4096), (16, 1024), (64, 1024), (256, 600)]:
        bench(b, c)
