"""The engine's host work per step, with the model replaced by an instant fake.

What is left is everything the GPU would wait for between steps: scheduling,
block bookkeeping, detokenization and building the outputs. 256 requests of the
offline set run for 300 steps.

    python bench/engine_host.py [--transformers-decode]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "hack"))
import random_model  # noqa: E402
import workload  # noqa: E402


class InstantModel:
    """Stands in for the model runner: samples a random token for every sequence that samples."""

    vocab_size = 49152

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def execute(self, sched):
        from fms_worker.scheduler.output import ModelRunnerOutput

        return ModelRunnerOutput(sampled={s.seq_id: self.rng.randrange(1000, 40000) for s in sched.seqs if s.sample})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--requests", type=int, default=256, help="sequences running at once (1: the batch-1 case)")
    ap.add_argument("--transformers-decode", action="store_true", help="detokenize through transformers' decode wrapper")
    args = ap.parse_args()
    import prepare_models
    from fms_worker.config import WorkerConfig
    from fms_worker.engine import detokenizer
    from fms_worker.engine.llm_engine import LLMEngine
    from fms_worker.engine.types import SamplingParams

    if args.transformers_decode:
        detokenizer.raw_decoder = lambda tokenizer: None
    model = random_model.write("llama-tiny", Path(tempfile.mkdtemp()), prepare_models.prepare("smollm2-135m"))
    engine = LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(model), "max_model_len": 4096}, "precision": {"dtype": "float32"},
        "batching": {"max_num_seqs": 256, "max_num_batched_tokens": 8192},
        "caching": {"num_kv_blocks": 20000, "prefix_caching": False}, "runtime": {"device": "cpu"},
    }))
    engine.runner = InstantModel()
    for i, r in enumerate(workload.offline_set(args.requests)):
        engine.add_request(f"r{i}", r.prompt_ids, SamplingParams(temperature=0.0, max_tokens=r.max_tokens, ignore_eos=True))
    t = time.perf_counter()
    steps = 0
    while engine.has_unfinished() and steps < args.steps:
        engine.step()
        steps += 1
    ms = (time.perf_counter() - t) / steps * 1e3
    print(f"{steps} steps, {args.requests} requests, {ms:.2f} ms of host work per step"
          f" ({'transformers decode' if args.transformers_decode else 'fast decode'})")


if __name__ == "__main__":
    main()
