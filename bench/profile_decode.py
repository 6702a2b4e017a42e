"""Where a batch-1 decode step's time goes on the GPU: kernels by kind, and GPU idle time between steps.

    python bench/profile_decode.py MODEL_DIR --out profile.json [--quantization int8] [--steps 64] [--tp 2]

Runs the engine (bf16, CUDA graphs, async scheduling as configured) on one
128-token prompt, profiles `--steps` decode steps with torch.profiler and
reports per step: wall time, GPU busy time (sum of kernel durations), the
kernels grouped by kind (matmul, attention, norm/rotary/activation, sampling,
copies), with the bandwidth the matmuls reach on the weight bytes, and the idle
time between consecutive kernels, split at --gap-us into short gaps (one kernel
after another inside a step's graph: launch and drain) and long ones (waiting on
the host between steps).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "worker"))
import gpu_baseline  # noqa: E402
import workload  # noqa: E402
from fms_worker.config import WorkerConfig  # noqa: E402
from fms_worker.engine.llm_engine import LLMEngine  # noqa: E402
from fms_worker.engine.types import SamplingParams  # noqa: E402

KINDS = [  # first match wins; names as CUPTI reports them
    ("matmul", ("gemm", "gemv", "cutlass", "sm90", "matmul", "int4pack", "int8", "_mm_", "splitk", "dot")),
    ("attention", ("paged", "attention", "attn", "flash", "reduce_partials")),
    ("all-reduce", ("allreduce", "all_reduce", "nccl", "one_shot")),
    ("fused elementwise", ("triton_poi", "triton_red", "triton_per", "fused")),
    ("sampling", ("argmax", "softmax", "topk", "sort", "multinomial", "exponential")),
    ("copy/fill", ("copy", "fill", "memcpy", "memset", "index", "scatter", "gather", "cat")),
]


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def step_weight_bytes(model) -> int:
    """Parameter bytes a decode step reads: all but an untied embedding table, of which a step reads only its
    tokens' rows (a tied one is the LM head's weight, read whole)."""
    from fms_worker.layers.embedding import ParallelLMHead, VocabParallelEmbedding

    heads = [m.weight for m in model.modules() if isinstance(m, ParallelLMHead) and hasattr(m, "weight")]
    tables = [m.weight for m in model.modules() if isinstance(m, VocabParallelEmbedding)]
    unread = sum(t.numel() * t.element_size() for t in tables if not any(t is h for h in heads))
    return sum(p.numel() * p.element_size() for p in model.parameters()) - unread


def idle_gaps(kernels) -> list[float]:
    """Microseconds the GPU sat idle between one kernel's end and the next one's start (kernels of one stream,
    as a decode step's are; overlapping kernels count no gap)."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in kernels)
    gaps, end = [], None
    for start, stop in spans:
        if end is not None and start > end:
            gaps.append(start - end)
        end = stop if end is None else max(end, stop)
    return gaps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--quantization", default="none")
    ap.add_argument("--kv-cache-dtype", default="auto")
    ap.add_argument("--batch", type=int, default=1, help="decode this many sequences at once (512-token prompts)")
    ap.add_argument("--sync", action="store_true", help="async scheduling off")
    ap.add_argument("--gap-us", type=float, default=20.0,
                    help="idle gaps between kernels shorter than this count as inside a step")
    ap.add_argument("--tp", type=int, default=1, help="tensor-parallel degree: rank 0's kernels are profiled "
                                                      "(its weight slice; every rank runs the same step)")
    args = ap.parse_args()
    bw = gpu_baseline.copy_bandwidth()
    engine = LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(args.model), "max_model_len": 4096},
        "precision": {"dtype": "bfloat16", "quantization": args.quantization, "kv_cache_dtype": args.kv_cache_dtype},
        "batching": {"max_num_seqs": 256, "max_num_batched_tokens": 8192},
        "caching": {"prefix_caching": False},
        "runtime": {"device": "cuda", "async_scheduling": "off" if args.sync else "auto"},
        "parallel": {"tensor": args.tp},
    }))
    model = getattr(engine.runner, "local", engine.runner).model  # TP: rank 0's runner behind the broadcast
    weight_bytes = step_weight_bytes(model)
    req = workload.latency_request()
    params = SamplingParams(temperature=0.0, max_tokens=args.steps + 40, ignore_eos=True)
    engine.generate([req.prompt_ids], [SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)])  # warm-up
    prompts = [req.prompt_ids] if args.batch == 1 else [
        workload.latency_request(prompt_len=512, seed=i).prompt_ids for i in range(args.batch)]
    for i, prompt in enumerate(prompts):
        engine.add_request(f"p{i}", prompt, params)
    for _ in range(20):  # prefill and a few decode steps outside the window
        engine.step()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        t = time.perf_counter()
        for _ in range(args.steps):
            engine.step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t
    while engine.has_unfinished():
        engine.step()

    by_kind: dict[str, float] = defaultdict(float)
    by_name: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    for e in kernels:
        us = e.time_range.elapsed_us()  # a kernel's own duration
        by_name[e.name][0] += us
        by_name[e.name][1] += 1
    if not kernels:  # older layouts: kernels only in the aggregated view
        for avg in prof.key_averages():
            if avg.self_device_time_total > 0:
                by_name[avg.key] = [avg.self_device_time_total, avg.count]
    for name, (us, _) in by_name.items():
        by_kind[kind_of(name)] += us
    gaps = idle_gaps(kernels)
    short = [g for g in gaps if g < args.gap_us]
    kernels = kernels or [None] * int(sum(c for _, c in by_name.values()))
    busy_us = sum(by_kind.values())
    step_us = wall * 1e6 / args.steps
    per_step = {k: v / args.steps for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])}
    matmul_us = per_step.get("matmul", 0.0)
    res = {
        "gpu": torch.cuda.get_device_name(), "model": str(args.model), "quantization": args.quantization,
        "kv_cache_dtype": args.kv_cache_dtype, "batch": args.batch, "tp": args.tp,
        "async_scheduling": engine.async_scheduling, "copy_bandwidth_Bps": bw,
        "weight_bytes": weight_bytes,  # read per step: the embedding table is left out unless tied to the head
        "steps": args.steps, "wall_us_per_step": step_us, "gpu_busy_us_per_step": busy_us / args.steps,
        "weight_read_us_at_copy_bandwidth": weight_bytes / bw * 1e6,
        "matmul_bandwidth_Bps": weight_bytes / (matmul_us * 1e-6) if matmul_us else None,
        "kernels_per_step": len(kernels) / args.steps, "us_per_step_by_kind": per_step,
        "gap_us": args.gap_us, "short_gaps_per_step": len(short) / args.steps,
        "short_gap_us_per_step": sum(short) / args.steps,
        "long_gap_us_per_step": (sum(gaps) - sum(short)) / args.steps,
        "short_gap_median_us": sorted(short)[len(short) // 2] if short else None,
        "top_kernels": [{"name": n[:120], "us_per_step": v[0] / args.steps, "calls_per_step": v[1] / args.steps}
                        for n, v in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:25]],
    }
    args.out.write_text(json.dumps(res, indent=2))
    print(f"{res['gpu']}, {args.model}, TP {args.tp}, batch {args.batch}, quantization {args.quantization}, "
          f"KV {args.kv_cache_dtype}, async {engine.async_scheduling}")
    print(f"per decode step: wall {step_us:.0f} us, GPU busy {res['gpu_busy_us_per_step']:.0f} us "
          f"({res['gpu_busy_us_per_step'] / step_us:.0%}), {res['kernels_per_step']:.0f} kernels; weights at the copy "
          f"bandwidth {res['weight_read_us_at_copy_bandwidth']:.0f} us")
    for k, v in per_step.items():
        print(f"  {k:<20} {v:8.1f} us")
    if gaps:
        print(f"idle between kernels a step: {res['short_gap_us_per_step']:.0f} us in "
              f"{res['short_gaps_per_step']:.0f} gaps under {args.gap_us:g} us (median "
              f"{res['short_gap_median_us']:.2f} us), {res['long_gap_us_per_step']:.0f} us in longer ones")
    if res["matmul_bandwidth_Bps"]:
        print(f"matmuls read the weights at {res['matmul_bandwidth_Bps'] / 1e12:.2f} TB/s "
              f"({res['matmul_bandwidth_Bps'] / bw:.0%} of the copy bandwidth)")
    for row in res["top_kernels"][:12]:
        print(f"  {row['us_per_step']:8.1f} us  x{row['calls_per_step']:.0f}  {row['name']}")


if __name__ == "__main__":
    main()
