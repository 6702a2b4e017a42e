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

