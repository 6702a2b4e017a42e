"""Latency of the tensor-parallel all-reduce as a decode step sees it: NCCL vs one-shot over symmetric memory.

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 python bench/all_reduce_gpu.py --gpus 2 --out ar.json

For each message size, 64 back-to-back all-reduces (an 8B decode step makes
64) are captured in one CUDA graph and replayed; the figure is microseconds
per all-reduce. Each rank contributes rank + 1, so the sum is checked too.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "worker"))
from fms_worker.parallel.one_shot import OneShotAllReduce  # noqa: E402

SIZES = [4096, 16384, 65536, 262144]  # bf16 elements: 8 KiB (batch 1 x 4096) .. 512 KiB (batch 64)
CHAIN, REPLAYS = 64, 20


def time_graph(fn) -> tuple[float, torch.Tensor]:
    """(microseconds per all-reduce of `fn`, which makes CHAIN of them, replayed from a CUDA graph; its output)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            out = fn()
    torch.cuda.current_stream().wait_stream(stream)
    for _ in range(3):
        graph.replay()
    torch.cuda.synchronize()
    dist.barrier()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(REPLAYS):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000 / (REPLAYS * CHAIN), out


def _rank(rank: int, world: int, port: int, out_path: str | None) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    device = torch.device("cuda", rank)
    torch.cuda.set_device(device)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
    one_shot = OneShotAllReduce.create(dist.group.WORLD, device, torch.bfloat16)
    expected = world * (world + 1) / 2
    rows = []
    for n in SIZES:
        inp = torch.full((n,), rank + 1.0, dtype=torch.bfloat16, device=device)
        scratch = torch.empty_like(inp)

        def nccl():
            for _ in range(CHAIN):
                scratch.copy_(inp)
                dist.all_reduce(scratch)
            return scratch

        us, out = time_graph(nccl)
        row = {"elements": n, "bytes": n * 2, "nccl_us": us, "nccl_correct": bool((out == expected).all())}
        if one_shot is not None and one_shot.fits(inp):
            def fast():
                out = None
                for _ in range(CHAIN):
                    out = one_shot(inp)
                return out

            us, out = time_graph(fast)
            row |= {"one_shot_us": us, "one_shot_correct": bool((out == expected).all())}
        rows.append(row)
    if rank == 0:
        report = {"gpu": torch.cuda.get_device_name(), "world_size": world, "torch": torch.__version__,
                  "one_shot": one_shot is not None, "chain": CHAIN, "rows": rows}
        print(f"{report['gpu']} x{world}: microseconds per all-reduce ({CHAIN} in one CUDA graph)")
        print(f"{'bytes':>8} {'NCCL':>8} {'one-shot':>9} {'ratio':>6}  correct")
        for r in rows:
            fast = r.get("one_shot_us")
            ratio = f"{r['nccl_us'] / fast:.2f}x" if fast else "-"
            print(f"{r['bytes']:>8} {r['nccl_us']:>8.1f} {fast or float('nan'):>9.1f} {ratio:>6}  "
                  f"{r['nccl_correct']}/{r.get('one_shot_correct')}")
        if out_path:
            Path(out_path).write_text(json.dumps(report, indent=2))
    dist.barrier()
    dist.destroy_process_group()


def run_worlds(rank_fn, gpus: list[int], out: Path | None, *extra) -> None:
    """rank_fn(rank, world, port, part_path, *extra) in one process per rank, for each world size in `gpus`
    that this machine has; rank 0 writes part_path; the parts are joined into `out`."""
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    os.environ.setdefault("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1")
    reports = []
    for world in [g for g in gpus if g <= torch.cuda.device_count()]:
        part = out.with_suffix(f".tp{world}.json") if out else None
        with socket.socket() as s:  # a free port: several of these may run at once on one machine
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        mp.spawn(rank_fn, args=(world, port, str(part) if part else None, *extra), nprocs=world, join=True)
        if part and part.exists():
            reports.append(json.loads(part.read_text()))
    if out:
        out.write_text(json.dumps(reports, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    run_worlds(_rank, args.gpus, args.out)


if __name__ == "__main__":
    main()
