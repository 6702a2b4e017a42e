"""Each scheme's CUDA kernel against the dense product of its own dequantized weight (8B-like shapes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fms_worker.kernels import int8_matmul as km
from fms_worker.layers.linear import MergedColumnParallelLinear, RowParallelLinear
from fms_worker.quantization.fp8 import Fp8LinearMethod, fp8_unsupported_reason
from fms_worker.quantization.int4 import Int4LinearMethod, dequantize_int4, quantize_int4
from fms_worker.quantization.int8 import Int8LinearMethod, dequantize_int8, quantize_int8
from fms_worker.quantization.kv_fp8 import read_kv, write_kv
from fms_worker.quantization.sparse24 import Sparse24LinearMethod, prune_24

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


def _rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _layer(method, w, dtype=torch.bfloat16):
    with torch.device(CUDA):
        layer = RowParallelLinear(w.shape[1], w.shape[0], params_dtype=dtype, quant_method=method)
    assert layer.weight.is_meta
    layer.weight.weight_loader(layer.weight, w)
    method.process_weights_after_loading(layer)
    return layer


@pytest.fixture
def w():
    return torch.randn(1024, 4096, device=CUDA) * 4096**-0.5


@pytest.mark.parametrize("m", [1, 7, 256])
def test_int8(w, m):
    x = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
    layer = _layer(Int8LinearMethod(), w)
    assert layer.int8_kernel == "triton"
    ref = x.float() @ (layer.qweight.float() * layer.scales.float()[:, None]).t()
    assert _rel(layer(x), ref) < 0.01
    assert _rel(layer(x), x.float() @ w.t()) < 0.03


def _int8_case(n, k, m, dtype=torch.bfloat16, seed=0):
    g = torch.Generator(device=CUDA).manual_seed(seed)
    q, scale = quantize_int8(torch.randn(n, k, device=CUDA, generator=g) * k**-0.5)
    x = torch.randn(m, k, device=CUDA, generator=g).to(dtype)
    scale = scale.to(dtype)  # as the layer stores it
    return x, q, scale, x.float() @ dequantize_int8(q, scale).t()


@pytest.mark.parametrize("n,k", [(1536, 576), (1000, 1000), (6144, 4096)])
@pytest.mark.parametrize("m", [1, 3, 5, 64, 1024])
def test_int8_triton_matmul_autotuned(n, k, m):
    """Decode and prefill sizes (ragged N/K, SmolLM2's 576) through the autotuner, against the dense product."""
    x, q, scale, ref = _int8_case(n, k, m)
    bias = torch.randn(n, device=CUDA, dtype=torch.bfloat16)
    y = km.int8_matmul(x, q, scale, bias)
    assert y.dtype == torch.bfloat16 and y.shape == (m, n)
    assert _rel(y, ref + bias.float()) < 0.01
    assert torch.equal(y, km.int8_matmul(x, q, scale, bias))  # K splits are summed in a fixed order
    if m in (1, 200):
        x16, q16, scale16, ref16 = _int8_case(n, k, m, torch.float16, seed=1)
        assert _rel(km.int8_matmul(x16, q16, scale16), ref16) < 0.01
    # float32 output (LM-head logits): bf16 x int8 products are exact in the float32 accumulator, so only
    # summation order separates it from the reference, far below bf16 output rounding (~1e-3 relative)
    y32 = km.int8_matmul(x, q, scale, bias, out_dtype=torch.float32)
    assert y32.dtype == torch.float32 and _rel(y32, ref + bias.float()) < 1e-4


@pytest.mark.parametrize("bucket,m", [(16, 11), (64, 64), (128, 300)])
def test_int8_triton_every_config(bucket, m):
    """Each candidate tile (the autotuner only ever runs the winner), whole and split, on ragged N and K."""
    x, q, scale, ref = _int8_case(1000, 1000, m)
    for cfg in km.configs_for(bucket):
        for split in (1, 3) if bucket <= 64 else (1,):
            y = km.int8_matmul(x, q, scale, config=dict(cfg, SPLIT_K=split))
            assert _rel(y, ref) < 0.01, (cfg, split)


def test_int8_triton_in_a_cuda_graph():
    """Warmed up (tuned) first, the call captures and replays like the engine's decode graphs do."""
    x, q, scale, _ = _int8_case(1024, 4096, 4)
    eager = km.int8_matmul(x, q, scale)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = km.int8_matmul(x, q, scale)
    x.copy_(torch.randn_like(x))
    graph.replay()
    assert torch.equal(out, km.int8_matmul(x, q, scale))
    assert not torch.equal(out, eager)


def _graph_time_us(fn, calls=20, replays=10):
    """Kernel time per call, launch overhead excluded: `calls` calls in one CUDA graph, replayed."""
    fn()  # autotunes outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (calls * replays)


@pytest.mark.parametrize("n,k", [(28672, 4096), (4096, 14336)])
def test_int8_triton_timing_vs_bf16(n, k):
    """Prints int8 (Triton) vs bf16 F.linear kernel times; decode should read the int8 weight near HBM speed."""
    q, scale = quantize_int8(torch.randn(n, k, device=CUDA) * k**-0.5)
    w = dequantize_int8(q, scale).bfloat16()
    scale = scale.bfloat16()
    for m in (1, 2, 4, 16, 64, 2048):
        x = torch.randn(m, k, device=CUDA, dtype=torch.bfloat16)
        t_bf16 = _graph_time_us(lambda: F.linear(x, w))
        t_int8 = _graph_time_us(lambda: km.int8_matmul(x, q, scale))
        best = (km._int8_gemv_tuned if m <= km.GEMV_MAX_M else km._int8_mm_tuned).best_config
        print(f"\nint8 matmul N={n} K={k} M={m}: bf16 {t_bf16:.1f} us, int8 {t_int8:.1f} us "
              f"({t_bf16 / t_int8:.2f}x), int8 weight {n * k / t_int8 / 1e3:.0f} GB/s, "
              f"{m * n * k * 2 / t_int8 / 1e6:.0f} TFLOP/s; {best}")
        assert _rel(km.int8_matmul(x, q, scale), x.float() @ w.float().t()) < 0.01


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("m", [1, 7, 256])
def test_int4_triton(w, group, m, dtype):
    x = torch.randn(m, 4096, device=CUDA, dtype=dtype)
    layer = _layer(Int4LinearMethod(group), w, dtype)
    assert layer.int4_kernel == "triton"
    q, scale, zero = quantize_int4(w.to(dtype), group)
    ref = x.float() @ dequantize_int4(q, scale.to(dtype), zero.to(dtype), group).t()
    assert _rel(layer(x), ref) < 0.01  # the kernel computes exactly our layout (nibble order, zero convention)
    logits = layer.quant_method.apply_float32(layer, x)
    assert logits.dtype == torch.float32 and _rel(logits, ref) < 2e-3


def test_int4_every_config():
    """Every GEMV and tile candidate (the autotuner only ever runs its winner), bf16, 8B-like widths."""
    from fms_worker.kernels import int4_matmul as k4
    from fms_worker.quantization.int4 import pack_nibbles

    g = torch.Generator(device=CUDA).manual_seed(0)
    for group in (64, 128):
        q, scale, zero = quantize_int4(torch.randn(1000, 4096, device=CUDA, generator=g) * 0.02, group)
        packed, sz = pack_nibbles(q, group), torch.stack([scale, zero], dim=-1).bfloat16().contiguous()
        for m, cfgs in ((1, k4.gemv_configs(group)), (1, k4.tile_configs(16)), (5, k4.tile_configs(16)), (40, k4.tile_configs(64)),
                        (300, k4.tile_configs(512))):
            x = torch.randn(m, 4096, device=CUDA, generator=g).bfloat16()
            ref = k4.int4_matmul_ref(x, packed, sz, group)
            for cfg in cfgs:
                assert _rel(k4.int4_matmul(x, packed, sz, group, config=cfg), ref) < 0.01, (group, m, cfg)
                if "GPS" not in cfg:  # the tiles' packed-pair dequantization (inline PTX)
                    got = k4.int4_matmul(x, packed, sz, group, config=cfg, pairs=True)
                    assert _rel(got, ref) < 0.01, (group, m, cfg, "pairs")
        gate, up = k4.int4_matmul_ref(x[:1], packed, sz, group).float().chunk(2, dim=-1)
        for cfg in k4.gemv_configs(group):
            got = k4.int4_gemv(x[:1].contiguous(), packed, sz, group, config=cfg, gated=True)
            assert _rel(got, F.silu(gate) * up) < 0.01, cfg


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_int4_packed_gemv(dtype):
    """The packed-pair GEMV (inline PTX, not yet used by the engine): every config, gated, and autotuned."""
    from fms_worker.kernels import int4_gemv_packed as kp
    from fms_worker.kernels import int4_matmul as k4
    from fms_worker.quantization.int4 import pack_nibbles

    g = torch.Generator(device=CUDA).manual_seed(0)
    for n, k, group in ((1000, 4096, 128), (512, 14336, 128), (300, 1536, 64)):
        q, scale, zero = quantize_int4(torch.randn(2 * n, k, device=CUDA, generator=g) * 0.02, group)
        packed, sz = pack_nibbles(q, group), torch.stack([scale, zero], dim=-1).to(dtype).contiguous()
        x = torch.randn(1, k, device=CUDA, generator=g).to(dtype)
        ref = k4.int4_matmul_ref(x, packed[:n], sz[:, :n].contiguous(), group, out_dtype=torch.float32)
        gate, up = k4.int4_matmul_ref(x, packed, sz, group, out_dtype=torch.float32).chunk(2, dim=-1)
        for cfg in kp.configs(group) + [None]:
            got = kp.int4_gemv_packed(x, packed[:n].contiguous(), sz[:, :n].contiguous(), group, config=cfg)
            assert _rel(got, ref) < 0.01, (n, k, group, cfg, _rel(got, ref))
            got = kp.int4_gemv_packed(x, packed, sz, group, config=cfg, gated=True)
            assert _rel(got, F.silu(gate) * up) < 0.01, (n, k, group, cfg)


def _merged_int4(gate, up):
    """A gated gate-up layer of SmolLM2's width (576: padded to the group size), int4 group 128."""
    method = Int4LinearMethod(128)
    with torch.device(CUDA):
        layer = MergedColumnParallelLinear(gate.shape[1], [gate.shape[0], up.shape[0]], params_dtype=torch.bfloat16,
                                           quant_method=method, gated=True)
    layer.weight.weight_loader(layer.weight, gate, 0)
    layer.weight.weight_loader(layer.weight, up, 1)
    method.process_weights_after_loading(layer)
    return layer


def test_int4_layer_through_the_packed_gemv(w, monkeypatch):
    """With the packed-pair kernels (the default; FMS_INT4_PAIRS=0 turns them off): a layer's one-row matmul, its float32 logits path and a
    gated layer's silu(gate) * up go through the packed-pair GEMV, more rows through the pair-dequantizing
    tiles, and all match the dequantized reference."""
    import fms_worker.quantization.int4 as q4
    from fms_worker.kernels import int4_gemv_packed as kp

    monkeypatch.setattr(q4, "PAIRS", True)
    calls = []
    real = kp.int4_gemv_packed
    monkeypatch.setattr(kp, "int4_gemv_packed", lambda *a, **k: calls.append(k.get("gated")) or real(*a, **k))
    x = torch.randn(1, 4096, device=CUDA, dtype=torch.bfloat16)
    layer = _layer(Int4LinearMethod(128), w, torch.bfloat16)
    q, scale, zero = quantize_int4(w.bfloat16(), 128)
    ref = x.float() @ dequantize_int4(q, scale.bfloat16(), zero.bfloat16(), 128).t()
    assert _rel(layer(x), ref) < 0.01
    assert _rel(layer.quant_method.apply_float32(layer, x), ref) < 0.01
    for m in (7, 256):  # more rows: the tiles with packed-pair dequantization
        xm = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
        refm = xm.float() @ dequantize_int4(q, scale.bfloat16(), zero.bfloat16(), 128).t()
        assert _rel(layer(xm), refm) < 0.01
    gate, up = (torch.randn(1536, 576, device=CUDA) * 0.04 for _ in range(2))
    merged = _merged_int4(gate, up)
    x = torch.randn(1, 576, device=CUDA, dtype=torch.bfloat16)
    dense = x.float() @ torch.cat([gate, up]).t()
    assert _rel(merged(x), F.silu(dense[:, :1536]) * dense[:, 1536:]) < 0.2  # int4 error at width 576
    assert calls == [False, False, True]


def test_int4_merged_odd_width():
    """SmolLM2-like width 576: padded to the group size, still on the Triton kernels; gated for one row."""
    gate, up = (torch.randn(1536, 576, device=CUDA) * 0.04 for _ in range(2))
    layer = _merged_int4(gate, up)
    method = layer.quant_method
    assert layer.int4_kernel == "triton" and layer.int4_k_pad == 64
    for m in (1, 5):
        x = torch.randn(m, 576, device=CUDA, dtype=torch.bfloat16)
        dense = x.float() @ torch.cat([gate, up]).t()
        assert _rel(method.apply(layer, x, None), dense) < 0.15
        assert _rel(layer(x), F.silu(dense[:, :1536]) * dense[:, 1536:]) < 0.2


@pytest.mark.skipif(torch.cuda.is_available() and fp8_unsupported_reason(CUDA) is not None, reason="needs sm89+")
@pytest.mark.parametrize("m", [1, 7, 256])
def test_fp8_w8a8(w, m):
    x = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
    layer = _layer(Fp8LinearMethod(), w)
    assert layer.qweight.dtype == torch.float8_e4m3fn
    assert _rel(layer(x), x.float() @ w.t()) < 0.05


def _same_or_no_further(got, ref, exact, compiled):
    """Eager: the fused rows are the projection's own pass bit for bit. Compiled, the fused kernel skips the
    bf16 rounding of its intermediate (normed rows, silu(gate) * up), so scales move by ~0.2% and the two
    outputs part by ~1-1.5% (H200): the fused one may be no further than the other from the exact product."""
    if not compiled:
        assert torch.equal(got, ref)
    else:
        assert _rel(got, exact) <= 1.05 * _rel(ref, exact) and _rel(got, ref) < 0.03, (
            _rel(got, exact), _rel(ref, exact), _rel(got, ref))


@pytest.mark.skipif(torch.cuda.is_available() and fp8_unsupported_reason(CUDA) is not None, reason="needs sm89+")
@pytest.mark.parametrize("compiled", [False, True])
def test_fp8_rows_from_the_norm(w, compiled):
    """Fused fp8 input (FMS_FP8_FUSED_INPUT, on by default): the fp8 rows an RMSNorm (with the residual add) or the gated activation writes give
    the projection what its own quantization pass would; bitwise in eager, within rounding compiled."""
    from fms_worker.layers import fused
    from fms_worker.quantization.fp8 import ROWS

    layer = _layer(Fp8LinearMethod(fused_input=True), w)
    assert layer.input_format() is ROWS
    fused.enable(compiled)
    try:
        for m in (1, 7, 256):
            x, res = (torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16) for _ in range(2))
            nw = torch.rand(4096, device=CUDA, dtype=torch.bfloat16) + 0.5
            h, r = fused.add_rms_norm(x, res, nw, 1e-5)
            rows, r2 = fused.add_rms_norm_into(ROWS, x, res, nw, 1e-5)
            ref, got = layer(h), layer(rows)
            assert got.shape == ref.shape and got.dtype == ref.dtype
            rf = r.float()
            exact = (rf * torch.rsqrt(rf.pow(2).mean(-1, keepdim=True) + 1e-5) * nw.float()) @ w.T
            _same_or_no_further(got, ref, exact, compiled)
            assert torch.equal(r2, r) or compiled
            g = torch.randn(m, 8192, device=CUDA, dtype=torch.bfloat16)
            ref, got = layer(fused.silu_and_mul(g)), layer(fused.silu_and_mul_into(ROWS, g))
            _same_or_no_further(got, ref, (F.silu(g[:, :4096].float()) * g[:, 4096:].float()) @ w.T, compiled)
    finally:
        fused.enable(False)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gemv16(w, dtype, monkeypatch):
    """FMS_BF16_GEMV: the int8 GEMV's loop on 16-bit weights, plain (with a bias) and gated, autotuned and through
    an unquantized layer with the switch on, against cuBLAS."""
    import fms_worker.layers.quant_method as qm
    from fms_worker.kernels import int8_matmul as km
    from fms_worker.layers.linear import MergedColumnParallelLinear

    w16, b = w.to(dtype), torch.randn(w.shape[0], device=CUDA, dtype=dtype)
    x = torch.randn(1, 4096, device=CUDA, dtype=dtype)
    assert km.gemv16_supported(x, w16)
    for cfg in km.gemv16_configs():
        assert _rel(km.gemv16(x, w16, b, config=cfg), F.linear(x, w16, b)) < 0.01, cfg
    assert _rel(km.gemv16(x, w16, b), F.linear(x, w16, b)) < 0.01
    gu = torch.randn(2 * 2048, 4096, device=CUDA, dtype=dtype) * 4096**-0.5
    gate, up = F.linear(x, gu).float().chunk(2, dim=-1)
    assert _rel(km.gemv16(x, gu, gated=True), F.silu(gate) * up) < 0.01
    monkeypatch.setattr(qm, "GEMV16", True)
    with torch.device(CUDA):
        layer = MergedColumnParallelLinear(4096, [2048, 2048], params_dtype=dtype, gated=True)
    layer.weight.data.copy_(gu)
    layer.quant_method.warm_up(layer, 256)
    assert _rel(layer(x), F.silu(gate) * up) < 0.01
    # more rows: cuBLAS and the activation, as without the switch
    assert _rel(layer(x.expand(3, -1).contiguous()), (F.silu(gate) * up).expand(3, -1)) < 0.01
    # float32 out (the LM head's logits): the accumulator unrounded, so nearer the float32 product than a
    # bf16 result can be
    exact = x.float() @ w16.float().t()
    y32 = km.gemv16(x, w16, out_dtype=torch.float32)
    assert y32.dtype == torch.float32 and (y32 - exact).abs().max() < 1e-3 * exact.abs().max()


def test_sparse24(w):
    w24 = prune_24(w)
    layer = _layer(Sparse24LinearMethod(), w24)
    assert type(layer.weight.data).__name__.startswith("SparseSemiStructured")
    for m in (1, 64, 256):
        x = torch.randn(m, 4096, device=CUDA, dtype=torch.bfloat16)
        assert _rel(layer(x), x.float() @ w24.t()) < 0.01


@pytest.mark.skipif(torch.cuda.is_available() and fp8_unsupported_reason(CUDA) is not None, reason="needs sm89+")
def test_fp8_kv_cache_round_trip():
    cache = torch.zeros(64, 8, 128, device=CUDA, dtype=torch.float8_e4m3fn)
    k = torch.randn(5, 8, 128, device=CUDA, dtype=torch.bfloat16)
    slots = torch.tensor([3, 9, 17, 40, 63], device=CUDA)
    write_kv(cache, slots, k, 0.5)
    assert _rel(read_kv(cache, slots, 0.5, torch.bfloat16), k) < 0.05


@pytest.mark.parametrize("n,k", [(384, 256), (256, 512), (1024, 256)])
@pytest.mark.parametrize("m", [1, 5, 37, 64])
def test_sparse24_small_shapes(n, k, m):
    """The tiny test model's shapes, token counts that are not multiples of the kernel tile."""
    w24 = prune_24(torch.randn(n, k, device=CUDA) * k**-0.5)
    layer = _layer(Sparse24LinearMethod(), w24)
    x = torch.randn(m, k, device=CUDA, dtype=torch.bfloat16)
    y = layer(x)
    assert y.is_contiguous()  # the paged-attention kernel reads q/k/v rows by stride
    assert _rel(y, x.float() @ w24.t()) < 0.01


def test_int8_gemv_every_config():
    """The batch-1 GEMV's tiles (the autotuner only ever runs the winner) on ragged N and K, bf16 and float32 out,
    with every int8 -> float32 conversion (the byte permute too, whether or not FMS_INT8_PERMUTE is set)."""
    x, q, scale, ref = _int8_case(1000, 1030, 1)
    assert any(c["MAGIC"] == 2 for c in km.gemv_configs(permute=True))
    for cfg in km.gemv_configs(permute=True):
        assert _rel(km.int8_gemv(x, q, scale, config=cfg), ref) < 0.01, cfg
        # MAGIC 3 carries an offset through its float32 sums (0.5-1.5e-4 on CPU); float32-out GEMVs do not tune with it
        tol = 5e-4 if cfg["MAGIC"] == 3 else 1e-4
        assert _rel(km.int8_gemv(x, q, scale, config=cfg, out_dtype=torch.float32), ref) < tol, cfg


@pytest.mark.parametrize("n,k", [(14336, 4096), (500, 1030)])
def test_int8_gated_gemv(n, k):
    """The gate-up GEMV with silu(gate) * up in its epilogue, every tile and the tuned one, against the dense
    product and the unfused path (matmul, then the activation) the layer takes for more rows."""
    x, q, scale, ref = _int8_case(2 * n, k, 1)
    gate, up = ref.chunk(2, dim=-1)
    want = F.silu(gate) * up
    for cfg in km.gemv_configs(permute=True):
        assert _rel(km.int8_gemv(x, q, scale, config=cfg, gated=True), want) < 0.01, cfg
    method = Int8LinearMethod()
    with torch.device(CUDA):
        layer = MergedColumnParallelLinear(k, [n, n], params_dtype=torch.bfloat16, quant_method=method, gated=True)
    w = dequantize_int8(q, scale.float())
    for shard in (0, 1):
        layer.weight.weight_loader(layer.weight, w[shard * n:(shard + 1) * n], shard)
    method.process_weights_after_loading(layer)
    fused_row = layer(x)
    gate_u, up_u = method.apply(layer, x, None).float().chunk(2, dim=-1)  # the GEMV without the epilogue
    unfused = F.silu(gate_u) * up_u
    assert fused_row.shape == (1, n)
    assert _rel(fused_row, want) < 0.01 and _rel(fused_row, unfused) < 0.01
