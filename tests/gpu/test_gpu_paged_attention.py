"""The Triton paged-attention kernel against its torch reference, on fresh random data."""

from __future__ import annotations

import pytest
import torch

from fms_worker.kernels.paged_attention import NewTokens, num_splits_for, paged_attention, paged_attention_ref
from fms_worker.kernels.rope_cache import rope_cache
from fms_worker.layers.rotary import RotaryEmbedding

pytestmark = pytest.mark.gpu


def _case(q_lens, seq_lens, heads, kv_heads, head_dim=128, page=16, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    num_seqs = len(q_lens)
    blocks_per_seq = [(n + page - 1) // page for n in seq_lens]
    num_blocks = sum(blocks_per_seq) + 7
    # Pages handed out in a shuffled order, as a real block pool would.
    perm = torch.randperm(num_blocks, generator=g, device="cuda").int()
    table = torch.zeros(num_seqs, max(blocks_per_seq), dtype=torch.int32, device="cuda")
    used = 0
    for i, b in enumerate(blocks_per_seq):
        table[i, :b] = perm[used:used + b]
        used += b
    k = torch.randn(num_blocks, page, kv_heads, head_dim, generator=g, device="cuda").to(dtype)
    v = torch.randn(num_blocks, page, kv_heads, head_dim, generator=g, device="cuda").to(dtype)
    q = torch.randn(sum(q_lens), heads, head_dim, generator=g, device="cuda").to(dtype)
    qs = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0)), dtype=torch.int32, device="cuda")
    sl = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    return q, k, v, table, sl, qs


CASES = [
    # (q_lens, seq_lens, heads, kv_heads)
    ([1], [384], 32, 8),  # batch-1 decode, Llama-3 GQA
    ([1] * 7, [5, 17, 64, 100, 1000, 2048, 33], 32, 8),  # decode batch, ragged contexts
    ([37, 1, 200, 16], [37, 90, 450, 16], 32, 8),  # mixed prefill, chunked prefill with context, decode
    ([1, 9], [30, 9], 9, 3),  # SmolLM2 shape: group 3, head_dim 64
    ([64], [64], 8, 8),  # MHA prefill
]


@pytest.mark.parametrize("q_lens,seq_lens,heads,kv", CASES)
@pytest.mark.parametrize("splits", [1, 4])
def test_matches_reference(q_lens, seq_lens, heads, kv, splits):
    head_dim = 64 if heads == 9 else 128
    q, k, v, table, sl, qs = _case(q_lens, seq_lens, heads, kv, head_dim=head_dim, seed=len(q_lens) * 31 + splits)
    scale = head_dim ** -0.5
    ref = paged_attention_ref(q, k, v, table, sl, qs, scale)
    out = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    paged_attention(q, k, v, table, sl, qs, scale, max_q_len=max(q_lens), num_splits=splits, out=out)
    assert torch.isfinite(out).all()
    err = (out.float() - ref.float()).norm() / ref.float().norm()
    assert err < 1e-2, err


@pytest.mark.parametrize("q_lens,seq_lens,heads,kv", CASES[:3])
@pytest.mark.parametrize("splits", [1, 4])
def test_fp8_cache_matches_reference(q_lens, seq_lens, heads, kv, splits):
    """An e4m3 cache (the kernel's fp16 dots) holding N(0, 1) / 50, so about half of its values are e4m3
    subnormals: a conversion that flushed or misread them would miss by far more than the tolerance."""
    q, k, v, table, sl, qs = _case(q_lens, seq_lens, heads, kv, seed=len(q_lens) * 17 + splits)
    k8, v8 = (k.float() / 50).to(torch.float8_e4m3fn), (v.float() / 50).to(torch.float8_e4m3fn)
    scale = 128 ** -0.5
    ref = paged_attention_ref(q, k8.float() * 50, v8.float() * 50, table, sl, qs, scale)
    out = torch.full_like(q, float("nan"))
    paged_attention(q, k8, v8, table, sl, qs, scale, max_q_len=max(q_lens), num_splits=splits, out=out,
                    k_scale=50.0, v_scale=50.0)
    assert torch.isfinite(out).all()
    err = (out.float() - ref.float()).norm() / ref.float().norm()
    assert err < 1e-2, err


def test_split_decode_in_a_cuda_graph():
    """32 splits (what a batch-1 decode graph captures) over contexts that change between replays."""
    q, k, v, table, sl, qs = _case([1, 1], [384, 384], 32, 8, seed=5)
    out = torch.empty_like(q)
    run = lambda: paged_attention(q, k, v, table, sl, qs, 128 ** -0.5, max_q_len=1, num_splits=32, out=out)  # noqa: E731
    run()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        run()
    for lens in ([384, 1], [17, 300], [64, 65], [384, 384]):
        sl.copy_(torch.tensor(lens, dtype=torch.int32))
        out.fill_(float("nan"))
        g.replay()
        ref = paged_attention_ref(q, k, v, table, sl, qs, 128 ** -0.5)
        err = (out.float() - ref.float()).norm() / ref.float().norm()
        assert err < 1e-2, (lens, err)


@pytest.mark.parametrize("cache", ["bf16", "e4m3"])
@pytest.mark.parametrize("splits", [1, 32])
def test_decode_rotates_and_stores_new_tokens(cache, splits):
    """The decode kernel handed its new tokens unrotated (NewTokens) against rope_cache then the kernel: the
    same cache bytes and, up to the new key's score being summed in another order, the same output; inside a
    CUDA graph, over contexts that change between replays (the graph's 32 splits at batch 1)."""
    heads, kv, d, page = 32, 8, 128, 16
    _, k_cache, v_cache, table, sl, qs = _case([1, 1, 1], [2048, 2048, 2048], heads, kv, seed=11)
    ks = vs = 1.0
    if cache == "e4m3":
        ks = vs = 0.05
        k_cache, v_cache = ((c.float() / ks).to(torch.float8_e4m3fn) for c in (k_cache, v_cache))
    g = torch.Generator(device="cuda").manual_seed(3)
    qkv = torch.randn(3, heads + 2 * kv, d, generator=g, device="cuda").bfloat16()
    q, k, v = qkv[:, :heads], qkv[:, heads:heads + kv], qkv[:, heads + kv:]
    rot = RotaryEmbedding(d, 4096, 500000.0)
    rot.cos, rot.sin = rot.cos.cuda(), rot.sin.cuda()
    slots = torch.zeros(3, dtype=torch.long, device="cuda")
    out = torch.empty_like(q)
    kc, vc = k_cache.clone(), v_cache.clone()
    new = NewTokens(k, v, slots, rot.cos, rot.sin)

    def run():
        paged_attention(q, kc, vc, table, sl, qs, d ** -0.5, max_q_len=1, num_splits=splits, out=out, k_scale=ks,
                        v_scale=vs, new=new)

    run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    for lens in ([2048, 1, 700], [17, 300, 64], [65, 2000, 1024]):
        sl.copy_(torch.tensor(lens, dtype=torch.int32))
        pos = sl.long() - 1
        slots.copy_(torch.stack([table[i, p // page].long() * page + p % page for i, p in enumerate(pos.tolist())]))
        kc.copy_(k_cache)
        vc.copy_(v_cache)
        out.fill_(float("nan"))
        graph.replay()
        kr, vr, qr = k_cache.clone(), v_cache.clone(), q.clone()
        rope_cache(qr, k, v, kr.view(-1, kv, d), vr.view(-1, kv, d), slots, pos, rot.cos, rot.sin, ks, vs)
        ref = paged_attention(qr, kr, vr, table, sl, qs, d ** -0.5, max_q_len=1, num_splits=splits,
                              k_scale=ks, v_scale=vs)
        assert torch.equal(kc.view(torch.uint8), kr.view(torch.uint8)), lens
        assert torch.equal(vc.view(torch.uint8), vr.view(torch.uint8)), lens
        err = (out.float() - ref.float()).norm() / ref.float().norm()
        assert err < 1e-2, (lens, err)
        assert (out.float() - ref.float()).abs().max() < 0.02 * ref.float().abs().max(), lens
    assert torch.equal(q, qkv[:, :heads])  # q is rotated in registers, not in place


def test_split_choice_fills_gpu():
    assert num_splits_for(1, 8, 4096) >= 16
    assert num_splits_for(256, 8, 4096) == 1
