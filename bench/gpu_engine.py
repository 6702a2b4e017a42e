"""The engine on a GPU, side by side with transformers on the same weights.

    python bench/gpu_engine.py MODEL_DIR --out results.json [--skip-offline] [--skip-hf] [--quantization int8]

Prints a table and writes JSON:
- ceilings measured in this run: device-to-device copy bandwidth (bytes read + written) and bf16 matmul rate;
- latency: batch 1, 128-token prompt, 256 new tokens; tokens/s and the fraction of the bandwidth roofline
  (weight bytes + KV bytes read per token, over the measured bandwidth);
- offline: the 256-request set (bench/workload.py), output tokens/s, and the fraction of the offline ceiling,
  sum over the engine's own steps of max(bytes / bandwidth, flops / matmul rate);
- the transformers baseline on the same requests (batch 1, and static batches for the offline set);
- start-up time (load + warm-up + graph capture) and peak GPU memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
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


def _params(n: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)


class StepTrace:
    """Records (new tokens, keys read) of each engine step, for the offline ceiling."""

    def __init__(self, engine: LLMEngine):
        self.steps: list[tuple[int, int, int]] = []
        inner = engine.runner.launch  # execute() goes through launch() too

        def launch(sched):
            ctx = sum(s.start + s.num_new for s in sched.seqs)
            if sched.seqs:
                self.steps.append((sched.num_batched_tokens, len(sched.seqs), ctx))
            return inner(sched)

        engine.runner.launch = launch


def model_sizes(engine: LLMEngine) -> dict:
    model = engine.runner.model
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    params = sum(p.numel() for p in model.parameters())
    a = model.args
    kv_per_token = 2 * a.num_layers * a.num_kv_heads * a.head_dim * torch.tensor([], dtype=engine.dtype).element_size()
    return {"weight_bytes": weight_bytes, "params": params, "kv_bytes_per_token": kv_per_token,
            "layers": a.num_layers, "heads": a.num_heads, "head_dim": a.head_dim, "hidden": a.hidden_size}


def run_engine(engine: LLMEngine, reqs: list[workload.Request]) -> tuple[float, int, float | None]:
    t0 = time.perf_counter()
    for i, r in enumerate(reqs):
        engine.add_request(f"r{i}", r.prompt_ids, _params(r.max_tokens))
    first = None
    produced = 0
    while engine.has_unfinished():
        for out in engine.step():
            produced += len(out.outputs[0].new_token_ids)
            if first is None and out.outputs[0].new_token_ids:
                first = time.perf_counter() - t0
    torch.cuda.synchronize()
    return time.perf_counter() - t0, produced, first


def offline_ceiling(steps, sizes, bw, flops) -> float:
    total = 0.0
    for tokens, seqs, ctx in steps:
        bytes_ = sizes["weight_bytes"] + ctx * sizes["kv_bytes_per_token"]
        attn_flops = 4 * ctx * sizes["heads"] * sizes["head_dim"] * sizes["layers"]  # decode-dominated estimate
        fl = 2 * sizes["params"] * tokens + attn_flops
        total += max(bytes_ / bw, fl / flops)
    return total


def report(res: dict) -> None:
    bw, flops, sizes = res["copy_bandwidth_Bps"], res["matmul_flops"], res["sizes"]
    print(f"\n{res['gpu']}  copy {bw / 1e12:.2f} TB/s  matmul {flops / 1e12:.0f} TFLOP/s  "
          f"weights {sizes['weight_bytes'] / 1e9:.2f} GB  startup {res['startup_s']:.1f} s  "
          f"peak mem {res['peak_memory_bytes'] / 2**30:.1f} GiB")
    b1 = res["batch1"]
    hf1 = res.get("hf_batch1_tokens_per_s")
    print(f"batch 1: {b1['decode_tokens_per_s']:.1f} tok/s decode ({b1['tokens_per_s']:.1f} incl. prefill), "
          f"{100 * b1['fraction_of_roofline']:.1f}% of roofline {b1['roofline_tokens_per_s']:.1f}"
          + (f"; transformers {hf1:.1f} tok/s -> {b1['tokens_per_s'] / hf1:.1f}x" if hf1 else ""))
    if "offline" in res:
        o = res["offline"]
        hfo = res.get("hf_offline", {}).get("tokens_per_s")
        print(f"offline 256 req: {o['tokens_per_s']:.0f} tok/s, {100 * o['fraction_of_ceiling']:.1f}% of ceiling"
              + (f"; transformers {hfo:.0f} tok/s -> {o['tokens_per_s'] / hfo:.1f}x" if hfo else ""))



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--skip-offline", action="store_true")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--hf-offline", action="store_true", help="also run transformers on the offline set (slow)")
    ap.add_argument("--hf-offline-batch", type=int, default=64, help="transformers' static batch size")
    ap.add_argument("--quantization", default="none")
    ap.add_argument("--kv-cache-dtype", default="auto")
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--compare-sync", action="store_true",
                    help="also measure with async scheduling off, on the same engine (the overlap's gain)")
    args = ap.parse_args()
    res: dict = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "model": str(args.model),
                 "quantization": args.quantization, "enforce_eager": args.enforce_eager}
    bw = res["copy_bandwidth_Bps"] = gpu_baseline.copy_bandwidth()
    flops = res["matmul_flops"] = gpu_baseline.matmul_rate()
    lat_req = workload.latency_request()
    offline = workload.offline_set()

    torch.cuda.reset_peak_memory_stats()
    cfg = WorkerConfig.model_validate({
        "model": {"path": str(args.model), "max_model_len": 4096},
        "precision": {"dtype": "bfloat16", "quantization": args.quantization, "kv_cache_dtype": args.kv_cache_dtype},
        "batching": {"max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": 8192},
        "caching": {"prefix_caching": False},
        "runtime": {"device": "cuda", "enforce_eager": args.enforce_eager},
    })
    t = time.perf_counter()
    engine = LLMEngine(cfg)
    torch.cuda.synchronize()
    res["startup_s"] = time.perf_counter() - t
    sizes = res["sizes"] = model_sizes(engine)

    print(f"engine started in {res['startup_s']:.1f} s", flush=True)
    run_engine(engine, [workload.Request(lat_req.prompt_ids, 16)])  # warm-up
    dt, n, ttft = run_engine(engine, [lat_req])
    res["batch1"] = {"seconds": dt, "tokens": n, "ttft_s": ttft, "tokens_per_s": n / dt,
                     "decode_tokens_per_s": (n - 1) / (dt - ttft)}
    avg_ctx = len(lat_req.prompt_ids) + lat_req.max_tokens / 2
    roof = bw / (sizes["weight_bytes"] + avg_ctx * sizes["kv_bytes_per_token"])
    res["batch1"]["roofline_tokens_per_s"] = roof
    res["batch1"]["fraction_of_roofline"] = res["batch1"]["decode_tokens_per_s"] / roof
    res["async_scheduling"] = engine.async_scheduling
    if args.compare_sync and engine.async_scheduling:
        engine.async_scheduling = False
        dt, n, ttft = run_engine(engine, [lat_req])
        res["batch1_sync"] = {"tokens_per_s": n / dt, "decode_tokens_per_s": (n - 1) / (dt - ttft)}
        print(f"batch 1 with async scheduling off: {res['batch1_sync']['decode_tokens_per_s']:.1f} tok/s decode",
              flush=True)
        engine.async_scheduling = True

    trace = None
    if not args.skip_offline:
        trace = StepTrace(engine)
        dt, n, _ = run_engine(engine, offline)
        ceiling = offline_ceiling(trace.steps, sizes, bw, flops)
        useful = sum(r.max_tokens for r in offline)
        res["offline"] = {"seconds": dt, "output_tokens": n, "requested_tokens": useful, "tokens_per_s": n / dt,
                          "steps": len(trace.steps), "ceiling_seconds": ceiling, "fraction_of_ceiling": ceiling / dt}
        args.out.write_text(json.dumps(res, indent=2))
        if args.compare_sync and engine.async_scheduling:
            engine.async_scheduling = False
            dt, n, _ = run_engine(engine, offline)
            res["offline_sync"] = {"seconds": dt, "tokens_per_s": n / dt}
            print(f"offline with async scheduling off: {n / dt:.0f} tok/s", flush=True)
            engine.async_scheduling = True
    res["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    args.out.write_text(json.dumps(res, indent=2))
    report(res)
    del engine, trace
    gc.collect()
    torch.cuda.empty_cache()

    if not args.skip_hf:
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda")
        hf.generation_config.eos_token_id = None
        res["hf_batch1_tokens_per_s"] = gpu_baseline.hf_batch1(hf, lat_req)
        args.out.write_text(json.dumps(res, indent=2))
        print(f"transformers batch 1: {res['hf_batch1_tokens_per_s']:.1f} tok/s", flush=True)
        if args.hf_offline and not args.skip_offline:
            res["hf_offline"] = gpu_baseline.hf_offline(hf, offline, args.hf_offline_batch)
        del hf
    args.out.write_text(json.dumps(res, indent=2))
    report(res)


if __name__ == "__main__":
    main()
