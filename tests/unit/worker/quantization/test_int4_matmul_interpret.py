"""The Triton int4 kernels on CPU, through Triton's interpreter, against dequantize + matmul in float32.

Every GEMV tile and every tensor-core tile family, group sizes 32/64/128 (group counts that a GEMV step
does not divide, so its masked steps run), float16 and float32 activations (the interpreter mishandles
bf16 dots; the GPU tests cover bf16), float32 output, the gated GEMV, and the autotuned entry points.
"""

from __future__ import annotations

import pytest

from fms_worker.kernels import int4_gemv_packed as kp
from fms_worker.kernels import int4_matmul as k4

_SCRIPT = r'''
import json

import torch
import torch.nn.functional as F

from fms_worker.kernels import int4_matmul as k4
from fms_worker.quantization.int4 import pack_nibbles, quantize_int4

gen = torch.Generator().manual_seed(0)
out = []


def case(n, k, group, dtype):
    q, scale, zero = quantize_int4(torch.randn(n, k, generator=gen) * k**-0.5, group)
    sz = torch.stack([scale, zero], dim=-1).to(dtype).contiguous()
    return pack_nibbles(q, group), sz


def rel(y, ref):
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


for n, k, group in ((48, 256, 128), (40, 384, 64), (33, 96, 32)):
    for dtype in (torch.float16, torch.float32):
        packed, sz = case(n, k, group, dtype)
        tol = 2e-3 if dtype == torch.float16 else 1e-5
        x1 = torch.randn(1, k, generator=gen).to(dtype)
        ref1 = k4.int4_matmul_ref(x1.float(), packed, sz.float(), group)
        for cfg in k4.gemv_configs(group):
            y = k4.int4_gemv(x1, packed, sz, group, config=cfg)
            assert y.shape == (1, n) and y.dtype == dtype
            out.append(dict(case=f"gemv {cfg} {n}x{k} g{group} {dtype}", err=rel(y, ref1), tol=tol))
        for m in (5, 33, 70):
            xm = torch.randn(m, k, generator=gen).to(dtype)
            refm = k4.int4_matmul_ref(xm, packed, sz, group)
            for cfg in k4.tile_configs(k4.m_bucket(m))[:2]:
                y = k4.int4_matmul(xm, packed, sz, group, config=cfg)
                assert y.shape == (m, n) and y.dtype == dtype
                out.append(dict(case=f"tile {cfg} M={m} {n}x{k} g{group} {dtype}", err=rel(y, refm), tol=tol))
        # float32 output straight from the accumulators (LM-head logits)
        y = k4.int4_matmul(x1, packed, sz, group, config=k4.gemv_configs(group)[0], out_dtype=torch.float32)
        out.append(dict(case=f"float32 out gemv g{group} {dtype}", err=rel(y, ref1), tol=1e-5 if dtype == torch.float32 else 1e-3))
        assert y.dtype == torch.float32
        # gated: silu(gate) * up of a [2N, K] weight
        gpacked, gsz = case(2 * n, k, group, dtype)
        gate, up = k4.int4_matmul_ref(x1.float(), gpacked, gsz.float(), group).chunk(2, dim=-1)
        want = F.silu(gate) * up
        for cfg in k4.gemv_configs(group)[:3]:
            y = k4.int4_gemv(x1, gpacked, gsz, group, config=cfg, gated=True)
            assert y.shape == (1, n)
            out.append(dict(case=f"gated {cfg} {n}x{k} g{group} {dtype}", err=rel(y, want), tol=tol))


# The autotuned entry points, timed by a stand-in that makes the last candidate win.
def fake_bench(fn, quantiles):
    fn()
    fake_bench.calls += 1
    return [1.0 / fake_bench.calls] * 3
fake_bench.calls = 0
for tuner in (k4._int4_gemv_tuned, k4._int4_gemv_gated_tuned, k4._int4_mm_tuned):
    tuner._do_bench = fake_bench
packed, sz = case(64, 256, 64, torch.float16)
for m in (1, 9):
    x = torch.randn(m, 256, generator=gen).half()
    ref = k4.int4_matmul_ref(x, packed, sz, 64)
    for _ in range(2):  # tuned, then from the autotuner's cache
        out.append(dict(case=f"autotuned M={m}", err=rel(k4.int4_matmul(x, packed, sz, 64), ref), tol=2e-3))
assert fake_bench.calls == len(k4.gemv_configs(64)) + len(k4.tile_configs(16)), fake_bench.calls
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def interpreted(triton_interpret):
    return triton_interpret(_SCRIPT)


def test_every_int4_kernel_matches_the_dense_product(interpreted):
    per_case = len(k4.gemv_configs(128)) + 3 * 2 + 1 + 3
    assert len(interpreted) == 3 * 2 * per_case + 4
    bad = [r for r in interpreted if not r["err"] < r["tol"]]
    assert not bad, bad


def test_gemv_steps_read_the_same_bytes_for_every_group_size():
    for group in (32, 64, 128):
        assert [c["GPS"] * group for c in k4.gemv_configs(group)] == [c["GPS"] * 128 for c in k4.gemv_configs(128)]


_PACKED = r'''
import json

import torch
import torch.nn.functional as F

from fms_worker.kernels import int4_gemv_packed as kp
from fms_worker.kernels import int4_matmul as k4
from fms_worker.quantization.int4 import pack_nibbles, quantize_int4

gen = torch.Generator().manual_seed(1)
out = []
# group counts that a step's GPS does not divide (masked steps), N not a multiple of BLOCK_N
for n, k, group in ((48, 256, 128), (40, 384, 64), (33, 96, 32), (20, 640, 128)):
    q, scale, zero = quantize_int4(torch.randn(2 * n, k, generator=gen) * k**-0.5, group)
    sz = torch.stack([scale, zero], dim=-1).half().contiguous()
    packed = pack_nibbles(q, group)
    x = torch.randn(1, k, generator=gen).half()
    ref = k4.int4_matmul_ref(x.float(), packed[:n], sz[:, :n].contiguous().float(), group)
    gate, up = k4.int4_matmul_ref(x.float(), packed, sz.float(), group).chunk(2, dim=-1)
    for cfg in kp.configs(group):
        y = kp.int4_gemv_packed(x, packed[:n], sz[:, :n].contiguous(), group, config=cfg)
        out.append(dict(case=f"{n}x{k} g{group} {cfg}", err=((y.float() - ref).norm() / ref.norm()).item()))
        want = F.silu(gate) * up
        y = kp.int4_gemv_packed(x, packed, sz, group, config=cfg, gated=True)
        out.append(dict(case=f"gated {n}x{k} g{group} {cfg}", err=((y.float() - want).norm() / want.norm()).item()))
print(json.dumps(out))
'''


def test_packed_gemv_matches_reference(triton_interpret):
    """The packed-pair GEMV's plain path (what its PTX computes, without the 16-bit rounding) in float16."""
    results = triton_interpret(_PACKED)
    assert len(results) == 4 * 2 * len(kp.configs(128))
    for r in results:
        assert r["err"] < 2e-3, r
