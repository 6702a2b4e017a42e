"""Is an engine's output the same from one run to the next, in one process and across processes?

    python3 bench/determinism_gpu.py run --model-dir /tmp/llama-3.1-8b --out a.json [--tp-invariant] [--enforce-eager]
    python3 bench/determinism_gpu.py compare a.json b.json

`run` builds one engine (bf16, prefix caching off, so every repetition computes the same thing) and generates
bench/tp_gpu.py's greedy set (8 prompts of 64-288 tokens, here 32 new tokens each) three times, keeping each
generated token's top-5 logprobs. `compare` prints, per repetition, which sequences' logprobs differ from
the first file's first repetition. Start two `run`s in separate processes (each with its own
TORCHINDUCTOR_CACHE_DIR) to see whether compiling again changes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import tp_gpu  # noqa: E402
import workload  # noqa: E402

REPEATS = 3


def run(args) -> None:
    from fms_worker.config import WorkerConfig
    from fms_worker.engine.llm_engine import LLMEngine

    engine = LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(args.model_dir), "max_model_len": 4096},
        "precision": {"dtype": "bfloat16", "tp_invariant": args.tp_invariant},
        "runtime": {"device": "cuda", "enforce_eager": args.enforce_eager}, "parallel": {"tensor": args.tp},
        "batching": {"max_num_seqs": 256, "max_num_batched_tokens": 8192},
        "caching": {"gpu_memory_utilization": 0.85, "prefix_caching": False}}))
    try:
        reqs = [workload.latency_request(prompt_len=64 + 32 * i, max_tokens=32, seed=i) for i in range(8)]
        runs = [tp_gpu.greedy_with_logprobs(engine, reqs) for _ in range(REPEATS)]
    finally:
        tp_gpu.close(engine)
    args.out.write_text(json.dumps({"tp_invariant": args.tp_invariant, "enforce_eager": args.enforce_eager,
                                    "tp": args.tp, "runs": runs}))


def compare(files: list[Path]) -> None:
    loaded = [json.loads(f.read_text()) for f in files]
    ref = json.loads(json.dumps(loaded[0]["runs"][0][1]))
    for f, data in zip(files, loaded):
        for i, (_, logprobs) in enumerate(data["runs"]):
            differ = [j for j, (a, b) in enumerate(zip(ref, logprobs)) if a != b]
            print(f"{f.name} repetition {i}: sequences whose logprobs differ from {files[0].name}'s first: {differ}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--model-dir", type=Path, required=True)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--tp", type=int, default=1)
    r.add_argument("--tp-invariant", action="store_true")
    r.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs, no torch.compile")
    c = sub.add_parser("compare")
    c.add_argument("files", type=Path, nargs="+")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else compare(args.files)


if __name__ == "__main__":
    main()
