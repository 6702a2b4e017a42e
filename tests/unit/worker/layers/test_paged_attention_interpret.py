"""The paged-attention kernel on CPU, through Triton's interpreter, against its torch reference.

Checked here: the split (flash-decoding) path with its merge kernel on decode batches with ragged
contexts (some sequences have keys for fewer splits than the launch has, so empty splits must drop out
of the merge), GQA and MHA, contexts of one tile and of one key, and prefill with context through the
unsplit path; a cache with scales (as an fp8 cache has: the kernel applies them outside its key loop) and
other key tiles than the default.
"""

from __future__ import annotations

_SCRIPT = r'''
import json

import torch

from fms_worker.kernels import paged_attention as pa

gen = torch.Generator().manual_seed(0)


def case(q_lens, seq_lens, heads, kv, d, page=16):
    blocks = [(n + page - 1) // page for n in seq_lens]
    total = sum(blocks) + 3
    perm = torch.randperm(total, generator=gen).int()
    table = torch.zeros(len(q_lens), max(blocks), dtype=torch.int32)
    used = 0
    for i, b in enumerate(blocks):
        table[i, :b] = perm[used:used + b]
        used += b
    k = torch.randn(total, page, kv, d, generator=gen)
    v = torch.randn(total, page, kv, d, generator=gen)
    q = torch.randn(sum(q_lens), heads, d, generator=gen)
    qs = torch.tensor([0] + torch.tensor(q_lens).cumsum(0).tolist(), dtype=torch.int32)
    return q, k, v, table, torch.tensor(seq_lens, dtype=torch.int32), qs


out = []
# (q_lens, seq_lens, heads, kv heads, head dim, splits, cache, cache scales, key tile)
for q_lens, seq_lens, h, kv, d, splits, cache, (ks, vs), block_n in (
    ([1, 1, 1], [300, 5, 129], 8, 2, 16, 4, "f32", (1.0, 1.0), None),  # ragged decode: 4, 1 and 3 splits hold keys
    ([1], [70], 4, 4, 32, 8, "f32", (1.0, 1.0), None),  # MHA decode, 2 of 8 splits hold keys
    ([1, 1], [64, 1], 6, 2, 16, 2, "f32", (1.0, 1.0), None),  # contexts of exactly one tile and one key
    ([5, 1, 12], [20, 33, 12], 8, 2, 16, 1, "f32", (1.0, 1.0), None),  # prefill with context, decode, plain prefill
    ([1, 1, 1], [300, 5, 129], 8, 2, 16, 4, "f32", (0.5, 3.0), 32),  # a scaled cache, split, 32-key tiles
    ([1, 1], [200, 17], 8, 2, 16, 1, "f32", (0.25, 0.7), 128),  # scaled cache, unsplit decode, 128-key tiles
    ([1, 1, 1], [300, 5, 129], 8, 2, 16, 4, "e4m3", (50.0, 50.0), None),  # an e4m3 cache (fp16 dots), split
    ([4, 1], [40, 77], 8, 2, 16, 1, "e4m3", (50.0, 20.0), 32),  # e4m3 cache, prefill and decode, unsplit
):
    q, k, v, table, sl, qs = case(q_lens, seq_lens, h, kv, d)
    if cache == "e4m3":  # stored = value / scale: N(0, 1) / 50 puts about half of the keys among e4m3's subnormals
        k, v, q = (k / ks).to(torch.float8_e4m3fn), (v / vs).to(torch.float8_e4m3fn), q.bfloat16()
    ref = pa.paged_attention_ref(q.float(), k.float() * ks, v.float() * vs, table, sl, qs, d ** -0.5)
    got = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    cfg = dict(BLOCK_N=block_n, num_warps=4, num_stages=2) if block_n else None
    pa.paged_attention(q, k, v, table, sl, qs, d ** -0.5, max_q_len=max(q_lens), num_splits=splits, out=got,
                       k_scale=ks, v_scale=vs, config=cfg)
    out.append(dict(err=(got.float() - ref).abs().max().item() / ref.abs().max().item(), dtype=str(k.dtype)))
print(json.dumps(out))
'''


def test_split_and_unsplit_paths_match_reference(triton_interpret):
    results = triton_interpret(_SCRIPT)
    assert len(results) == 8
    for r in results:
        # relative to the largest output. float32 throughout: rounding only (NaN fails too); the e4m3 cases
        # write bf16 (steps of 2^-8) from fp16 dots
        assert r["err"] < (1e-2 if "float8" in r["dtype"] else 1e-5), r



_NEW_TOKENS = r'''
import json

import torch

from fms_worker.kernels import paged_attention as pa
from fms_worker.kernels.rope_cache import rope_cache
from fms_worker.layers.rotary import RotaryEmbedding

gen = torch.Generator().manual_seed(1)
out = []
# (context lengths before the new token, heads, kv heads, head dim, splits, cache, scales); float32 (the
# interpreter truncates bf16 casts) except the e4m3 case, whose stores it rounds like the reference path
for ctx, h, kv, d, splits, cache, (ks, vs) in (
    ([299, 4, 128, 0], 8, 2, 16, 4, "f32", (1.0, 1.0)),  # ragged, the new key in splits 3, 0, 2, 0; one with none before
    ([63, 64], 4, 4, 32, 1, "f32", (1.0, 1.0)),  # MHA, unsplit, the new key ending a tile and starting one
    ([200, 16], 8, 2, 16, 8, "f32", (0.5, 3.0)),  # scaled cache
    ([150, 7], 8, 2, 16, 4, "e4m3", (0.05, 0.05)),  # an e4m3 cache: the new key is stored and used as e4m3
):
    page, b = 16, len(ctx)
    seq_lens = torch.tensor([n + 1 for n in ctx], dtype=torch.int32)
    blocks = [(n + page) // page for n in seq_lens.tolist()]
    total = sum(blocks) + 2
    perm = torch.randperm(total, generator=gen).int()
    table = torch.zeros(b, max(blocks), dtype=torch.int32)
    used = 0
    for i, nb in enumerate(blocks):
        table[i, :nb] = perm[used:used + nb]
        used += nb
    dtype = torch.float8_e4m3fn if cache == "e4m3" else torch.float32
    kc = (torch.randn(total, page, kv, d, generator=gen) / ks).to(dtype)
    vc = (torch.randn(total, page, kv, d, generator=gen) / vs).to(dtype)
    qkv = torch.randn(b, h + 2 * kv, d, generator=gen)  # the fused projection's output: q, k, v are views
    if cache == "e4m3":
        qkv = qkv.bfloat16()
    q, k, v = qkv[:, :h], qkv[:, h:h + kv], qkv[:, h + kv:]
    pos = seq_lens.long() - 1
    slots = torch.tensor([int(table[i, p // page]) * page + p % page for i, p in enumerate(pos.tolist())])
    rot = RotaryEmbedding(d, 512, 10000.0)
    qs = torch.arange(b + 1, dtype=torch.int32)
    # the reference: rotate and store (rope_cache), then attend over the cache
    kc_ref, vc_ref, q_ref = kc.clone(), vc.clone(), q.clone()
    rope_cache(q_ref, k, v, kc_ref.view(-1, kv, d), vc_ref.view(-1, kv, d), slots, pos, rot.cos, rot.sin, ks, vs)
    ref = pa.paged_attention(q_ref, kc_ref, vc_ref, table, seq_lens, qs, d ** -0.5, max_q_len=1, num_splits=splits,
                             k_scale=ks, v_scale=vs)
    got = torch.full_like(q, float("nan"))
    q_before = q.clone()
    pa.paged_attention(q, kc, vc, table, seq_lens, qs, d ** -0.5, max_q_len=1, num_splits=splits, out=got,
                       k_scale=ks, v_scale=vs, new=pa.NewTokens(k, v, slots, rot.cos, rot.sin))
    out.append(dict(
        err=(got.float() - ref.float()).abs().max().item() / ref.float().abs().max().item(),
        k_cache_equal=bool((kc.float() == kc_ref.float()).all()), v_cache_equal=bool((vc.float() == vc_ref.float()).all()),
        q_untouched=bool((q.float() == q_before.float()).all()), cache=cache,
    ))
print(json.dumps(out))
'''


def test_decode_rotates_and_stores_the_new_tokens_itself(triton_interpret):
    """Handed the new tokens unrotated, the kernel gives what rope_cache followed by the kernel gives: the same
    cache contents (the new key and value in their slots, nothing else touched) and the same output."""
    results = triton_interpret(_NEW_TOKENS)
    assert len(results) == 4
    for r in results:
        assert r["k_cache_equal"] and r["v_cache_equal"] and r["q_untouched"], r
        # the new key's score is summed in another order than the tile's dot: rounding only
        assert r["err"] < (1e-2 if r["cache"] == "e4m3" else 1e-5), r


_BACKEND = r'''
import json

import torch

from fms_worker.layers import attention_triton as at
from fms_worker.layers import fused
from fms_worker.layers.rotary import RotaryEmbedding

fused.enable(True)  # the GPU backend's switch; the interpreter runs its kernels on these CPU tensors
gen = torch.Generator().manual_seed(2)
page, h, kv, d = 16, 4, 2, 16
ctx = [37, 5, 64]  # keys before each sequence's new token
seq_lens = torch.tensor([n + 1 for n in ctx], dtype=torch.int32)
blocks = [(n + page) // page for n in seq_lens.tolist()]
table = torch.zeros(len(ctx), max(blocks), dtype=torch.int32)
perm = torch.randperm(sum(blocks) + 1, generator=gen).int()
used = 0
for i, nb in enumerate(blocks):
    table[i, :nb] = perm[used:used + nb]
    used += nb
positions = seq_lens.long() - 1
slots = torch.stack([table[i, p // page].long() * page + p % page for i, p in enumerate(positions.tolist())])
meta = at.PagedAttentionMetadata(slot_mapping=slots, block_tables=table, seq_lens=seq_lens,
                                 query_start=torch.arange(len(ctx) + 1, dtype=torch.int32), max_q_len=1,
                                 num_splits=4, block_size=page)
cache = torch.randn(2, (sum(blocks) + 1) * page, kv, d, generator=gen)
qkv = torch.randn(len(ctx), h + 2 * kv, d, generator=gen)
rot = RotaryEmbedding(d, 256, 10000.0)
backend = at.TritonPagedBackend()
runs = {}
for fold in (True, False):
    at.ROPE_IN_ATTENTION = fold
    x, kv_cache = qkv.clone(), cache.clone()
    q, k, v = x[:, :h], x[:, h:h + kv], x[:, h + kv:]
    out = backend.forward(rot, positions, q, k, v, kv_cache, meta, d ** -0.5)
    runs[fold] = (out, kv_cache, bool(torch.equal(q, qkv[:, :h])))
(out1, cache1, q1_kept), (out2, cache2, q2_kept) = runs[True], runs[False]
print(json.dumps(dict(err=(out1 - out2).abs().max().item() / out2.abs().max().item(),
                      caches_equal=bool(torch.equal(cache1, cache2)), changed=bool((cache1 != cache).any()),
                      fold_kept_q=q1_kept, two_kernels_kept_q=q2_kept)))
'''


def test_backend_folds_the_rotary_into_decode_attention(triton_interpret):
    """TritonPagedBackend at decode: with FMS_ROPE_IN_ATTENTION's default it hands the attention kernel the new
    tokens (q stays unrotated in the projection's output), without it rope_cache rotates q in place first; both
    leave the same cache and give the same output."""
    r = triton_interpret(_BACKEND)
    assert r["fold_kept_q"] and not r["two_kernels_kept_q"], r  # each switch took its own path
    assert r["caches_equal"] and r["changed"], r
    assert r["err"] < 1e-5, r
