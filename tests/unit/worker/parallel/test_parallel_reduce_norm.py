"""The fused all-reduce + add + RMSNorm: its kernel through Triton's interpreter (float32: the interpreter
rounds to bf16 by truncation) as one rank among four whose peers have already written their rows and put
their flags, reading the peers' halves or (push) its own (its sum, the rows it writes, its flags, its
refusal of rows beyond a half or a push slot); the decoder handing it partial sums with alternating parity;
which projections defer their reduction; the row limit."""

from __future__ import annotations

import pytest
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


_KERNEL_LL = r'''
import json
import torch
from fms_worker.kernels import all_reduce_norm_ll as k
from fms_worker.layers.fused import _add_rms_norm

HALF, HIDDEN, PROGRAMS = 4096, 96, 128  # 96 columns: masked words (not a power of two)


def words_of(t):
    return t.contiguous().view(torch.int32).flatten().to(torch.int64) & 0xFFFFFFFF


def check(world, rank, parity, rows, dtype, calls=2):
    size = torch.tensor([], dtype=dtype).element_size()
    half_words, slot = HALF * size // 8, k.slot_words(HALF, world, size)
    n_words = rows * HIDDEN * size // 4
    bufs = [torch.zeros(2 * HALF, dtype=dtype) for _ in range(world)]
    epochs = torch.zeros(2 * PROGRAMS, dtype=torch.int32)
    ptrs = torch.tensor([b.data_ptr() for b in bufs])
    at = lambda q: parity * half_words + q * slot  # rank q's slot in a half, in words
    out = {}
    for call in range(1, calls + 1):
        g = torch.Generator().manual_seed(rows * 100 + rank * 10 + call)
        parts = [torch.randn(rows, HIDDEN, generator=g).to(dtype) for _ in range(world)]
        residual, weight = torch.randn(rows, HIDDEN, generator=g).to(dtype), torch.randn(HIDDEN, generator=g).to(dtype)
        for q in range(world):
            if q != rank:  # peer q's words of this call, carrying its epoch, already in this rank's slot q
                bufs[rank].view(torch.int64)[at(q): at(q) + n_words] = (call << 32) | words_of(parts[q])
        normed, res = k.reduce_add_rms_norm_ll(parts[rank], residual, weight, 1e-5, ptrs, epochs, rank, world, HALF,
                                               parity)
        total = parts[0].float()
        for p in parts[1:]:
            total = total + p.float()
        ref_normed, ref_res = _add_rms_norm(total.to(dtype), residual, weight, 1e-5)
        sent = (call << 32) | words_of(parts[rank])
        want_epochs = torch.zeros(2 * PROGRAMS, dtype=torch.int32)
        want_epochs[parity * PROGRAMS: parity * PROGRAMS + min(rows, PROGRAMS)] = call
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-3, atol=2e-3)
        out[f"call {call}"] = {
            "residual": torch.equal(res, ref_res),
            "normed": torch.allclose(normed.float(), ref_normed.float(), **tol),
            "own words in every rank's slot": all(
                torch.equal(b.view(torch.int64)[at(rank): at(rank) + n_words], sent) for b in bufs),
            "other half untouched": all(not b[(1 - parity) * HALF: (2 - parity) * HALF].any() for b in bufs),
            "epochs": torch.equal(epochs, want_epochs)}
    return out


res = {f"world {w} rank {r} parity {p} rows {n} {str(d)[6:]}": check(w, r, p, n, d)
       for w, r, p, n in [(4, 0, 0, 1), (4, 2, 1, 3), (4, 3, 0, 5), (2, 1, 1, 2), (3, 2, 0, 3)]
       for d in (torch.float32, torch.float16)}
try:  # a slot holds half the values of a push slot: a half of 384 float32 over 4 ranks, 96 pushed or 48 here
    x = torch.zeros(1, 96)
    k.reduce_add_rms_norm_ll(x, x, torch.ones(96), 1e-5, torch.zeros(4, dtype=torch.int64),
                             torch.zeros(256, dtype=torch.int32), 0, 4, 384, 0)
    res["refused"] = False
except ValueError as exc:
    res["refused"] = "exceed the buffer slot of 48" in str(exc)
try:
    x = torch.zeros(1, 95, dtype=torch.float16)
    k.reduce_add_rms_norm_ll(x, x, torch.ones(95, dtype=torch.float16), 1e-5, torch.zeros(4, dtype=torch.int64),
                             torch.zeros(256, dtype=torch.int32), 0, 4, 4096, 0)
    res["refused odd"] = False
except ValueError as exc:
    res["refused odd"] = "whole 4-byte words" in str(exc)
print(json.dumps(res))
'''


def test_ll_variant_sums_adds_normalizes_and_sends_tagged_words(triton_interpret):
    """The LL variant (kernels/all_reduce_norm_ll.py) as one rank among four (or two, or three) whose peers'
    words of this call (their epoch in the high half) are already in its slots, for two calls in a row: the
    residual is the rank-ordered sum's bit for bit, the normed rows close, its own words tagged with the call's
    epoch in every rank's slot, the other half untouched, the epoch counters of its programs advanced; float32
    (one value a word) and float16 (two); rows beyond a slot and rows of half words refused."""
    res = triton_interpret(_KERNEL_LL)
    assert res.pop("refused"), "rows beyond an LL slot were not refused"
    assert res.pop("refused odd"), "rows that are not whole words were not refused"
    for case, calls in res.items():
        for call, checks in calls.items():
            assert all(checks.values()), (case, call, checks)


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
                         ("pull", ["pull", "pull", "pull"]), ("ll", ["ll", "ll", "ll"])):
        monkeypatch.setenv("FMS_FUSED_NORM", value)
        assert [mode_from_env(w) for w in (2, 4, 8)] == modes, value


def test_ll_variant_compiles_to_strong_stores_and_polls_without_fences():
    """As compiled for Hopper (sm_90, on this CPU machine: bench/kernel_ptx.py): each word leaves in one strong
    8-byte store per rank, the receiver polls with volatile loads, and no fence or atomic is left: what the
    variant is for. Bf16 rows of 4,096 values on four ranks, 16 warps (2,048 words, four a thread)."""
    import importlib.util
    import re
    import sys
    from pathlib import Path

    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "bench"))
    import kernel_ptx
    import triton.language as tl

    from fms_worker.kernels import all_reduce_norm_ll as k

    sig = {name: "*i32" for name in ("x_ptr", "res_ptr", "w_ptr", "out_ptr", "res_out_ptr")}
    sig |= {"buf_ptrs": "*i64", "epochs": "*i32", "rank": "i32", "rows": "i32", "words": "i32", "half_words": "i32",
            "slot_words": "i32", "eps": "fp32", "hidden": "i32", "programs": "i32"}
    sig |= {name: "constexpr" for name in ("DTYPE", "PAIRS", "PARITY", "WORLD", "WORLD_P2", "ITERS", "BLOCK", "ASM",
                                         "USE_PDL")}
    consts = dict(DTYPE=tl.bfloat16, PAIRS=True, PARITY=1, WORLD=4, WORLD_P2=4, ITERS=1, BLOCK=2048, ASM=True,
                  USE_PDL=2)
    ptx = kernel_ptx.compile_kernel(k._reduce_add_norm_ll, sig, consts, 16, 1).asm["ptx"]
    assert ptx.count("st.relaxed.sys.global.b64") == 4 * 4  # four words a thread, to each of four ranks
    assert len(re.findall(r"ld\.volatile\.global", ptx)) >= 4 * 4
    assert not re.findall(r"\b(?:membar|fence|atom)\.", ptx)
