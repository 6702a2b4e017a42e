"""Tensor parallelism on one host's GPUs: batch-1 speed, offline throughput and greedy equality per degree.

    NCCL_NVLS_ENABLE=0 python bench/tp_gpu.py --model-dir /tmp/llama8b --out tp.json [--tp 1 2 4]
    NCCL_NVLS_ENABLE=0 python bench/tp_gpu.py --random llama-3.1-8b --out tp.json   # writes the weights first

For each degree: the worker engine (bf16, one process per GPU, NCCL) on
- batch 1: a 128-token prompt, 256 new tokens (tokens/s of the decode);
- offline: bench/workload.py's 256 requests (100-1024 in and out, EOS ignored), output tokens/s;
- greedy equality with TP=1 on 8 prompts x 64 tokens. In bf16 a different
  reduction order can flip a near-tie on random weights, so the figure is how
  many sequences are identical and where the first one diverges.
The topology NVML reports (NVLink peers, domains) is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "hack"))
import workload  # noqa: E402

os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off on the lent machines


MEMORY = {"gpu_memory_utilization": 0.85}  # --gpu-memory-utilization


def make_engine(model_dir: Path, tp: int, max_tokens_budget: int):
    from fms_worker.config import WorkerConfig
    from fms_worker.engine.llm_engine import LLMEngine

    return LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(model_dir), "max_model_len": 4096}, "precision": {"dtype": "bfloat16"},
        "runtime": {"device": "cuda"}, "parallel": {"tensor": tp},
        "batching": {"max_num_seqs": 256, "max_num_batched_tokens": max_tokens_budget},
        "caching": dict(MEMORY),
    }))


def close(engine) -> None:
    if hasattr(engine.runner, "close"):
        engine.runner.close()
    del engine
    torch.cuda.empty_cache()


def run(engine, reqs: list[workload.Request]) -> tuple[float, int, list[list[int]]]:
    from fms_worker.engine.types import SamplingParams

    params = [SamplingParams(temperature=0.0, max_tokens=r.max_tokens, ignore_eos=True) for r in reqs]
    torch.cuda.synchronize()
    t = time.perf_counter()
    outs = engine.generate([r.prompt_ids for r in reqs], params)
    torch.cuda.synchronize()
    tokens = [o.outputs[0].token_ids for o in outs]
    return time.perf_counter() - t, sum(len(x) for x in tokens), tokens


def measure(model_dir: Path, tp: int, num_requests: int, equality_reqs) -> dict:
    engine = make_engine(model_dir, tp, 8192)
    try:
        t0 = time.perf_counter()
        run(engine, [workload.latency_request(max_tokens=16)])  # warm-up
        print(f"TP={tp}: warm-up done in {time.perf_counter() - t0:.1f} s", flush=True)
        dt, n, _ = run(engine, [workload.latency_request()])
        res = {"tp": tp, "batch1_tokens_per_s": n / dt, "async_scheduling": engine.async_scheduling}
        print(f"TP={tp}: batch 1 {n / dt:.1f} tok/s", flush=True)
        dt, n, _ = run(engine, workload.offline_set(num_requests))
        res |= {"offline_tokens_per_s": n / dt, "offline_seconds": dt, "offline_output_tokens": n}
        res["greedy"] = run(engine, equality_reqs)[2]
        res["kv_blocks"] = engine.scheduler.kv.pool.num_blocks
        topo = getattr(engine, "topology", None)
        res["topology"] = topo.summary() if topo is not None else None
        return res
    finally:
        close(engine)


def compare(reference: list[list[int]], other: list[list[int]]) -> dict:
    same = sum(a == b for a, b in zip(reference, other))
    first = min((next(i for i, (x, y) in enumerate(zip(a, b)) if x != y) for a, b in zip(reference, other) if a != b),
                default=None)
    return {"identical_sequences": same, "sequences": len(reference), "first_divergence_token": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model-dir", type=Path)
    src.add_argument("--random", help="write random weights of this shape (bench/random_model.py) first")
    ap.add_argument("--random-dir", type=Path, default=Path("/tmp/fms-tp-bench-model"))
    ap.add_argument("--tp", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--num-requests", type=int, default=256)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    args = ap.parse_args()
    MEMORY["gpu_memory_utilization"] = args.gpu_memory_utilization
    model_dir = args.model_dir
    if args.random:
        import random_model
        from tiny_models import write_word_tokenizer

        model_dir = random_model.write(args.random, args.random_dir, tokenizer=None)
        write_word_tokenizer(model_dir, random_model.config_for(args.random)["vocab_size"])
    degrees = [t for t in args.tp if t <= torch.cuda.device_count()]
    equality = [workload.latency_request(prompt_len=64 + 32 * i, max_tokens=64, seed=i) for i in range(8)]
    results = []
    for tp in degrees:
        results.append(measure(model_dir, tp, args.num_requests, equality))
        print(f"TP={tp}: batch 1 {results[-1]['batch1_tokens_per_s']:.1f} tok/s, offline "
              f"{results[-1]['offline_tokens_per_s']:.0f} tok/s", flush=True)
        args.out.write_text(json.dumps({"partial": True, "results": results}))  # survives a timeout
    reference = next((r["greedy"] for r in results if r["tp"] == 1), None)
    for r in results:
        r["greedy_vs_tp1"] = compare(reference, r["greedy"]) if reference is not None else None
    report = {"gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "model": str(model_dir), "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"), "results": results}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{report['gpu']} x{report['gpus']}, {model_dir}")
    if results and results[0]["topology"]:
        print("topology:", json.dumps(results[0]["topology"]))
    print(f"{'TP':>3} {'batch-1 tok/s':>14} {'offline tok/s':>14} {'KV blocks':>10}  greedy vs TP=1")
    for r in results:
        g = r["greedy_vs_tp1"] or {}
        print(f"{r['tp']:>3} {r['batch1_tokens_per_s']:>14.1f} {r['offline_tokens_per_s']:>14.0f} {r['kv_blocks']:>10}  "
              f"{g.get('identical_sequences')}/{g.get('sequences')} identical, first divergence at "
              f"{g.get('first_divergence_token')}")


if __name__ == "__main__":
    main()
