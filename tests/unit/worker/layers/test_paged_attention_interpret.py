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
# (q_lens, seq_lens, heads, kv heads, head dim, splits, cache scales, key tile)
for q_lens, seq_lens, h, kv, d, splits, (ks, vs), block_n in (
    ([1, 1, 1], [300, 5, 129], 8, 2, 16, 4, (1.0, 1.0), None),  # ragged decode: 4, 1 and 3 splits hold keys
    ([1], [70], 4, 4, 32, 8, (1.0, 1.0), None),  # MHA decode, 2 of 8 splits hold keys
    ([1, 1], [64, 1], 6, 2, 16, 2, (1.0, 1.0), None),  # contexts of exactly one tile and one key
    ([5, 1, 12], [20, 33, 12], 8, 2, 16, 1, (1.0, 1.0), None),  # prefill with context, decode, plain prefill
    ([1, 1, 1], [300, 5, 129], 8, 2, 16, 4, (0.5, 3.0), 32),  # a scaled (fp8-style) cache, split, 32-key tiles
    ([1, 1], [200, 17], 8, 2, 16, 1, (0.25, 0.7), 128),  # scaled cache, unsplit decode, 128-key tiles
):
    q, k, v, table, sl, qs = case(q_lens, seq_lens, h, kv, d)
    ref = pa.paged_attention_ref(q, k * ks, v * vs, table, sl, qs, d ** -0.5)
    got = torch.full_like(q, float("nan"))  # poisoned: every element must be written
    cfg = dict(BLOCK_N=block_n, num_warps=4, num_stages=2) if block_n else None
    pa.paged_attention(q, k, v, table, sl, qs, d ** -0.5, max_q_len=max(q_lens), num_splits=splits, out=got,
                       k_scale=ks, v_scale=vs, config=cfg)
    out.append(dict(err=(got - ref).abs().max().item()))
print(json.dumps(out))
'''


def test_split_and_unsplit_paths_match_reference(triton_interpret):
    results = triton_interpret(_SCRIPT)
    assert len(results) == 6
    for r in results:
        assert r["err"] < 1e-4, r  # float32 throughout: rounding only (NaN fails too)

