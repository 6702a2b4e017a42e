"""The fused rotary + KV-cache write kernel on the GPU (bf16, fp16, fp8 cache) against the unfused path."""

from __future__ import annotations

import pytest
import torch

from fms_worker.kernels.rope_cache import rope_cache, rope_cache_ref
from fms_worker.layers.rotary import RotaryEmbedding
from fms_worker.quantization.fp8 import fp8_unsupported_reason
from fms_worker.quantization.kv_fp8 import write_kv

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 8192}


@pytest.mark.parametrize("cache", ["model", "fp8"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("t,h,hkv,d", [(1, 32, 8, 128), (77, 32, 8, 128), (300, 9, 3, 64)])
def test_matches_the_unfused_path(cache, dtype, t, h, hkv, d):
    if cache == "fp8" and fp8_unsupported_reason(CUDA):
        pytest.skip(fp8_unsupported_reason(CUDA))
    cache_dtype = dtype if cache == "model" else torch.float8_e4m3fn
    with torch.device(CUDA):
        rotary = RotaryEmbedding(d, 131072, 500000.0, LLAMA3)
    g = torch.Generator(device=CUDA).manual_seed(t)
    slots_total = 4 * t + 16
    positions = torch.randint(0, 131072, (t,), device=CUDA, generator=g)
    slots = torch.randperm(slots_total, device=CUDA, generator=g)[:t]
    qkv = torch.randn(t, (h + 2 * hkv) * d, device=CUDA, generator=g).to(dtype) * 3
    split = [h * d, hkv * d, hkv * d]
    q, k, v = (x.view(t, -1, d) for x in qkv.clone().split(split, dim=-1))
    kc = torch.zeros(slots_total, hkv, d, device=CUDA, dtype=cache_dtype)
    vc = torch.zeros_like(kc)
    rope_cache(q, k, v, kc, vc, slots, positions, rotary.cos, rotary.sin, 0.5, 2.0)

    q0, k0, v0 = (x.view(t, -1, d) for x in qkv.clone().split(split, dim=-1))
    kc_ref, vc_ref = torch.zeros_like(kc), torch.zeros_like(vc)
    rope_cache_ref(q0, k0, v0, kc_ref, vc_ref, slots, positions, rotary.cos, rotary.sin, 0.5, 2.0)
    assert torch.equal(q, q0) or (q.float() - q0.float()).abs().max() <= 2 * torch.finfo(dtype).eps * q0.abs().max()
    for got, want in ((kc, kc_ref), (vc, vc_ref)):
        diff = (got[slots].float() - want[slots].float()).abs()
        assert (diff <= want[slots].float().abs() * 2 ** -6 + 1e-6).all()  # at most one fp8 step apart
    others = torch.ones(slots_total, dtype=torch.bool, device=CUDA)
    others[slots] = False
    assert not kc[others].float().any() and not vc[others].float().any()  # no other slot written

    # and against the model's eager path: RotaryEmbedding (eager), then write_kv
    q_e, k_e = rotary(positions, *(x.view(t, -1, d) for x in qkv.split(split, dim=-1)[:2]))
    kc_e = torch.zeros_like(kc)
    write_kv(kc_e, slots, k_e, 0.5)
    assert ((q.float() - q_e.float()).norm() / q_e.float().norm()).item() < 1e-2
    assert ((kc[slots].float() - kc_e[slots].float()).norm() / kc_e[slots].float().norm()).item() < 3e-2
