"""Batch-1 decode kernels of the 8B shape, one at a time, CUDA-graph timed on one GPU:

- the int8 GEMV's shipped tiles with each int8 -> float32 conversion (plain convert, the magic-number float
  by an integer add, and by a byte permute, exact or offset), against cuBLAS bf16 for the same shape; the
  autotuned GEMVs (int8, bf16, packed int4) and cuBLAS also "cold": calls rotating over copies of the weights
  that together exceed L2, as a decode step reads them (one copy stays partly in L2 on the smaller shapes);
- the gated gate-up GEMV (silu(gate) * up in the epilogue) against the plain GEMV plus the compiled activation;
- the fused rotary + KV-cache write against the compiled rotary plus two index_copy_ launches;
- the int4 Triton kernels (group 128) against PyTorch's tinygemm on the same weights, at 1, 16 and 256 rows
  ("triton": the one-nibble kernels that FMS_INT4_PAIRS=0 selects; beside them the engine's default
  packed-pair paths: the GEMV of kernels/int4_gemv_packed.py at one row, the tiles' pair dequantization at 16
  and 256);
- paged attention of a decode step as a CUDA graph captures it (splits sized for the longest context), at a
  few contexts, optionally against an earlier version of the kernel's module (`--attention-baseline FILE`);
- a decode step's rotary, cache write and attention: rope_cache then the attention kernel (two launches, plus
  the split merge) against the attention kernel rotating and storing the new tokens itself (`rope-attention`);
- the same int4 weights through GemLite's Triton kernels (`gemlite` on PyPI, its default kernel choice per row
  count), against ours and cuBLAS bf16 (this section needs `pip install gemlite`; nothing else here does).

    python3 bench/decode_kernels_gpu.py [--sections int8 rope int4 gemlite attention rope-attention]
        [--attention-baseline FILE] [--tp N] [--out decode_kernels.json]

`--tp N` times the matmuls at one tensor-parallel rank's shapes (column-parallel QKV, gate-up and head: N / tp
rows; row-parallel O and down: K / tp columns).
    (from the repository root)
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F
import triton

sys.path.insert(0, "worker")
from fms_worker.kernels import int8_matmul as km  # noqa: E402
from fms_worker.kernels.rope_cache import rope_cache  # noqa: E402
from fms_worker.layers import fused  # noqa: E402
from fms_worker.layers.rotary import RotaryEmbedding  # noqa: E402
from fms_worker.quantization.kv_fp8 import write_kv  # noqa: E402

SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096)]  # QKV, O, gate-up, down, head
ROW_PARALLEL = (1, 3)  # O and down: split along K under tensor parallelism; the others along N


def rank_shapes(tp: int) -> list[tuple[int, int]]:
    """SHAPES as one of `tp` ranks holds them."""
    return [(n, k // tp) if i in ROW_PARALLEL else (n // tp, k) for i, (n, k) in enumerate(SHAPES)]


def graph_us(fn) -> float:
    fn()  # compile (and autotune) outside the capture
    torch.cuda.synchronize()
    return triton.testing.do_bench_cudagraph(fn, rep=50) * 1e3


L2_CLEAR_BYTES = 160 << 20  # over three times an H100's 50 MB L2


def cold_copies(*tensors: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
    """Enough copies of a kernel's weight tensors that calls rotating over them read more than L2 holds between
    two reads of one copy (a decode step reads each weight once, from memory: `graph_us` on one copy keeps a
    small weight in L2)."""
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    count = max(2, -(-L2_CLEAR_BYTES // nbytes))
    return [tensors] + [tuple(t.clone() for t in tensors) for _ in range(count - 1)]


def cold_graph_us(call, copies: list[tuple[torch.Tensor, ...]]) -> float:
    """`graph_us` of `call(*copy)`, the captured calls rotating over `copies` (see `cold_copies`)."""
    turn = iter(range(1 << 62))
    return graph_us(lambda: call(*copies[next(turn) % len(copies)]))


def gemv_rows(dev, shapes: list[tuple[int, int]]) -> list[dict]:
    rows = []
    for n, k in shapes:
        w16 = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        q = torch.randint(-127, 128, (n, k), device=dev, dtype=torch.int8)
        s = torch.rand(n, device=dev, dtype=torch.bfloat16) * 0.01
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        ref = (x.float() @ q.float().t()) * s.float()
        row = dict(n=n, k=k, bf16_us=graph_us(lambda: F.linear(x, w16)))
        for magic in (0, 1, 2, 3):  # convert instruction, magic add, byte permutes (FMS_INT8_PERMUTE): exact, offset
            best = None
            for cfg in (c for c in km.gemv_configs(permute=True) if c["MAGIC"] == magic):
                y = km.int8_gemv(x, q, s, config=cfg)
                assert ((y.float() - ref).norm() / ref.norm()).item() < 1e-2, cfg
                t = graph_us(lambda: km.int8_gemv(x, q, s, config=cfg))
                if best is None or t < best[0]:
                    best = (t, cfg)
            row[f"magic_{magic}_us"], row[f"magic_{magic}_cfg"] = best
        row["tuned_us"] = graph_us(lambda: km.int8_matmul(x, q, s))
        row["tuned_TBps"] = n * k / row["tuned_us"] / 1e6
        # the same GEMV on the bf16 weights (FMS_BF16_GEMV), autotuned, against cuBLAS
        ref16 = F.linear(x, w16).float()
        assert ((km.gemv16(x, w16).float() - ref16).norm() / ref16.norm()).item() < 1e-2
        row["gemv16_us"] = graph_us(lambda: km.gemv16(x, w16))
        # as a decode step reads them: each call's weights not in L2 (the engine's kernels, autotuned)
        row["cold_tuned_us"] = cold_graph_us(lambda qc, sc: km.int8_matmul(x, qc, sc), cold_copies(q, s))
        row["cold_gemv16_us"] = cold_graph_us(lambda wc: km.gemv16(x, wc), cold_copies(w16))
        row["cold_bf16_us"] = cold_graph_us(lambda wc: F.linear(x, wc), cold_copies(w16))
        print(f"{n:>7} x {k:>5}: bf16 {row['bf16_us']:6.1f} us | convert {row['magic_0_us']:6.1f} | "
              f"magic {row['magic_1_us']:6.1f} | permute {row['magic_2_us']:6.1f} | offset permute "
              f"{row['magic_3_us']:6.1f} ({n * k / row['magic_3_us'] / 1e6:.2f} TB/s) | tuned {row['tuned_us']:6.1f} us "
              f"({row['tuned_TBps']:.2f} TB/s, "
              f"{row['bf16_us'] / row['tuned_us']:.2f}x bf16) | bf16 GEMV {row['gemv16_us']:6.1f} us "
              f"({2 * n * k / row['gemv16_us'] / 1e6:.2f} TB/s)", flush=True)
        print(f"{'':>17}  cold (each call's weights out of L2): int8 tuned {row['cold_tuned_us']:6.1f} us "
              f"({n * k / row['cold_tuned_us'] / 1e6:.2f} TB/s) | bf16 GEMV {row['cold_gemv16_us']:6.1f} us "
              f"({2 * n * k / row['cold_gemv16_us'] / 1e6:.2f} TB/s) | cuBLAS bf16 {row['cold_bf16_us']:6.1f} us",
              flush=True)
        rows.append(row)
    return rows


def int4_rows(dev, shapes: list[tuple[int, int]], group: int = 128) -> list[dict]:
    from fms_worker.kernels import int4_matmul as k4
    from fms_worker.quantization.int4 import _inner_k_tiles, pack_nibbles, quantize_int4

    rows = []
    for n, k in shapes:
        q, scale, zero = quantize_int4(torch.randn(n, k, device=dev) * 0.02, group)
        sz = torch.stack([scale, zero], dim=-1).bfloat16().contiguous()
        packed = pack_nibbles(q, group)
        interleaved = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)  # tinygemm's packer input: column 2j high
        tiny = torch._convert_weight_to_int4pack(interleaved, _inner_k_tiles(k))
        for m in (1, 16, 256):
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            ref = k4.int4_matmul_ref(x, packed, sz, group)
            got = k4.int4_matmul(x, packed, sz, group)
            assert ((got.float() - ref.float()).norm() / ref.float().norm()).item() < 1e-2
            t_tiny = graph_us(lambda: torch._weight_int4pack_mm(x, tiny, group, sz))
            t_triton = graph_us(lambda: k4.int4_matmul(x, packed, sz, group))
            row = dict(n=n, k=k, m=m, tinygemm_us=t_tiny, triton_us=t_triton, triton_TBps=n * k / 2 / t_triton / 1e6)
            extra = ""
            if m > 1:  # the tiles dequantizing two weights an instruction (the engine's default)
                got = k4.int4_matmul(x, packed, sz, group, pairs=True)
                row["pairs_rel_err"] = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
                row["pairs_us"] = graph_us(lambda: k4.int4_matmul(x, packed, sz, group, pairs=True))
                extra = f" | pair tiles {row['pairs_us']:7.1f} us (err {row['pairs_rel_err']:.1e})"
            if m == 1:  # the packed-pair GEMV (kernels/int4_gemv_packed.py), the engine's default
                from fms_worker.kernels.int4_gemv_packed import int4_gemv_packed

                got = int4_gemv_packed(x, packed, sz, group)
                row["packed_rel_err"] = ((got.float() - ref.float()).norm() / ref.float().norm()).item()
                row["packed_us"] = graph_us(lambda: int4_gemv_packed(x, packed, sz, group))
                row["cold_packed_us"] = cold_graph_us(lambda pc, zc: int4_gemv_packed(x, pc, zc, group),
                                                      cold_copies(packed, sz))
                extra = (f" | packed {row['packed_us']:7.1f} us ({n * k / 2 / row['packed_us'] / 1e6:.2f} TB/s, "
                         f"err {row['packed_rel_err']:.1e}; cold {row['cold_packed_us']:7.1f} us, "
                         f"{n * k / 2 / row['cold_packed_us'] / 1e6:.2f} TB/s)")
            rows.append(row)
            print(f"int4 {n:>7} x {k:>5}, {m:>3} rows: tinygemm {t_tiny:7.1f} us | triton {t_triton:7.1f} us "
                  f"({t_tiny / t_triton:.2f}x; {n * k / 2 / t_triton / 1e6:.2f} TB/s of packed weight){extra}", flush=True)
    return rows


def gemlite_rows(dev, shapes: list[tuple[int, int]], group: int = 128) -> list[dict]:
    """GemLite computes W ~ Wq * scale + shift per group (its "fma mode"); ours is (q - 8) * scale + zero, so
    its shift is zero - 8 * scale, written over the one its packer derives."""
    import gemlite
    from gemlite import DType, GemLiteLinear

    from fms_worker.kernels import int4_matmul as k4
    from fms_worker.quantization.int4 import pack_nibbles, quantize_int4

    name = torch.cuda.get_device_name().lower()
    if "h200" in name:  # GemLite ships tuned configs for the H100 only; the H200 is the same chip
        import os
        gemlite.load_config(os.path.join(os.path.dirname(gemlite.__file__), "configs", "h100.json"))
    rows = []
    for n, k in shapes:
        q, scale, zero = quantize_int4(torch.randn(n, k, device=dev) * 0.02, group)
        sz = torch.stack([scale, zero], dim=-1).bfloat16().contiguous()
        packed = pack_nibbles(q, group)
        w16 = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        lin = GemLiteLinear(4, group_size=group, in_features=k, out_features=n,
                            input_dtype=DType.BF16, output_dtype=DType.BF16)
        lin.pack(q.to(torch.uint8), scale.t().contiguous().bfloat16(), torch.zeros_like(scale.t()).bfloat16())
        assert lin.zeros.shape == zero.shape, (lin.zeros.shape, zero.shape)
        lin.zeros.data.copy_((zero - 8.0 * scale).bfloat16())
        for m in (1, 16, 256):
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            ref = k4.int4_matmul_ref(x, packed, sz, group).float()
            err = ((lin(x).float() - ref).norm() / ref.norm()).item()
            t_gl = graph_us(lambda: lin(x))
            t_ours = graph_us(lambda: k4.int4_matmul(x, packed, sz, group))
            t_bf16 = graph_us(lambda: F.linear(x, w16))
            rows.append(dict(n=n, k=k, m=m, gemlite_us=t_gl, ours_us=t_ours, bf16_us=t_bf16, gemlite_rel_err=err,
                             gemlite_TBps=n * k / 2 / t_gl / 1e6))
            print(f"gemlite {n:>7} x {k:>5}, {m:>3} rows: gemlite {t_gl:7.1f} us (err {err:.1e}) | ours {t_ours:7.1f} "
                  f"| bf16 {t_bf16:7.1f} | gemlite {n * k / 2 / t_gl / 1e6:.2f} TB/s, {t_bf16 / t_gl:.2f}x bf16",
                  flush=True)
    return rows


def attention_rows(dev, baseline: str | None) -> list[dict]:
    """The seventh session's attention shapes (bf16 cache) through bench/attention_gpu.py's cases and timer."""
    import attention_gpu as ag

    mods = {"now": ag.pa}
    if baseline:
        mods["baseline"] = ag.load_module(baseline)
    rows = []
    for b, ctx in ((1, 128), (1, 384), (1, 2048), (8, 384), (64, 1024)):
        args, scales, ref, _ = ag.case(b, ctx, torch.bfloat16)
        splits = ag.pa.num_splits_for(b, 8, 131072)  # a graph captured for any context up to the model's length
        row = dict(batch=b, context=ctx, splits=splits)
        for name, mod in mods.items():
            row[f"{name}_us"] = ag.timed(mod, args, scales, ref, splits)
        rows.append(row)
        print("attention " + ", ".join(f"{key} {val:.1f}" if isinstance(val, float) else f"{key} {val}"
                                       for key, val in row.items()) + " (us)", flush=True)
    return rows


def rope_attention_rows(dev) -> list[dict]:
    """rope_cache + paged attention vs paged attention given the new tokens (NewTokens), 8B heads per GPU at TP=1
    (32 query / 8 KV) and TP=2 (16 / 4), splits as a graph captured for a 4,096-token model length has them."""
    import attention_gpu as ag

    rows = []
    d, page = 128, 16
    rotary = RotaryEmbedding(d, 131072, 500000.0, None)
    cos, sin = rotary.cos.to(dev), rotary.sin.to(dev)
    for b, ctx, h, hkv in ((1, 384, 32, 8), (1, 2048, 32, 8), (1, 384, 16, 4), (64, 1024, 32, 8)):
        blocks = -(-(ctx + 1) // page)
        cache = torch.randn(2, b * blocks * page, hkv, d, device=dev, dtype=torch.bfloat16)
        table = torch.arange(b * blocks, device=dev, dtype=torch.int32).view(b, blocks)
        sl = torch.full((b,), ctx + 1, device=dev, dtype=torch.int32)
        qs = torch.arange(b + 1, device=dev, dtype=torch.int32)
        pos = (sl - 1).long()
        slots = table[:, -1].long() * page + pos % page
        qkv = torch.randn(b, h + 2 * hkv, d, device=dev, dtype=torch.bfloat16)
        q, k, v = qkv[:, :h], qkv[:, h:h + hkv], qkv[:, h + hkv:]
        kc, vc = (c.view(-1, page, hkv, d) for c in cache)
        splits = ag.pa.num_splits_for(b, hkv, 4096)
        out = torch.empty_like(q)

        def two():
            rope_cache(q, k, v, cache[0], cache[1], slots, pos, cos, sin)
            ag.pa.paged_attention(q, kc, vc, table, sl, qs, d ** -0.5, max_q_len=1, num_splits=splits, out=out)

        new = ag.pa.NewTokens(k, v, slots, cos, sin)
        row = dict(batch=b, context=ctx, heads=h, kv_heads=hkv, splits=splits, two_kernels_us=graph_us(two),
                   fused_us=graph_us(lambda: ag.pa.paged_attention(q, kc, vc, table, sl, qs, d ** -0.5, max_q_len=1,
                                                                   num_splits=splits, out=out, new=new)))
        rows.append(row)
        print(f"rotary + cache write + attention, batch {b}, context {ctx}, {h}/{hkv} heads, {splits} splits: "
              f"rope_cache + attention {row['two_kernels_us']:6.1f} us, in one kernel {row['fused_us']:6.1f} us",
              flush=True)
    return rows


def gated_row(dev) -> dict:
    n, k = 14336, 4096
    q = torch.randint(-127, 128, (2 * n, k), device=dev, dtype=torch.int8)
    s = torch.rand(2 * n, device=dev, dtype=torch.bfloat16) * 0.01
    x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
    act = fused.maybe_compiled("silu_and_mul", fused._silu_and_mul)
    unfused = graph_us(lambda: act(km.int8_matmul(x, q, s)))
    gated = graph_us(lambda: km.int8_gemv(x, q, s, gated=True))
    print(f"gate-up {2 * n} x {k} + activation: GEMV + compiled silu-mul {unfused:6.1f} us, gated GEMV {gated:6.1f} us",
          flush=True)
    return dict(unfused_us=unfused, gated_us=gated)


def rope_row(dev, t: int = 1) -> dict:
    h, hkv, d = 32, 8, 128
    rotary = RotaryEmbedding(d, 131072, 500000.0, None)
    cos, sin = rotary.cos.to(dev), rotary.sin.to(dev)
    qkv = torch.randn(t, (h + 2 * hkv) * d, device=dev, dtype=torch.bfloat16)
    q, k, v = (a.view(t, -1, d) for a in qkv.split([h * d, hkv * d, hkv * d], dim=-1))
    cache = torch.zeros(2, 4096, hkv, d, device=dev, dtype=torch.bfloat16)
    slots = torch.arange(t, device=dev) * 7
    pos = torch.arange(t, device=dev) + 100
    rope = fused.maybe_compiled("rope", fused._rope)

    def unfused_path():
        qr, kr = rope(pos, q, k, cos, sin)
        write_kv(cache[0], slots, kr, 1.0)
        write_kv(cache[1], slots, v, 1.0)
        return qr

    unfused = graph_us(unfused_path)
    one = graph_us(lambda: rope_cache(q, k, v, cache[0], cache[1], slots, pos, cos, sin))
    print(f"rotary + KV write, {t} token(s): compiled rotary + 2 index_copy_ {unfused:6.1f} us, fused {one:6.1f} us",
          flush=True)
    return dict(tokens=t, unfused_us=unfused, fused_us=one)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--sections", nargs="+", default=["int8", "rope", "int4"],
                    choices=["int8", "rope", "int4", "gemlite", "attention", "rope-attention"])
    ap.add_argument("--attention-baseline", help="an earlier paged_attention.py to time beside the current one")
    ap.add_argument("--tp", type=int, default=1, help="the matmuls at one rank's shapes of this tensor degree")
    args = ap.parse_args()
    shapes = rank_shapes(args.tp)
    dev = torch.device("cuda")
    fused.enable(True)
    out = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, tp=args.tp)
    if "int8" in args.sections:
        out.update(gemv=gemv_rows(dev, shapes), gated=gated_row(dev))
    if "rope" in args.sections:
        out["rope"] = [rope_row(dev, 1), rope_row(dev, 64)]
    if "int4" in args.sections:
        out["int4"] = int4_rows(dev, shapes)
    if "attention" in args.sections:
        out["attention"] = attention_rows(dev, args.attention_baseline)
    if "rope-attention" in args.sections:
        out["rope_attention"] = rope_attention_rows(dev)
    if "gemlite" in args.sections:
        out["gemlite"] = gemlite_rows(dev, shapes)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
