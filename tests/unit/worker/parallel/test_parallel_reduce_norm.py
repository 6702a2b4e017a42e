"""The fused all-reduce + add + RMSNorm kernel through Triton's interpreter (float32: the interpreter rounds
to bf16 by truncation), as one rank among four whose peers have already written their rows and put their
flags: its sum, its own copy, its flags, its refusal of rows beyond a buffer half."""

from __future__ import annotations

_KERNEL = r'''
import json
import torch
from fms_worker.kernels import all_reduce_norm as k
from fms_worker.layers.fused import _add_rms_norm

WORLD, HALF, PAD, HIDDEN = 4, 4096, 2304, 96  # 96 columns: not a power of two, so masked


def check(rank, parity, rows):
    g = torch.Generator().manual_seed(rows * 10 + rank)
    parts = [torch.randn(rows, HIDDEN, generator=g) for _ in range(WORLD)]
    residual, weight = torch.randn(rows, HIDDEN, generator=g), torch.randn(HIDDEN, generator=g)
    bufs = [torch.zeros(2 * HALF) for _ in range(WORLD)]
    pads = [torch.zeros(PAD, dtype=torch.int32) for _ in range(WORLD)]
    base, programs = parity * HALF, k.grid_size(rows)
    slot = lambda p, q: (parity * k.MAX_PROGRAMS.value + p) * WORLD + q
    for q in range(WORLD):
        if q != rank:  # peer q wrote its rows into its half and put its flags in this rank's pad
            bufs[q][base: base + rows * HIDDEN] = parts[q].flatten()
            for p in range(programs):
                pads[rank][slot(p, q)] = 1
    ptrs = [torch.tensor([t.data_ptr() for t in ts]) for ts in (bufs, pads)]
    out, res = k.reduce_add_rms_norm(parts[rank], residual, weight, 1e-5, *ptrs, rank, WORLD, HALF, parity)
    ref_out, ref_res = _add_rms_norm(parts[0] + parts[1] + parts[2] + parts[3], residual, weight, 1e-5)
    flags_out = True
    for q in range(WORLD):
        if q != rank:
            want = torch.zeros(PAD, dtype=torch.int32)
            for p in range(programs):
                want[slot(p, rank)] = 1
            flags_out &= torch.equal(pads[q], want)
    return {"residual": torch.equal(res, ref_res),
            "normed": torch.allclose(out, ref_out, rtol=1e-5, atol=1e-6),
            "own rows copied": torch.equal(bufs[rank][base: base + rows * HIDDEN], parts[rank].flatten()),
            "other half untouched": not bufs[rank][(1 - parity) * HALF: (2 - parity) * HALF].any(),
            "peer flags consumed": not pads[rank].any(),
            "own flag in every peer's pad": flags_out}


res = {f"rank {r} parity {p} rows {n}": check(r, p, n) for r, p, n in [(0, 0, 1), (2, 1, 3), (3, 0, 5)]}
try:
    x = torch.zeros(2, 64)
    k.reduce_add_rms_norm(x, x, torch.ones(64), 1e-5, torch.zeros(4, dtype=torch.int64),
                          torch.zeros(4, dtype=torch.int64), 0, 4, 100, 0)
    res["refused"] = False
except ValueError as exc:
    res["refused"] = "exceed the buffer half" in str(exc)
print(json.dumps(res))
'''


def test_one_rank_sums_adds_normalizes_and_signals(triton_interpret):
    res = triton_interpret(_KERNEL)
    assert res.pop("refused"), "rows beyond a buffer half were not refused"
    for case, checks in res.items():
        assert all(checks.values()), (case, checks)
