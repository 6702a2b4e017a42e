"""The fused all-reduce + add + RMSNorm: its kernel through Triton's interpreter (float32: the interpreter
rounds to bf16 by truncation) as one rank among four whose peers have already written their rows and put
their flags, reading the peers' halves or (push) its own (its sum, the rows it writes, its flags, its
refusal of rows beyond a half or a push slot); the decoder handing it partial sums with alternating parity;
which projections defer their reduction; the row limit."""

from __future__ import annotations

import torch

from fms_worker.layers import fused
from fms_worker.layers.linear import RowParallelLinear
from fms_worker.layers.tree_linear import TreeLinearMethod
from fms_worker.models.llama import LlamaArgs, LlamaForCausalLM
from fms_worker.parallel.reduce_norm import max_rows, mode_from_env
from fms_worker.parallel.state import ParallelState, get_parallel_state, set_parallel_state

_KERNEL = r'''
import json
import torch
from fms_worker.kernels import all_reduce_norm as k
from fms_worker.layers.fused import _add_rms_norm

WORLD, HALF, PAD, HIDDEN = 4, 4096, 2304, 96  # 96 columns: not a power of two, so masked


def check(rank, parity, rows, push):
    g = torch.Generator().manual_seed(rows * 10 + rank)
    parts = [torch.randn(rows, HIDDEN, generator=g) for _ in range(WORLD)]
    residual, weight = torch.randn(rows, HIDDEN, generator=g), torch.randn(HIDDEN, generator=g)
    bufs = [torch.zeros(2 * HALF) for _ in range(WORLD)]
    pads = [torch.zeros(PAD, dtype=torch.int32) for _ in range(WORLD)]
    base, programs, size = parity * HALF, k.grid_size(rows), k.slot_size(HALF, WORLD, push)
    flag = lambda p, q: (parity * k.MAX_PROGRAMS.value + p) * WORLD + q
    rows_of = lambda buf, q: buf[base + q * size * push: base + q * size * push + rows * HIDDEN]  # rank q's
    for q in range(WORLD):
        if q != rank:  # peer q wrote its rows (into its own half, or pushed into this rank's) and put its flags
            rows_of(bufs[rank] if push else bufs[q], q)[:] = parts[q].flatten()
            for p in range(programs):
                pads[rank][flag(p, q)] = 1
    ptrs = [torch.tensor([t.data_ptr() for t in ts]) for ts in (bufs, pads)]
    out, res = k.reduce_add_rms_norm(parts[rank], residual, weight, 1e-5, *ptrs, rank, WORLD, HALF, parity, push)
    ref_out, ref_res = _add_rms_norm(parts[0] + parts[1] + parts[2] + parts[3], residual, weight, 1e-5)
    flags_out = True
    for q in range(WORLD):
        if q != rank:
            want = torch.zeros(PAD, dtype=torch.int32)
            for p in range(programs):
                want[flag(p, rank)] = 1
            flags_out &= torch.equal(pads[q], want)
    written = [rows_of(bufs[q], rank) for q in (range(WORLD) if push else [rank])]
    return {"residual": torch.equal(res, ref_res),
            "normed": torch.allclose(out, ref_out, rtol=1e-5, atol=1e-6),
            "own rows written": all(torch.equal(w, parts[rank].flatten()) for w in written),
            "other half untouched": not bufs[rank][(1 - parity) * HALF: (2 - parity) * HALF].any(),
            "peer flags consumed": not pads[rank].any(),
            "own flag in every peer's pad": flags_out}


res = {f"rank {r} parity {p} rows {n} push {push}": check(r, p, n, push)
       for r, p, n in [(0, 0, 1), (2, 1, 3), (3, 0, 5)] for push in (False, True)}
try:
    x = torch.zeros(2, 64)
    k.reduce_add_rms_norm(x, x, torch.ones(64), 1e-5, torch.zeros(4, dtype=torch.int64),
                          torch.zeros(4, dtype=torch.int64), 0, 4, 100, 0)
    res["refused"] = False
except ValueError as exc:
    res["refused"] = "exceed the buffer half" in str(exc)
try:  # a push slot is a world-th of a half: 2 x 64 fit a half of 256, not a slot of 64
    x = torch.zeros(2, 64)
    k.reduce_add_rms_norm(x, x, torch.ones(64), 1e-5, torch.zeros(4, dtype=torch.int64),
                          torch.zeros(4, dtype=torch.int64), 0, 4, 256, 0, push=True)
    res["refused push"] = False
except ValueError as exc:
    res["refused push"] = "exceed the buffer slot" in str(exc)
print(json.dumps(res))
'''


def test_one_rank_sums_adds_normalizes_and_signals(triton_interpret):
    res = triton_interpret(_KERNEL)
    assert res.pop("refused"), "rows beyond a buffer half were not refused"
    assert res.pop("refused push"), "rows beyond a push slot were not refused"
    for case, checks in res.items():
        assert all(checks.values()), (case, checks)


class _AttentionAsQueries(torch.nn.Module):
    """Stands in for rotary + paged attention (the layers' data flow is what is tested)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.head_dim = head_dim

    def forward(self, positions, q, k, v, meta):
        return q


class _RecordingReduceNorm:
    """Stands in for the fused kernel as rank 0 of two whose peer holds zeros: the add+norm, and each parity."""

    def __init__(self):
        self.parities = []

    def fits(self, x):
        return True

    def __call__(self, x, residual, weight, eps, parity):
        self.parities.append(parity)
        return fused.add_rms_norm(x, residual, weight, eps)


def _layers_then_final_norm(model, x):
    residual = None
    for layer in model.model.layers:
        x, residual = layer(torch.arange(x.shape[0]), x, residual, None)
    return model.model.final_norm(x, residual)


def test_decoder_norms_take_the_partial_sums_with_parity_alternating_across_steps():
    """Every fused call's parity differs from the call before, within a forward and from one to the next:
    the kernel's buffer halves depend on it (kernels/all_reduce_norm.py)."""
    args = LlamaArgs(vocab_size=32, hidden_size=32, intermediate_size=64, num_layers=3, num_heads=4, num_kv_heads=2,
                     head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, max_position=64,
                     tie_embeddings=False)
    model = LlamaForCausalLM(args, torch.float32)
    g = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.data.copy_(torch.randn(p.shape, generator=g) * 0.2)
    for layer in model.model.layers:
        layer.self_attn.attn = _AttentionAsQueries(args.head_dim)
    assert all(layer.partial for layer in model.model.layers)
    x = torch.randn(3, args.hidden_size, generator=g)
    ref = _layers_then_final_norm(model, x)  # one rank: the norms' all-reduce is the identity
    recorder = _RecordingReduceNorm()
    before = get_parallel_state()
    set_parallel_state(ParallelState(tp_rank=0, tp_size=2, reduce_norm=recorder))
    try:
        outs = [_layers_then_final_norm(model, x) for _ in range(2)]
    finally:
        set_parallel_state(before)
    assert all(torch.equal(out, ref) for out in outs)
    assert recorder.parities == [0, 1] * args.num_layers * 2  # per forward: 2 x layers calls, the last the final norm


def test_row_parallel_projections_defer_their_reduction_only_without_bias_or_tree_mode():
    assert RowParallelLinear(16, 8).defers_reduce
    assert not RowParallelLinear(16, 8, bias=True).defers_reduce
    assert not RowParallelLinear(16, 8, quant_method=TreeLinearMethod()).defers_reduce


def test_row_limit_falls_with_the_degree():
    assert [max_rows(w) for w in (2, 4, 8, 16)] == [32, 8, 2, 1]
    assert [max_rows(w, push=True) for w in (2, 4, 8)] == [64, 64, 2]  # push: measured on two and four ranks


def test_switch_reads_off_pull_and_push(monkeypatch):
    monkeypatch.delenv("FMS_FUSED_NORM", raising=False)
    assert [mode_from_env(w) for w in (2, 4, 8)] == ["push", "push", "pull"]  # push where it was measured faster
    for value, modes in (("0", [None, None, None]), ("1", ["push", "push", "pull"]), ("push", ["push", "push", "push"]),
                         ("pull", ["pull", "pull", "pull"])):
        monkeypatch.setenv("FMS_FUSED_NORM", value)
        assert [mode_from_env(w) for w in (2, 4, 8)] == modes, value
