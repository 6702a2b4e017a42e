"""Engine vs transformers generate on CPU: the same requests, greedy, fixed output length.

transformers runs one batched generate per --hf-batch requests (left padding);
the engine takes all requests at once (continuous batching). Prints tokens/s
of generated tokens for both and their ratio.

    .venv/bin/python bench/engine_cpu.py --requests 64 --max-tokens 16
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model directory (default: the prepared SmolLM2-135M)")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--hf-batch", type=int, default=16, help="requests per transformers generate call")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    from fms_worker.config import WorkerConfig
    from fms_worker.engine.llm_engine import LLMEngine
    from fms_worker.engine.types import SamplingParams

    if args.model is None:
        import prepare_models

        args.model = str(prepare_models.prepare("smollm2-135m"))
    engine = LLMEngine(WorkerConfig.model_validate({
        "model": {"path": args.model}, "precision": {"dtype": "float32"}, "runtime": {"device": "cpu"},
        "batching": {"max_num_seqs": args.requests, "max_num_batched_tokens": 2048},
    }))
    rng = random.Random(0)
    vocab = engine.runner.vocab_size
    prompts = [[rng.randrange(100, vocab) for _ in range(rng.randrange(8, 64))] for _ in range(args.requests)]
    total = args.requests * args.max_tokens

    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    engine.generate(prompts[:2], params)  # warm-up
    t = time.perf_counter()
    outs = engine.generate(prompts, params)
    engine_s = time.perf_counter() - t
    assert sum(len(o.outputs[0].token_ids) for o in outs) == total

    hf = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    pad = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else 0
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), args.hf_batch):
            chunk = prompts[i : i + args.hf_batch]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            hf.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=args.max_tokens,
                        min_new_tokens=args.max_tokens, pad_token_id=pad)
    hf_s = time.perf_counter() - t

    print(f"requests={args.requests} max_tokens={args.max_tokens} threads={args.threads} "
          f"prompt_lens=8..63 model={Path(args.model).name} float32 cpu")
    print(f"engine (continuous batching, all at once): {engine_s:7.2f} s  {total / engine_s:8.1f} tok/s")
    print(f"transformers generate (batches of {args.hf_batch}, left-padded): {hf_s:7.2f} s  {total / hf_s:8.1f} tok/s")
    print(f"ratio engine/transformers: {hf_s / engine_s:.2f}x")


if __name__ == "__main__":
    main()
