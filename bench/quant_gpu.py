"""Quantization speed and memory through the engine (LLMEngine), printed as a table and written as JSON.

    python bench/random_model.py llama-3.1-8b /tmp/llama8b --tokenizer TOKENIZER_DIR
    python bench/quant_gpu.py /tmp/llama8b --out quant.json

- batch 1 (128-token prompt, 256 new tokens, greedy, EOS ignored) for bf16, int8 and int4;
- the 256-request offline set (bench/workload.py) for bf16 and fp8 (fp8 weights and fp8 KV cache);
- GPU bytes of the model's parameters for each;
- a 2:4 sparse vs dense matmul on the 8B MLP shape (random weights are not 2:4 sparse, so the
  engine cannot run them with sparsity 2:4; this measures the kernel alone).
Weights are random: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import subprocess
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402

from fms_worker.config import WorkerConfig  # noqa: E402
from fms_worker.engine.llm_engine import LLMEngine  # noqa: E402
from fms_worker.engine.types import SamplingParams  # noqa: E402


MEMORY = {"gpu_memory_utilization": 0.9}  # --gpu-memory-utilization; lower it to share the card
CHILD_TIMEOUT: list[float | None] = [None]  # --child-timeout
OFFLINE = {"bf16": ("none", "auto"), "fp8": ("fp8", "fp8"), "int8": ("int8", "auto"), "int4": ("int4", "auto")}


def make_engine(model_dir: Path, quantization: str, kv_cache_dtype: str = "auto", max_num_seqs: int = 256) -> LLMEngine:
    cfg = WorkerConfig.model_validate({
        "model": {"path": str(model_dir), "max_model_len": 4096}, "caching": dict(MEMORY),
        "precision": {"dtype": "bfloat16", "quantization": quantization, "kv_cache_dtype": kv_cache_dtype},
        "batching": {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": 8192},
    })
    return LLMEngine(cfg)


def weight_bytes(engine: LLMEngine) -> int:
    model = engine.runner.model
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in seen and t.device.type == "cuda":
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def batch1_tokens_per_s(engine: LLMEngine) -> float:
    req = workload.latency_request(128, 256)
    params = SamplingParams(temperature=0.0, max_tokens=req.max_tokens, ignore_eos=True)
    engine.generate([req.prompt_ids], SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True))  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = engine.generate([req.prompt_ids], params)
    dt = time.perf_counter() - t
    return len(out[0].outputs[0].token_ids) / dt


def offline(engine: LLMEngine) -> dict:
    reqs = workload.offline_set(256)
    engine.generate([r.prompt_ids[:32] for r in reqs[:8]], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True))
    torch.cuda.synchronize()
    t = time.perf_counter()
    outs = engine.generate([r.prompt_ids for r in reqs],
                           [SamplingParams(temperature=0.0, max_tokens=r.max_tokens, ignore_eos=True) for r in reqs])
    dt = time.perf_counter() - t
    gen = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"seconds": dt, "generated_tokens": gen, "output_tokens_per_s": gen / dt,
            "num_kv_blocks": engine.stats().num_kv_blocks}


def sparse24_matmul(n: int = 14336, k: int = 4096) -> dict:
    from torch.sparse import to_sparse_semi_structured

    from fms_worker.quantization.sparse24 import prune_24

    w = prune_24(torch.randn(n, k, device="cuda", dtype=torch.bfloat16))
    ws = to_sparse_semi_structured(w)
    out = {}
    for m in (1, 16, 256, 4096):
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        out[str(m)] = {"dense_us": _time(lambda: torch.nn.functional.linear(x, w)),
                       "sparse_us": _time(lambda: torch.nn.functional.linear(x, ws))}
    return out


def _time(fn, reps: int = 50) -> float:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e) * 1e3 / reps


def run_job(model_dir: Path, job: str) -> dict:
    """One measurement in this (fresh) process: 'batch1:SCHEME' or 'offline:SCHEME:KV_DTYPE'."""
    kind, scheme, *kv = job.split(":")
    if kind == "batch1":
        engine = make_engine(model_dir, scheme, max_num_seqs=8)
        return {"tokens_per_s": batch1_tokens_per_s(engine), "weight_bytes": weight_bytes(engine)}
    engine = make_engine(model_dir, scheme, kv[0] if kv else "auto")
    return {**offline(engine), "weight_bytes": weight_bytes(engine)}


def in_child(model_dir: Path, job: str) -> dict:
    """Each engine gets its own process, so nothing of the previous one's GPU memory is left behind."""
    cmd = [sys.executable, __file__, str(model_dir), "--job", job, "--gpu-memory-utilization",
           str(MEMORY["gpu_memory_utilization"])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT[0])
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {CHILD_TIMEOUT[0]} s"}
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("--out", type=Path, default=Path("quant_gpu.json"))
    ap.add_argument("--skip-offline", action="store_true")
    ap.add_argument("--skip-batch1", action="store_true")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--batch1-schemes", nargs="+", default=["none", "int8", "int4"])
    ap.add_argument("--child-timeout", type=float, help="seconds one measurement (one engine process) may take")
    ap.add_argument("--offline-schemes", nargs="+", default=["bf16", "fp8"], choices=list(OFFLINE),
                    help="the 256-request set for these (bf16 first: the others are compared with it)")
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    MEMORY["gpu_memory_utilization"] = args.gpu_memory_utilization
    CHILD_TIMEOUT[0] = args.child_timeout
    if args.job:
        print(json.dumps(run_job(args.model_dir, args.job)))
        return
    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "batch1": {}, "offline": {}}

    for scheme in () if args.skip_batch1 else args.batch1_schemes:
        results["batch1"][scheme] = in_child(args.model_dir, f"batch1:{scheme}")
        print(scheme, results["batch1"][scheme], flush=True)
        args.out.write_text(json.dumps(results, indent=2))  # partial results survive a timeout
    if not args.skip_offline:
        for label in args.offline_schemes:
            quant, kv = OFFLINE[label]
            results["offline"][label] = in_child(args.model_dir, f"offline:{quant}:{kv}")
            print(label, results["offline"][label], flush=True)
            args.out.write_text(json.dumps(results, indent=2))
    results["sparse24_matmul_14336x4096"] = sparse24_matmul()

    base = results["batch1"].get("none", {}).get("tokens_per_s", 1.0)
    print(f"\n{results['device']}, torch {results['torch']}")
    print(f"{'batch 1':<10}{'tok/s':>10}{'x bf16':>8}{'weights GiB':>13}")
    for scheme, r in results["batch1"].items():
        if "error" in r:
            print(f"{scheme:<10}failed: {r['error']}")
            continue
        print(f"{scheme:<10}{r['tokens_per_s']:>10.1f}{r['tokens_per_s'] / base:>8.2f}{r['weight_bytes'] / 2**30:>13.2f}")
    if results["offline"]:
        ob = results["offline"].get("bf16", {}).get("output_tokens_per_s", 1.0)
        print(f"{'offline':<10}{'tok/s':>10}{'x bf16':>8}{'weights GiB':>13}{'KV blocks':>11}")
        for label, r in results["offline"].items():
            if "error" in r:
                print(f"{label:<10}failed: {r['error']}")
                continue
            print(f"{label:<10}{r['output_tokens_per_s']:>10.1f}{r['output_tokens_per_s'] / ob:>8.2f}"
                  f"{r['weight_bytes'] / 2**30:>13.2f}{r['num_kv_blocks']:>11}")
    print(f"{'2:4 M':<10}{'dense us':>10}{'sparse us':>11}{'speedup':>9}")
    for m, r in results["sparse24_matmul_14336x4096"].items():
        print(f"{m:<10}{r['dense_us']:>10.1f}{r['sparse_us']:>11.1f}{r['dense_us'] / r['sparse_us']:>9.2f}")
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
