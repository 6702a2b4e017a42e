"""The GPU tests' shared model: the tiny random Llama of bench/random_model.py with a real tokenizer."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))


def _tokenizer_dir() -> Path:
    # On the GPU machine the SmolLM2 tokenizer files travel in .device/tokenizer (the weights stay here).
    for d in (REPO / ".device" / "tokenizer", REPO / ".cache" / "models" / "smollm2-135m"):
        if (d / "tokenizer.json").exists():
            return d
    pytest.skip("no tokenizer files (.device/tokenizer or .cache/models/smollm2-135m)")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    import random_model

    return random_model.write("llama-tiny", tmp_path_factory.mktemp("tiny"), _tokenizer_dir())


@pytest.fixture(scope="session")
def make_prompts():
    def prompts(n: int = 8, seed: int = 0) -> list[list[int]]:
        rng = random.Random(seed)
        return [[rng.randrange(49152) for _ in range(rng.randint(3, 70))] for _ in range(n)]

    return prompts


@pytest.fixture(scope="session")
def run_greedy():
    """Greedy tokens (or with `outputs`, completions) of the engine for `prompts`, and whether it took the
    CUDA-graph path. `graphs_off`: the compiled kernels of the graph path, with its captured graphs dropped."""

    def greedy(model_dir: Path, prompts, *, eager: bool, precision: dict, device: str = "cuda", max_tokens: int = 24,
               async_scheduling: str = "auto", params=None, outputs: bool = False, graphs_off: bool = False):
        import torch

        from fms_worker.config import WorkerConfig
        from fms_worker.engine.llm_engine import LLMEngine
        from fms_worker.engine.types import SamplingParams

        cfg = WorkerConfig.model_validate({
            "model": {"path": str(model_dir), "max_model_len": 512},
            "precision": precision,
            "batching": {"max_num_seqs": 16, "max_num_batched_tokens": 1024},
            "caching": {"num_kv_blocks": 256, "block_size": 16},
            "runtime": {"device": device, "enforce_eager": eager, "async_scheduling": async_scheduling},
        })
        engine = LLMEngine(cfg)
        if graphs_off:
            engine.runner.graphs = None
        outs = engine.generate(prompts, params or SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))
        used_graphs = engine.runner.graphs is not None
        del engine
        torch.cuda.empty_cache()
        if outputs:  # the completions themselves (logprobs included)
            return [o.outputs[0] for o in outs], used_graphs
        return [o.outputs[0].token_ids for o in outs], used_graphs

    return greedy
