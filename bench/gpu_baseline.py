"""Ceilings and the transformers baseline on the GPU machine, printed and written as JSON.

    python bench/gpu_baseline.py MODEL_DIR --out results.json [--offline]

- copy bandwidth: a large device-to-device copy, counting bytes read plus written;
- matmul rate: an 8192^3 bf16 product on random data;
- transformers `generate` at batch 1 (128-token prompt, 256 new tokens) and, with
  --offline, on the 256-request offline set in static batches (EOS ignored).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402


def copy_bandwidth(gib: float = 4.0) -> float:
    n = int(gib * (1 << 30)) // 2
    a = torch.randn(n, dtype=torch.bfloat16, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    times.sort()
    del a, b
    return 2 * n * 2 / times[len(times) // 2]  # bytes/s, read + write


def matmul_rate(n: int = 8192) -> float:
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (time.perf_counter() - t)


def hf_batch1(model, req: workload.Request) -> float:
    ids = torch.tensor([req.prompt_ids], device="cuda")
    kw = dict(max_new_tokens=req.max_tokens, min_new_tokens=req.max_tokens, do_sample=False)
    model.generate(ids, max_new_tokens=8, do_sample=False)  # warm-up
    torch.cuda.synchronize()
    t = time.perf_counter()
    out = model.generate(ids, **kw)
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return (out.shape[1] - ids.shape[1]) / dt


def hf_offline(model, reqs: list[workload.Request], batch: int, progress: Path | None = None) -> dict:
    """Static batches, left-padded; each batch runs to its longest output. Counts only requested tokens.

    Requests are batched in order of output length (longest first), so a batch's rows need similar step
    counts: the kindest static batching for the baseline.
    """
    reqs = sorted(reqs, key=lambda r: r.max_tokens, reverse=True)
    useful = sum(r.max_tokens for r in reqs)
    t = time.perf_counter()
    done = 0
    for i in range(0, len(reqs), batch):
        chunk = reqs[i:i + batch]
        width = max(len(r.prompt_ids) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for j, r in enumerate(chunk):
            ids[j, width - len(r.prompt_ids):] = torch.tensor(r.prompt_ids)
            mask[j, width - len(r.prompt_ids):] = 1
        n = max(r.max_tokens for r in chunk)
        model.generate(ids.cuda(), attention_mask=mask.cuda(), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       pad_token_id=0)
        torch.cuda.synchronize()
        done += len(chunk)
        print(f"transformers offline: {done}/{len(reqs)} requests after {time.perf_counter() - t:.1f} s", flush=True)
        if progress is not None:  # what a timeout leaves behind
            progress.write_text(json.dumps({"requests_done": done, "seconds": time.perf_counter() - t,
                                            "tokens_done": sum(r.max_tokens for r in reqs[:done])}))
    dt = time.perf_counter() - t
    return {"seconds": dt, "output_tokens": useful, "tokens_per_s": useful / dt, "batch": batch,
            "order": "longest output first"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--offline", action="store_true")
    ap.add_argument("--offline-batch", type=int, default=64)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    res = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    res["copy_bandwidth_Bps"] = copy_bandwidth()
    res["matmul_flops"] = matmul_rate()
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cuda")
    model.generation_config.eos_token_id = None
    res["weight_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    res["hf_batch1_tokens_per_s"] = hf_batch1(model, workload.latency_request())
    if args.offline:
        res["hf_offline"] = hf_offline(model, workload.offline_set(), args.offline_batch,
                                       args.out.with_suffix(".progress.json"))
    args.out.write_text(json.dumps(res, indent=2))
    print(f"{res['gpu']}: copy {res['copy_bandwidth_Bps'] / 1e12:.2f} TB/s, matmul {res['matmul_flops'] / 1e12:.0f} TFLOP/s")
    print(f"transformers batch 1: {res['hf_batch1_tokens_per_s']:.1f} tok/s "
          f"(roofline {res['copy_bandwidth_Bps'] / res['weight_bytes']:.1f})")
    if args.offline:
        print(f"transformers offline: {res['hf_offline']['tokens_per_s']:.0f} tok/s")


if __name__ == "__main__":
    main()
