"""HTTP serving benchmark: Poisson arrivals of streaming completions against a running worker.

Reports TTFT, TPOT and ITL (p50/p99), request and output-token throughput. Prompts are token ids
(random, seeded), EOS ignored, so any model gives comparable lengths.

    # against a worker already running (GPU machine, kind cluster, ...)
    python bench/serving.py --url http://127.0.0.1:8000 --num-requests 200 --rate 8 --prompt-len 512 --max-tokens 128
    # start a worker process first, sweep several rates, then the same requests offline (the HTTP path's cost)
    python3 bench/serving.py --serve /tmp/llama-3.1-8b --rates inf 32 16 8 --num-requests 256 --offline-baseline \
        --out serving.json
    # start one in-process first (CPU smoke run with the test model)
    python bench/serving.py --start "$(python hack/prepare_models.py | grep smollm2)" --dtype float32 --device cpu \
        --num-requests 16 --rate inf --prompt-len 32 --max-tokens 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

CONNECTIONS_PER_POOL = 8  # streams per httpx client (see `run`)


@dataclass
class Result:
    ok: bool
    prompt_len: int
    output_tokens: int = 0
    ttft: float | None = None
    latency: float = 0.0
    itls: list[float] = field(default_factory=list)  # gaps between streamed chunks after the first
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


async def one_request(client: httpx.AsyncClient, prompt: list[int], max_tokens: int, model: str | None) -> Result:
    body = {"prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True, "stream": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    if model:
        body["model"] = model
    res = Result(ok=False, prompt_len=len(prompt))
    start = last = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                now = time.perf_counter()
                # Parse only the events that need it: the client must stay cheaper than the server it measures.
                if '"usage"' in line or '"error"' in line:
                    event = json.loads(line[6:])
                    if "error" in event:
                        res.error = event["error"]["message"]
                        return res
                    if event.get("usage"):
                        res.output_tokens = event["usage"]["completion_tokens"]
                    has_text = bool(event["choices"] and event["choices"][0]["text"])
                else:
                    has_text = '"text":""' not in line
                if has_text:
                    if res.ttft is None:
                        res.ttft = now - start
                    else:
                        res.itls.append(now - last)
                    last = now
        res.latency = time.perf_counter() - start
        res.ok = True
    except httpx.HTTPError as exc:
        res.error = repr(exc)
    return res


async def run(url: str, prompts: list[list[int]], max_tokens: int, rate: float, model: str | None,
              seed: int, concurrency: int | None = None) -> tuple[list[Result], float]:
    """`concurrency`: at most this many requests in flight (a closed loop: the next starts as one ends),
    so a long run measures steady-state saturation rather than one burst's ramp-up and tail."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    gate = asyncio.Semaphore(concurrency) if concurrency else None

    async def gated(client, prompt):
        if gate is None:
            return await one_request(client, prompt, max_tokens, model)
        async with gate:
            return await one_request(client, prompt, max_tokens, model)

    # httpcore's pool looks at every connection it holds for every request it places (with a socket
    # call each), so one pool of a few hundred streams kept this client at 100% of a core while the
    # server idled; small pools keep the client cheaper than the server it measures.
    in_flight = min(concurrency or len(prompts), len(prompts))
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600),
                                                                     limits=limits))
                   for _ in range(max(1, -(-in_flight // CONNECTIONS_PER_POOL)))]
        tasks = []
        started = time.perf_counter()
        for i, prompt in enumerate(prompts):
            tasks.append(asyncio.create_task(gated(clients[i % len(clients)], prompt)))
            if rate != float("inf"):
                await asyncio.sleep(rng.expovariate(rate))  # Poisson process: exponential gaps
        results = await asyncio.gather(*tasks)
        return results, time.perf_counter() - started


def _shard_main(job: tuple) -> tuple[list[dict], float, float]:
    """One client process: its share of the requests, with wall-clock start and end for the total."""
    url, prompts, max_tokens, rate, model, seed, concurrency = job
    started = time.time()
    results, _ = asyncio.run(run(url, prompts, max_tokens, rate, model, seed, concurrency))
    return [dataclasses.asdict(r) for r in results], started, time.time()


def run_clients(url: str, prompts: list[list[int]], max_tokens: int, rate: float, model: str | None, seed: int,
                concurrency: int | None = None, processes: int = 1) -> tuple[list[Result], float]:
    """`run` split over `processes` client processes (round-robin requests; rate and concurrency divided).

    One Python client parsing a few thousand SSE events a second saturates its core before a GPU
    worker does, so measuring a server at saturation needs several."""
    if processes <= 1:
        return asyncio.run(run(url, prompts, max_tokens, rate, model, seed, concurrency))
    import multiprocessing

    jobs = [(url, prompts[i::processes], max_tokens, rate / processes, model, seed + i,
             -(-concurrency // processes) if concurrency else None) for i in range(processes)]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        shards = pool.map(_shard_main, jobs)
    results = [Result(**r) for rows, _, _ in shards for r in rows]
    return results, max(end for _, _, end in shards) - min(start for _, start, _ in shards)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summarize(results: list[Result], elapsed: float) -> dict:
    ok = [r for r in results if r.ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    tpot = [r.tpot for r in ok if r.tpot is not None]
    itl = [x for r in ok for x in r.itls]
    out_tokens = sum(r.output_tokens for r in ok)
    summary = {"requests": len(results), "succeeded": len(ok), "elapsed_s": elapsed,
               "request_throughput_rps": len(ok) / elapsed, "output_throughput_tok_s": out_tokens / elapsed,
               "mean_ttft_s": statistics.fmean(ttft) if ttft else None}
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl)):
        summary[f"p50_{name}_s"], summary[f"p99_{name}_s"] = pct(values, 50), pct(values, 99)
    errors = [r.error for r in results if not r.ok]
    if errors:
        summary["first_errors"] = errors[:3]
    return summary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_worker(command: Callable[[int], list[str]], timeout: float) -> tuple[subprocess.Popen, str]:
    """Run `command(port)` (a worker serving on that loopback port) and wait until it answers /ready."""
    port = free_port()
    proc = subprocess.Popen(command(port), env=os.environ.copy())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the worker was not ready within {timeout:.0f} s")


def serve_process(model_dir: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """The worker as its own process (as in a pod), so the load generator does not share its interpreter."""
    return start_worker(lambda port: [
        sys.executable, "-m", "fms_worker.cli", "serve", model_dir, "--host", "127.0.0.1", "--port", str(port),
        "--dtype", args.dtype, "--device", args.device, "--max-num-seqs", str(args.max_num_seqs),
        "--max-waiting", str(max(args.num_requests, 1)), "--max-model-len", str(args.max_model_len),
        "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--log-level", "warning"], timeout=900)


def offline_baseline(model_dir: str, prompts: list[list[int]], args: argparse.Namespace) -> dict:
    """The same requests straight through the engine (no HTTP), in this process."""
    from fms_worker.config import WorkerConfig
    from fms_worker.engine.llm_engine import LLMEngine
    from fms_worker.engine.types import SamplingParams

    engine = LLMEngine(WorkerConfig.model_validate({
        "model": {"path": model_dir, "max_model_len": args.max_model_len}, "precision": {"dtype": args.dtype},
        "runtime": {"device": args.device}, "batching": {"max_num_seqs": args.max_num_seqs},
        "caching": {"gpu_memory_utilization": args.gpu_memory_utilization}}))
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    engine.generate(prompts[:4], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))  # warm-up
    t = time.perf_counter()
    outs = engine.generate(prompts, params)
    elapsed = time.perf_counter() - t
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"requests": len(prompts), "elapsed_s": elapsed, "output_throughput_tok_s": tokens / elapsed}


def report(summary: dict, rate: float, args: argparse.Namespace) -> None:
    print(f"requests {summary['succeeded']}/{summary['requests']} in {summary['elapsed_s']:.2f}s  "
          f"rate={rate} prompt_len={args.prompt_len} max_tokens={args.max_tokens}")
    print(f"throughput: {summary['request_throughput_rps']:.2f} req/s, {summary['output_throughput_tok_s']:.1f} tok/s")
    for name in ("ttft", "tpot", "itl"):
        p50, p99 = summary[f"p50_{name}_s"], summary[f"p99_{name}_s"]
        fmt = (lambda v: "n/a" if v is None else f"{v * 1000:.1f} ms")
        print(f"{name.upper():5s} p50 {fmt(p50):>10s}   p99 {fmt(p99):>10s}")
    for err in summary.get("first_errors", []):
        print("error:", err)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--start", metavar="MODEL_DIR", help="start an in-process worker on a free port first")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--device", default="auto")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--model", help="model name to send (default: whatever the worker serves)")
    p.add_argument("--num-requests", type=int, default=100)
    p.add_argument("--rate", type=float, default=float("inf"), help="requests per second (Poisson); inf = all at once")
    p.add_argument("--rates", type=float, nargs="+", help="several rates, one after another, against the same worker")
    p.add_argument("--concurrency", type=int, help="at most this many requests in flight (closed loop)")
    p.add_argument("--client-procs", type=int, default=1, help="client processes sharing the requests")
    p.add_argument("--serve", metavar="MODEL_DIR", help="start `fms_worker.cli serve MODEL_DIR` as a process first")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--offline-baseline", action="store_true",
                   help="then run the same requests through an in-process engine (needs --serve or --start)")
    p.add_argument("--out", help="write every summary as JSON here")
    p.add_argument("--prompt-len", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--vocab", type=int, default=10000, help="prompt token ids are drawn below this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = p.parse_args()

    rng = random.Random(args.seed)
    prompts = [[rng.randrange(args.vocab) for _ in range(args.prompt_len)] for _ in range(args.num_requests)]
    server = proc = None
    url = args.url
    if args.serve:
        proc, url = serve_process(args.serve, args)
    elif args.start:
        from fms_worker.config import WorkerConfig
        from fms_worker.server.app import create_app
        from fms_worker.server.runner import BackgroundServer

        cfg = WorkerConfig.model_validate({
            "model": {"path": args.start}, "precision": {"dtype": args.dtype}, "runtime": {"device": args.device},
            "batching": {"max_num_seqs": args.max_num_seqs, "max_waiting": max(args.num_requests, 1)}})
        server = BackgroundServer(create_app(cfg)).start(ready_timeout=600)
        url = server.url
    runs = []
    try:
        for rate in args.rates or [args.rate]:
            results, elapsed = run_clients(url, prompts, args.max_tokens, rate, args.model, args.seed,
                                           args.concurrency, args.client_procs)
            runs.append({"rate": "inf" if rate == float("inf") else rate, **summarize(results, elapsed)})
            if args.json:
                print(json.dumps(runs[-1], indent=2))
            else:
                report(runs[-1], rate, args)
            if args.out:
                _write(args.out, runs, None)
    finally:
        if server is not None:
            server.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    if args.offline_baseline and (args.serve or args.start):
        base = offline_baseline(args.serve or args.start, prompts, args)
        best = max(r["output_throughput_tok_s"] for r in runs)
        base["http_cost_at_saturation"] = 1 - best / base["output_throughput_tok_s"]
        print(f"offline (no HTTP): {base['output_throughput_tok_s']:.1f} tok/s; the best HTTP run reached "
              f"{best:.1f} tok/s, so the HTTP path cost {100 * base['http_cost_at_saturation']:.1f}%")
        if args.out:
            _write(args.out, runs, base)


def _write(path: str, runs: list[dict], offline: dict | None) -> None:
    with open(path, "w") as f:
        json.dump({"runs": runs, "offline": offline}, f, indent=2, default=str)


if __name__ == "__main__":
    main()
