"""The fused all-reduce + residual add + RMSNorm against what it replaces, checked and timed on GPUs.

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 python bench/reduce_norm_gpu.py --gpus 2 4 --out rn.json

For each row count (decode batch) a chain of 64 calls, as a decode step of an
8B model makes, is captured in one CUDA graph: each call sums every rank's
partial rows, adds the previous call's residual and normalizes, with the
parity alternating as in the decoder. Five chains: the fused kernel
(parallel/reduce_norm.py), its push variant and its LL variant (words that
carry their own flags; each where the rows fit its slot), the one-shot
all-reduce followed by the compiled add+norm (what the worker ran before), and
the one-shot all-reduce alone. Microseconds per call. Each fused
chain's last residual must equal, bit for
bit, the chain recomputed from the gathered partials summed in rank order in
float32, and every rank must hold the same residual. The normed rows go through
two bf16 roundings (the normalized value, then its product with the weight)
after an inverse RMS that may differ from torch's in the last float32 bit, so
they must agree within two bf16 steps. `--check` runs only the checks (tests/gpu).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "worker"))
from all_reduce_gpu import CHAIN, run_worlds, time_graph  # noqa: E402  (this directory is on sys.path)
from fms_worker.layers import fused  # noqa: E402
from fms_worker.parallel.one_shot import OneShotAllReduce  # noqa: E402
from fms_worker.parallel.reduce_norm import AllReduceAddNorm  # noqa: E402

HIDDEN, EPS = 4096, 1e-5
ROWS = [1, 4, 8, 16, 32, 64, 256]
CHECK_ROWS = [1, 3, 32, 130, 256]  # 130: two rows for some programs (128 programs at most)


def _reference(parts: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor):
    """The chain from the gathered partials [world, rows, hidden], summed in rank order in float32."""
    s = parts[0].float()
    for p in parts[1:]:
        s = s + p.float()
    s = s.to(residual.dtype)
    normed = None
    for _ in range(CHAIN):
        normed, residual = fused._add_rms_norm(s, residual, weight, EPS)
    return normed, residual


def _rank(rank: int, world: int, port: int, out_path: str | None, check_only: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    dtype = torch.bfloat16
    max_bytes = max(ROWS + CHECK_ROWS) * HIDDEN * dtype.itemsize
    one_shot = OneShotAllReduce.create(dist.group.WORLD, device, dtype, max_bytes)
    pull_op = AllReduceAddNorm.create(dist.group.WORLD, device, dtype, max_bytes)
    push_op = AllReduceAddNorm.create(dist.group.WORLD, device, dtype, max_bytes, push=True)
    ll_op = AllReduceAddNorm.create(dist.group.WORLD, device, dtype, max_bytes, ll=True)
    assert None not in (one_shot, pull_op, push_op, ll_op), "symmetric memory rendezvous failed"
    fused.enable()
    g = torch.Generator(device=device).manual_seed(1234)
    weight = (1 + 0.1 * torch.randn(HIDDEN, device=device, generator=g)).to(dtype)  # same on every rank
    rows_out, failures = [], []
    for rows in (CHECK_ROWS if check_only else ROWS):
        x = torch.randn(rows, HIDDEN, device=device, generator=torch.Generator(device=device).manual_seed(rank + 7)
                        ).to(dtype)
        res0 = torch.randn(rows, HIDDEN, device=device, generator=g).to(dtype)

        def fused_chain(op):
            def chain():
                normed, residual = None, res0
                for i in range(CHAIN):
                    normed, residual = op(x, residual, weight, EPS, i % 2)
                return normed, residual
            return chain

        def unfused_chain():
            normed, residual = None, res0
            for _ in range(CHAIN):
                normed, residual = fused.add_rms_norm(one_shot(x), residual, weight, EPS)
            return normed, residual

        def one_shot_chain():
            y = None
            for _ in range(CHAIN):
                y = one_shot(x)
            return y

        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ref_normed, ref_residual = _reference(torch.stack(parts), res0, weight)
        row = {"rows": rows}
        for name, op in (("fused", pull_op), ("push", push_op), ("ll", ll_op)):
            if x.numel() > op.capacity:  # a push slot is a world-th of the buffer, an LL slot half that
                continue
            us, (normed, residual) = time_graph(fused_chain(op))  # outputs as the last replay left them
            residuals = [torch.empty_like(residual) for _ in range(world)]
            dist.all_gather(residuals, residual)
            step = ref_normed.float().abs().clamp_min(1e-3) / 128  # a bf16 step at the reference's magnitude
            steps = ((normed.float() - ref_normed.float()).abs() / step).max().item()
            checks = {f"{name}_residual_exact": bool(torch.equal(residual, ref_residual)),
                      f"{name}_ranks_equal": all(torch.equal(r, residuals[0]) for r in residuals),
                      f"{name}_normed_within_two_steps": steps <= 2}
            row |= {f"{name}_us": us, f"{name}_normed_max_steps": steps, **checks}
            if not all(checks.values()):
                failures.append(row)
        if not check_only:
            row["one_shot_add_norm_us"] = time_graph(unfused_chain)[0]
            row["one_shot_only_us"] = time_graph(one_shot_chain)[0]
        rows_out.append(row)
    if rank == 0:
        report = {"gpu": torch.cuda.get_device_name(), "world_size": world, "torch": torch.__version__,
                  "hidden": HIDDEN, "chain": CHAIN, "rows": rows_out}
        print(f"{report['gpu']} x{world}: microseconds per call ({CHAIN} in one CUDA graph), hidden {HIDDEN}")
        for r in rows_out:
            print(json.dumps(r))
        print("reduce-norm ok" if not failures else f"reduce-norm FAILED: {failures}")
        if out_path:
            Path(out_path).write_text(json.dumps(report, indent=2))
    dist.barrier()
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--check", action="store_true", help="only the checks, at a few row counts")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    run_worlds(_rank, args.gpus, args.out, args.check)


if __name__ == "__main__":
    main()
