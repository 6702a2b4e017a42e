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
import subprocess
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
DTYPE = ["bfloat16"]  # --dtype
TP_INVARIANT = [False]  # --tp-invariant
PARTIAL: list[dict] = []  # measurements as they complete (the greedy set before the offline one)
SAVE: dict = {"out": None, "results": []}  # where partial results go, so a killed run leaves them behind


def save_partial() -> None:
    if SAVE["out"] is not None:
        SAVE["out"].write_text(json.dumps({"partial": True, "results": SAVE["results"],
                                           "unfinished": [r for r in PARTIAL if r not in SAVE["results"]]}))


def make_engine(model_dir: Path, tp: int, max_tokens_budget: int, all_reduce: str = "auto"):
    from fms_worker.config import WorkerConfig
    from fms_worker.engine.llm_engine import LLMEngine

    return LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(model_dir), "max_model_len": 4096},
        "precision": {"dtype": DTYPE[0], "tp_invariant": TP_INVARIANT[0]},
        "runtime": {"device": "cuda"}, "parallel": {"tensor": tp, "all_reduce": all_reduce},
        "batching": {"max_num_seqs": 256, "max_num_batched_tokens": max_tokens_budget},
        "caching": dict(MEMORY),
    }))


def close(engine) -> None:
    if hasattr(engine.runner, "close"):
        engine.runner.close()
    del engine
    torch.cuda.empty_cache()


def run(engine, reqs: list[workload.Request]) -> tuple[float, int]:
    from fms_worker.engine.types import SamplingParams

    params = [SamplingParams(temperature=0.0, max_tokens=r.max_tokens, ignore_eos=True) for r in reqs]
    torch.cuda.synchronize()
    t = time.perf_counter()
    outs = engine.generate([r.prompt_ids for r in reqs], params)
    torch.cuda.synchronize()
    return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in outs)


def greedy_with_logprobs(engine, reqs: list[workload.Request], top: int = 5) -> tuple[list[list[int]], list]:
    """Greedy tokens and, per generated token, the top-`top` logprobs as [[token, logprob], ...] (JSON-safe)."""
    from fms_worker.engine.types import SamplingParams

    params = [SamplingParams(temperature=0.0, max_tokens=r.max_tokens, ignore_eos=True, logprobs=top) for r in reqs]
    outs = engine.generate([r.prompt_ids for r in reqs], params)
    return ([o.outputs[0].token_ids for o in outs],
            [[sorted(step.items(), key=lambda kv: -kv[1]) for step in o.outputs[0].logprobs] for o in outs])


def run_watched(engine, reqs: list[workload.Request], dump_after: float | None) -> tuple[float, int]:
    """The offline set through engine.step, printing progress every 10 s; after `dump_after` seconds
    every rank's Python stacks go to stderr (rank 0 via faulthandler's watchdog, followers on SIGUSR1)
    and bench/proc_snapshot.py records every rank from outside."""
    import faulthandler
    import signal
    import threading

    from fms_worker.engine.types import SamplingParams

    for i, r in enumerate(reqs):
        engine.add_request(f"o{i}", r.prompt_ids, SamplingParams(temperature=0.0, max_tokens=r.max_tokens,
                                                                 ignore_eos=True))
    state = {"steps": 0, "tokens": 0, "finished": 0, "done": False}
    t = time.perf_counter()

    def watch():
        dumped = 0
        while not state["done"]:
            time.sleep(10)
            if state["done"]:
                return
            el = time.perf_counter() - t
            print(f"  offline: {el:.0f} s, {state['steps']} steps, {state['tokens']} tokens, "
                  f"{state['finished']}/{len(reqs)} finished", flush=True)
            if dump_after is not None and el > dump_after and dumped < 2:
                dumped += 1  # rank 0's own stacks come from dump_traceback_later below
                for p in getattr(engine.runner, "followers", []):
                    os.kill(p.pid, signal.SIGUSR1)

    threading.Thread(target=watch, daemon=True).start()
    monitor = None
    if dump_after is not None:  # a C thread: it prints even when the main thread holds the GIL in a stuck call
        faulthandler.dump_traceback_later(dump_after, repeat=False)
        # And from outside: thread states, kernel stacks, py-spy (bench/proc_snapshot.py), GPU utilization.
        pids = [os.getpid()] + [p.pid for p in getattr(engine.runner, "followers", [])]
        target = SAVE["out"].with_suffix(".stacks.txt") if SAVE["out"] else Path("tp-stacks.txt")
        monitor = subprocess.Popen([sys.executable, str(HERE / "proc_snapshot.py"), "--pids", *map(str, pids),
                                    "--after", str(dump_after), "--every", "20", "--count", "2", "--out", str(target)])
    try:
        while engine.has_unfinished():
            for out in engine.step():
                state["tokens"] += len(out.outputs[0].new_token_ids)
                state["finished"] += out.finished
            state["steps"] += 1
        torch.cuda.synchronize()
    finally:
        state["done"] = True
        faulthandler.cancel_dump_traceback_later()
        if monitor is not None and monitor.poll() is None:
            monitor.kill()
    return time.perf_counter() - t, state["tokens"]


def measure(model_dir: Path, tp: int, num_requests: int, equality_reqs, all_reduce: str = "auto",
            offline: bool = True, dump_after: float | None = None) -> dict:
    t0 = time.perf_counter()
    engine = make_engine(model_dir, tp, 8192, all_reduce)
    try:
        print(f"TP={tp} all-reduce {all_reduce}: engine up in {time.perf_counter() - t0:.1f} s", flush=True)
        run(engine, [workload.latency_request(max_tokens=16)])  # warm-up
        dt, n = run(engine, [workload.latency_request()])
        res = {"tp": tp, "all_reduce": all_reduce, "tp_invariant": TP_INVARIANT[0], "batch1_tokens_per_s": n / dt,
               "async_scheduling": engine.async_scheduling, "offline_tokens_per_s": None}
        print(f"TP={tp}: batch 1 {n / dt:.1f} tok/s", flush=True)
        # before the long offline set, so a timeout keeps it
        res["greedy"], res["greedy_logprobs"] = greedy_with_logprobs(engine, equality_reqs)
        print(f"TP={tp}: greedy set done", flush=True)
        PARTIAL.append(res)
        save_partial()
        if offline:
            dt, n = run_watched(engine, workload.offline_set(num_requests), dump_after)
            res |= {"offline_tokens_per_s": n / dt, "offline_seconds": dt, "offline_output_tokens": n}
        res["kv_blocks"] = engine.scheduler.kv.pool.num_blocks
        topo = getattr(engine, "topology", None)
        res["topology"] = topo.summary() if topo is not None else None
        return res
    finally:
        close(engine)


def measure_in_child(args, model_dir: Path, tp: int, mode: str) -> dict | None:
    """`measure` in a fresh process of this script. A second TP engine built in a process that had built one
    before did not come up (its ranks started, then nothing for minutes: tenth session's call 6 and eleventh
    session's call 4, both `--tp 1 2 4` after TP=2; cause not established), where a fresh process did."""
    out = args.out.with_suffix(f".tp{tp}-{mode}.json")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--model-dir", str(model_dir), "--tp", str(tp),
           "--all-reduce", mode, "--out", str(out), "--num-requests", str(args.num_requests),
           "--gpu-memory-utilization", str(args.gpu_memory_utilization), "--dtype", args.dtype]
    cmd += ["--skip-offline"] * args.skip_offline + ["--tp-invariant"] * args.tp_invariant
    cmd += ["--dump-after", str(args.dump_after)] if args.dump_after else []
    subprocess.run(cmd, check=False)
    if not out.exists():
        return None
    data = json.loads(out.read_text())
    rows = data["results"] or data.get("unfinished", [])
    return rows[0] if rows else None


def compare(reference: list[list[int]], other: list[list[int]], ref_logprobs: list | None = None,
            other_logprobs: list | None = None) -> dict:
    """Identical sequences, the first divergence, and per parting sequence how many nats the reference ranked
    the other's token below its own at the parting (inf: outside its top logprobs): a near tie or not. With
    both sides' logprobs: how many sequences have every top-5 logprob equal, float for float."""
    same = sum(a == b for a, b in zip(reference, other))
    parts = [(i, next(p for p, (x, y) in enumerate(zip(a, b)) if x != y))
             for i, (a, b) in enumerate(zip(reference, other)) if a != b]
    out = {"identical_sequences": same, "sequences": len(reference),
           "first_divergence_token": min((p for _, p in parts), default=None)}
    if ref_logprobs is not None and other_logprobs is not None:
        same_json = [json.loads(json.dumps(x)) for x in (ref_logprobs, other_logprobs)]  # a --reference file's lists
        out["identical_logprobs"] = sum(a == b for a, b in zip(*same_json))
    if ref_logprobs is not None:
        gaps = []
        for i, p in parts:
            lp = dict((int(t), v) for t, v in ref_logprobs[i][p])
            gaps.append([p, lp[reference[i][p]] - lp.get(other[i][p], float("-inf"))])
        out["divergence_gaps"] = gaps  # [position, nats]
    return out


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
    ap.add_argument("--all-reduce", nargs="+", default=["auto"], choices=["auto", "nccl"],
                    help="parallel.all_reduce values to measure for each TP > 1")
    ap.add_argument("--skip-offline", action="store_true")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                    help="float32: greedy equality without bf16 rounding (8B needs 32 GB a copy)")
    ap.add_argument("--tp-invariant", action="store_true",
                    help="precision.tp_invariant: the tree matmuls (same logits at every degree)")
    ap.add_argument("--dump-after", type=float, help="print every rank's stacks once the offline set has run this long")
    ap.add_argument("--reference", type=Path, help="a JSON written by this bench whose TP=1 greedy tokens to compare with")
    args = ap.parse_args()
    MEMORY["gpu_memory_utilization"] = args.gpu_memory_utilization
    DTYPE[0] = args.dtype
    TP_INVARIANT[0] = args.tp_invariant
    model_dir = args.model_dir
    if args.random:
        import random_model
        from tiny_models import write_word_tokenizer

        model_dir = random_model.write(args.random, args.random_dir, tokenizer=None)
        write_word_tokenizer(model_dir, random_model.config_for(args.random)["vocab_size"])
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` prints where rank 0 is
    SAVE["out"], results = args.out, SAVE["results"]
    degrees = [t for t in args.tp if t <= torch.cuda.device_count()]
    equality = [workload.latency_request(prompt_len=64 + 32 * i, max_tokens=64, seed=i) for i in range(8)]
    built_tp = False  # whether this process has built a TP > 1 engine
    for tp in degrees:
        for mode in (args.all_reduce if tp > 1 else ["nccl"]):
            if tp > 1 and built_tp:
                res = measure_in_child(args, model_dir, tp, mode)
            else:
                res = measure(model_dir, tp, args.num_requests, equality, mode, not args.skip_offline,
                              args.dump_after)
            built_tp |= tp > 1
            if res is not None:
                results.append(res)
            save_partial()
    pool = results + (json.loads(args.reference.read_text())["results"] if args.reference else [])
    ref = next((r for r in pool if r["tp"] == 1), None)
    for r in results:
        r["greedy_vs_tp1"] = (compare(ref["greedy"], r["greedy"], ref.get("greedy_logprobs"), r.get("greedy_logprobs"))
                              if ref is not None else None)
    report = {"gpu": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "model": str(model_dir), "nccl_nvls_enable": os.environ.get("NCCL_NVLS_ENABLE"), "results": results}
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{report['gpu']} x{report['gpus']}, {model_dir}")
    if results and results[0]["topology"]:
        print("topology:", json.dumps(results[0]["topology"]))
    print(f"{'TP':>3} {'all-reduce':>10} {'batch-1 tok/s':>14} {'offline tok/s':>14} {'KV blocks':>10}  greedy vs TP=1")
    for r in results:
        g = r["greedy_vs_tp1"] or {}
        offline = f"{r['offline_tokens_per_s']:.0f}" if r["offline_tokens_per_s"] else "-"
        print(f"{r['tp']:>3} {r['all_reduce']:>10} {r['batch1_tokens_per_s']:>14.1f} {offline:>14} {r['kv_blocks']:>10}  "
              f"{g.get('identical_sequences')}/{g.get('sequences')} identical ({g.get('identical_logprobs')} with "
              f"equal logprobs), first divergence at "
              f"{g.get('first_divergence_token')}; gaps at partings (position, nats): "
              + ", ".join(f"({p}, {gap:.3f})" for p, gap in g.get("divergence_gaps", [])))


if __name__ == "__main__":
    main()
