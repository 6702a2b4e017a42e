"""What the HTTP path costs the engine, measured without a GPU.

The model runner is replaced by a stand-in that "runs" every step for a fixed
time with the GIL released (as a wait on a CUDA event does) and samples random
tokens, so what remains is the host's share: the scheduler, detokenization,
the asyncio bridge, SSE encoding and the sockets. The same 256 requests run
(1) straight through the engine (offline) and (2) through `fms-worker serve`
in its own process with 256 concurrent streaming clients; the HTTP path's
cost is 1 - (2) / (1).

    python bench/serving_host.py [--step-ms 25] [--num-requests 256] [--prompt-len 256] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "hack"))


class TimedRunner:
    """Stands in for the GPU: a step is ready `step_s` after the device would start it."""

    def __init__(self, vocab_size: int, step_s: float, seed: int = 0):
        self.vocab_size, self.step_s = vocab_size, step_s
        self.rng = random.Random(seed)
        self.device_free_at = 0.0

    def launch(self, sched):
        if sched.is_empty:
            return None
        start = max(time.monotonic(), self.device_free_at)  # queued behind the step in flight
        self.device_free_at = start + self.step_s
        return self.device_free_at, [s.seq_id for s in sched.seqs if s.sample]

    def resolve(self, launched):
        from fms_worker.scheduler.output import ModelRunnerOutput

        if launched is None:
            return ModelRunnerOutput()
        ready, seq_ids = launched
        time.sleep(max(0.0, ready - time.monotonic()))  # releases the GIL, like cudaEventSynchronize
        return ModelRunnerOutput(sampled={i: self.rng.randrange(1000, 40000) for i in seq_ids})

    def execute(self, sched):
        return self.resolve(self.launch(sched))


def engine_factory(step_s: float):
    def factory(config):
        from fms_worker.engine.llm_engine import LLMEngine

        engine = LLMEngine(config)
        engine.runner = TimedRunner(engine.runner.vocab_size, step_s)
        engine.async_scheduling = True  # as on a GPU
        return engine

    return factory


def worker_config(model_dir: str, num_requests: int):
    from fms_worker.config import WorkerConfig

    return WorkerConfig.model_validate({
        "model": {"path": model_dir, "max_model_len": 4096}, "precision": {"dtype": "float32"},
        "batching": {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "max_waiting": max(num_requests, 1)},
        "caching": {"num_kv_blocks": 20000, "prefix_caching": False}, "runtime": {"device": "cpu"},
    })


def serve_child(args) -> None:
    from fms_worker.server.runner import serve

    cfg = worker_config(args.model_dir, args.num_requests).model_copy(deep=True)
    cfg.server.host, cfg.server.port = "127.0.0.1", args.port
    sys.exit(serve(cfg, engine_factory=engine_factory(args.step_ms / 1e3), log_level="warning"))


def offline(model_dir: str, prompts, args) -> float:
    from fms_worker.engine.types import SamplingParams

    engine = engine_factory(args.step_ms / 1e3)(worker_config(model_dir, args.num_requests))
    t = time.perf_counter()
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True))
    return sum(len(o.outputs[0].token_ids) for o in outs) / (time.perf_counter() - t)


def over_http(model_dir: str, prompts, args) -> dict:
    import serving

    child, url = serving.start_worker(lambda port: [
        sys.executable, __file__, "--serve-child", "--model-dir", model_dir, "--port", str(port),
        "--step-ms", str(args.step_ms), "--num-requests", str(args.num_requests)], timeout=300)
    try:
        results, elapsed = serving.run_clients(url, prompts, args.max_tokens, float("inf"), None, 0,
                                               args.concurrency, args.client_procs)
        return serving.summarize(results, elapsed)
    finally:
        child.terminate()
        child.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-ms", type=float, default=25.0, help="device time per step (8B, batch 256 on an H100: ~25)")
    ap.add_argument("--num-requests", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrency", type=int, help="closed loop: at most this many requests in flight")
    ap.add_argument("--client-procs", type=int, default=1, help="client processes sharing the requests")
    ap.add_argument("--model-dir")
    ap.add_argument("--port", type=int)
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.serve_child:
        return serve_child(args)
    import prepare_models
    import random_model

    model_dir = str(random_model.write("llama-tiny", Path(tempfile.mkdtemp()), prepare_models.prepare("smollm2-135m")))
    rng = random.Random(0)
    prompts = [[rng.randrange(1000, 10000) for _ in range(args.prompt_len)] for _ in range(args.num_requests)]
    base = offline(model_dir, prompts, args)
    http = over_http(model_dir, prompts, args)
    cost = 1 - http["output_throughput_tok_s"] / base
    res = {"step_ms": args.step_ms, "offline_tok_s": base, "http": http, "http_cost": cost, "cpus": os.cpu_count()}
    print(f"device step {args.step_ms} ms, {args.num_requests} requests x {args.max_tokens} tokens: offline "
          f"{base:.0f} tok/s, over HTTP {http['output_throughput_tok_s']:.0f} tok/s "
          f"(TTFT p50 {http['p50_ttft_s'] * 1e3:.0f} ms, ITL p99 {http['p99_itl_s'] * 1e3:.0f} ms): "
          f"the HTTP path costs {100 * cost:.1f}%")
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
