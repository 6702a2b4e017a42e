"""Time the paged-attention kernel on decode shapes (bf16 and fp8 caches); print the KV bandwidth it reaches.

    python3 bench/attention_gpu.py                        # the kernel as the engine configures it
    python3 bench/attention_gpu.py --sweep --out a.json   # every key tile x warps x stages, per shape
    python3 bench/attention_gpu.py --baseline old/paged_attention.py   # an earlier version of the module beside it

Each shape is timed as a CUDA graph replays it (splits sized for any context up to 128K, as the engine's
decode graphs are); every timed call is first checked against the torch reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "worker"))
from decode_kernels_gpu import graph_us  # noqa: E402  (bench/ is the script's directory)
from fms_worker.kernels import paged_attention as pa  # noqa: E402

SHAPES = [(1, 600), (1, 4096), (16, 1024), (64, 1000), (256, 600)]  # (sequences, keys each)
SWEEP = [dict(BLOCK_N=n, num_warps=w, num_stages=s) for n, w, s in itertools.product((32, 64, 128), (2, 4, 8), (2, 3, 4))]


def case(batch: int, ctx: int, kv_dtype: torch.dtype, heads=32, kv=8, d=128, page=16):
    blocks = (ctx + page - 1) // page
    k = torch.randn(batch * blocks, page, kv, d, device="cuda").to(kv_dtype)
    v = torch.randn_like(k, dtype=torch.float32).to(kv_dtype)
    table = torch.randperm(batch * blocks, device="cuda").int().view(batch, blocks)
    q = torch.randn(batch, heads, d, device="cuda", dtype=torch.bfloat16)
    sl = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
    qs = torch.arange(batch + 1, dtype=torch.int32, device="cuda")
    scales = (0.5, 0.25) if kv_dtype != torch.bfloat16 else (1.0, 1.0)
    ref = pa.paged_attention_ref(q, k.float() * scales[0], v.float() * scales[1], table, sl, qs, d ** -0.5).float()
    kv_bytes = 2 * batch * ctx * kv * d * k.element_size()
    return (q, k, v, table, sl, qs, d ** -0.5), scales, ref, kv_bytes


def timed(mod, args, scales, ref, splits, config=None) -> float:
    kw = dict(max_q_len=1, num_splits=splits, k_scale=scales[0], v_scale=scales[1])
    if config is not None:
        kw["config"] = config
    fn = lambda: mod.paged_attention(*args, **kw)  # noqa: E731
    err = ((fn().float() - ref).norm() / ref.norm()).item()
    assert err < 2e-2, (config, err)
    return graph_us(fn)


def load_module(path: str):
    """An earlier version of kernels/paged_attention.py, to time beside the current one."""
    spec = importlib.util.spec_from_file_location("paged_attention_baseline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _try(fn):
    try:
        return fn()
    except triton.runtime.errors.OutOfResources:  # a tile too large for shared memory or registers
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--baseline", help="an earlier paged_attention.py to time beside the current one")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--shapes", nargs="+", help="sequences x keys, e.g. 64x1000 (default: all of SHAPES)")
    ap.add_argument("--kv", nargs="+", default=["bf16", "fp8"], choices=["bf16", "fp8"], help="cache dtypes")
    args = ap.parse_args()
    base = load_module(args.baseline) if args.baseline else None
    print(torch.cuda.get_device_name(), flush=True)
    rows = []
    shapes = [tuple(map(int, s.split("x"))) for s in args.shapes] if args.shapes else SHAPES
    dtypes = [{"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}[x] for x in args.kv]
    for (b, ctx), kv_dtype in itertools.product(shapes, dtypes):
        torch.manual_seed(0)
        a, scales, ref, kv_bytes = case(b, ctx, kv_dtype)
        splits = pa.num_splits_for(b, 8, 131072)
        row = dict(batch=b, context=ctx, kv=str(kv_dtype).split(".")[-1], splits=splits,
                   now_us=timed(pa, a, scales, ref, splits), now_config=pa.config_for(1, splits))
        if base is not None:
            row["baseline_us"] = timed(base, a, scales, ref, splits)
        if args.sweep:
            row["sweep"] = [dict(c, us=_try(lambda: timed(pa, a, scales, ref, splits, c))) for c in SWEEP]
            best = min((r for r in row["sweep"] if r["us"] is not None), key=lambda r: r["us"])
            row["best"] = best
        line = (f"decode batch {b:4d} ctx {ctx:5d} {row['kv']:>14s} splits {splits:2d}: now {row['now_us']:8.1f} us "
                f"({kv_bytes / row['now_us'] / 1e6:5.2f} TB/s of KV)")
        if base is not None:
            line += f" | baseline {row['baseline_us']:8.1f} us"
        if args.sweep:
            line += f" | best {best['us']:8.1f} us {best}"
        print(line, flush=True)
        rows.append(row)
    if args.out:
        args.out.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), rows=rows), indent=1))


if __name__ == "__main__":
    main()
