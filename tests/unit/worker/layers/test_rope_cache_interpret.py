"""The fused rotary + KV-cache write kernel on CPU, through Triton's interpreter, against the unfused path.

Checked against what the eager model does (RotaryEmbedding, then write_kv for K and V): float32 to
rounding, float16 to one unit in the last place; strided q/k/v views of one fused QKV output, head
counts and head dims that are not powers of two, padding rows that share one scratch slot.
"""

from __future__ import annotations

import pytest

_SCRIPT = r'''
import json

import torch

from fms_worker.kernels.rope_cache import rope_cache, rope_cache_ref, supported
from fms_worker.layers.rotary import RotaryEmbedding
from fms_worker.quantization.kv_fp8 import write_kv

gen = torch.Generator().manual_seed(0)
out = []
# (tokens, heads, kv heads, head dim, slots): Llama-like GQA, MHA with odd head counts, head dim 12 (half 6)
for t, h, hkv, d, s in ((5, 8, 2, 16, 40), (3, 6, 6, 12, 10), (1, 4, 1, 8, 7)):
    rotary = RotaryEmbedding(d, 64, 10000.0, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16})
    positions = torch.randint(0, 64, (t,), generator=gen)
    slots = torch.randperm(s, generator=gen)[:t]
    if t > 2:
        slots[-2:] = s - 1  # two padding rows writing one scratch slot, as CUDA-graph padding does
    for dtype in (torch.float32, torch.float16):
        qkv = torch.randn(t, (h + 2 * hkv) * d, generator=gen).to(dtype)
        q, k, v = (x.view(t, -1, d) for x in qkv.split([h * d, hkv * d, hkv * d], dim=-1))
        # the eager model's path
        q_ref, k_ref = rotary(positions, q.clone(), k.clone())
        kc_ref = torch.zeros(s, hkv, d, dtype=dtype)
        vc_ref = torch.zeros(s, hkv, d, dtype=dtype)
        write_kv(kc_ref, slots, k_ref, 1.0)
        write_kv(vc_ref, slots, v, 1.0)
        # the kernel, on views of the same fused output
        q_k = q.clone()  # [T, H, D] contiguous; the kernel also runs on the strided view below
        kc = torch.zeros(s, hkv, d, dtype=dtype)
        vc = torch.zeros(s, hkv, d, dtype=dtype)
        assert supported(q, kc)
        qkv_k = qkv.clone()
        qs, ks, vs = (x.view(t, -1, d) for x in qkv_k.split([h * d, hkv * d, hkv * d], dim=-1))
        rope_cache(qs, ks, vs, kc, vc, slots, positions, rotary.cos, rotary.sin)
        # the torch reference of the kernel's contract
        kc2, vc2 = torch.zeros_like(kc), torch.zeros_like(vc)
        rope_cache_ref(q_k, k.clone(), v, kc2, vc2, slots, positions, rotary.cos, rotary.sin)
        real = slots[: t - 2] if t > 2 else slots
        case = f"T={t} H={h} Hkv={hkv} D={d} {dtype}"
        ulp = 0.0 if dtype == torch.float32 else 2.0 ** -10
        for name, got, want in (("q", qs, q_ref), ("k cache", kc[real], kc_ref[real]), ("v cache", vc[real], vc_ref[real]),
                                ("q vs ref", qs, q_k), ("k vs ref", kc[real], kc2[real])):
            err = ((got.float() - want.float()).abs() / (want.float().abs() + 1)).max().item()
            out.append(dict(case=f"{case} {name}", err=err, tol=ulp + 1e-6))
        untouched = torch.ones(s, dtype=torch.bool)
        untouched[slots] = False
        out.append(dict(case=f"{case} other slots untouched", err=float(kc[untouched].abs().sum() + vc[untouched].abs().sum()),
                        tol=1e-30))
        # k and v themselves are left as they were (only q is rotated in place)
        out.append(dict(case=f"{case} k, v inputs kept", err=float((ks - k).abs().sum() + (vs - v).abs().sum()), tol=1e-30))
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def interpreted(triton_interpret):
    return triton_interpret(_SCRIPT)


def test_fused_rope_and_cache_write_match_the_eager_path(interpreted):
    assert len(interpreted) == 3 * 2 * 7
    bad = [r for r in interpreted if not r["err"] < r["tol"]]
    assert not bad, bad
