"""int8 GEMV (batch 1) design sweep: a two-dimensional-accumulator GEMV over tiles, software-pipelining
stages and K splits, against `int8_matmul` (whatever this tree ships for one row) and cuBLAS bf16, on the 8B
shapes, CUDA-graph timed. Prints the best config per shape.

    python3 bench/int8_gemv_sweep.py   (on a GPU, from the repository root)

It produced the table in docs/benchmarks.md (H200, 2026-11-27) while `int8_matmul` still ran the first,
unpipelined GEMV (tree 7e44d2b); the winners became the shipped kernel's candidates
(`kernels/int8_matmul.py` _GEMV, K splits dropped: none won). The kernel here keeps the K split so the
sweep can be rerun as it was.
"""
import itertools
import sys

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

sys.path.insert(0, "worker")
from decode_kernels_gpu import graph_us  # noqa: E402  (bench/ is the script's directory)
from fms_worker.kernels.int8_matmul import int8_matmul  # noqa: E402


@triton.jit
def gemv2(X, Q, S, P, N, K, stride_qn, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr,
          SPLIT: tl.constexpr):
    pid = tl.program_id(0)
    sid = tl.program_id(1)
    rn = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    per = K // SPLIT
    q_ptr = Q + (rn % N).to(tl.int64)[:, None] * stride_qn + (sid * per + rk)[None, :]
    x_ptr = X + sid * per + rk
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    for k in tl.range(0, per, BLOCK_K, num_stages=STAGES):
        w = tl.load(q_ptr)
        xs = tl.load(x_ptr)
        acc += w.to(tl.float32) * xs.to(tl.float32)[None, :]
        q_ptr += BLOCK_K
        x_ptr += BLOCK_K
    out = tl.sum(acc, axis=1)
    if SPLIT == 1:
        out = out * tl.load(S + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(P + sid * N + rn, out.to(P.dtype.element_ty), mask=rn < N)


def run(x, q, s, cfg, y, part):
    """One launch of `cfg` = (BLOCK_N, BLOCK_K, warps, stages, split); a split's partials are summed by torch."""
    bn, bk, w, st, sp = cfg
    n, k = q.shape
    if sp == 1:
        gemv2[(triton.cdiv(n, bn), 1)](x, q, s, y, n, k, q.stride(0), BLOCK_N=bn, BLOCK_K=bk, STAGES=st, SPLIT=1, num_warps=w)
        return y
    gemv2[(triton.cdiv(n, bn), sp)](x, q, s, part, n, k, q.stride(0), BLOCK_N=bn, BLOCK_K=bk, STAGES=st, SPLIT=sp, num_warps=w)
    return (part.sum(0) * s.float()).to(x.dtype)


SHAPES = [(6144, 4096), (4096, 4096), (28672, 4096), (4096, 14336), (128256, 4096)]
CFGS = [c for c in itertools.product((2, 4, 8, 16), (512, 1024, 2048), (4, 8), (1, 3), (1, 4))
        if c[0] * c[1] / (32 * c[2]) <= 128]


def main() -> None:
    print(torch.cuda.get_device_name(), len(CFGS), "configs", flush=True)
    tot = {"bf16": 0, "gemv": 0, "new": 0}
    for n, k in SHAPES:
        w16 = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
        q = torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8)
        s = torch.rand(n, device="cuda", dtype=torch.bfloat16) * 0.01
        x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
        y = torch.empty(1, n, device="cuda", dtype=torch.bfloat16)
        part = torch.empty(4, n, device="cuda", dtype=torch.float32)
        ref = (x.float() @ q.float().t()) * s.float()
        best = None
        for cfg in CFGS:
            if k % (cfg[1] * cfg[4]):
                continue
            try:
                out = run(x, q, s, cfg, y, part)
                err = ((out.float() - ref).norm() / ref.norm()).item()
                if err > 1e-2:
                    print("bad", cfg, err)
                    continue
                t = triton.testing.do_bench(lambda: run(x, q, s, cfg, y, part), warmup=5, rep=20)
            except Exception as e:
                print("fail", cfg, type(e).__name__, str(e)[:100])
                continue
            if best is None or t < best[0]:
                best = (t, cfg)
        b = graph_us(lambda: F.linear(x, w16))
        g = graph_us(lambda: int8_matmul(x, q, s))
        nw = graph_us(lambda: run(x, q, s, best[1], y, part))
        tot["bf16"] += b
        tot["gemv"] += g
        tot["new"] += nw
        print(f"{n:>7} {k:>6}: bf16 {b:6.1f} us, int8_matmul {g:6.1f} ({b/g:.2f}x), new {nw:6.1f} ({b/nw:.2f}x, "
              f"{n*k/nw/1e3:.0f} GB/s) best {best[1]} (BLOCK_N, BLOCK_K, warps, stages, split)", flush=True)
    print("sum over shapes:", {k: round(v, 1) for k, v in tot.items()})


if __name__ == "__main__":
    main()
