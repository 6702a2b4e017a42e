"""The paged-attention kernel on CPU, through Triton's interpreter, against its torch reference.

The split (flash-decoding) path is the one with moving parts: only splits holding keys run, the last
one to count itself in merges the partial softmaxes in the same launch and zeroes its counter again.
Checked here: decode batches with ragged contexts (some sequences use fewer splits than the launch
has), several launches in a row on the same counters (as CUDA-graph replays are), GQA and MHA,
and prefill with context through the unsplit path.
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
# (q_lens, seq_lens, heads, kv heads, head dim, splits)
for q_lens, seq_lens, h, kv, d, splits in (
    ([1, 1, 1], [300, 5, 129], 8, 2, 16, 4),  # ragged decode: 4, 1 and 3 splits hold keys
    ([1], [70], 4, 4, 32, 8),  # MHA decode, 2 of 8 splits hold keys
    ([1, 1], [64, 1], 6, 2, 16, 2),  # contexts of exactly one tile and one key
    ([5, 1, 12], [20, 33, 12], 8, 2, 16, 1),  # prefill with context, decode, plain prefill (unsplit)
):
    q, k, v, table, sl, qs = case(q_lens, seq_lens, h, kv, d)
    ref = pa.paged_attention_ref(q, k, v, table, sl, qs, d ** -0.5)
    errs = []
    for _ in range(3):  # the counters must come back to zero after every launch
        got = torch.full_like(q, float("nan"))
        pa.paged_attention(q, k, v, table, sl, qs, d ** -0.5, max_q_len=max(q_lens), num_splits=splits, out=got)
        errs.append((got - ref).abs().max().item())
    counters = pa._counters.get(q.device, [torch.zeros(1)])[-1]
    out.append(dict(errs=errs, counters_zero=bool((counters == 0).all())))
print(json.dumps(out))
'''


def test_split_and_unsplit_paths_match_reference(triton_interpret):
    results = triton_interpret(_SCRIPT)
    assert len(results) == 4
    for r in results:
        assert all(e < 1e-4 for e in r["errs"]), r  # float32 throughout: rounding only (NaN fails too)
        assert r["counters_zero"], r


def test_splits_are_for_decode_only():
    import pytest
    import torch

    pa = pytest.importorskip("fms_worker.kernels.paged_attention")
    if pa.triton is None:
        pytest.skip("triton is not installed")
    q = torch.zeros(3, 2, 16)
    kc = torch.zeros(4, 16, 2, 16)
    with pytest.raises(ValueError, match="decode"):
        pa.paged_attention(q, kc, kc, torch.zeros(1, 1, dtype=torch.int32), torch.tensor([3], dtype=torch.int32),
                           torch.tensor([0, 3], dtype=torch.int32), 1.0, max_q_len=3, num_splits=2)
