"""Each precision scheme through the whole engine on a GPU: the CUDA-graph path matches the eager
path token for token, and the quantized model stays close to the bf16 one."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.gpu

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

SCHEMES = {
    "bf16": {},
    "int8": {"quantization": "int8"},
    "int4": {"quantization": "int4"},
    "int4-g64": {"quantization": "int4", "int4_group_size": 64},
    "fp8": {"quantization": "fp8"},
    "fp8-kv": {"kv_cache_dtype": "fp8"},
    "sparse24": {"sparsity": "2:4"},
}


def _tokenizer_dir() -> Path:
    for d in (REPO / ".device" / "tokenizer", REPO / ".cache" / "models" / "smollm2-135m"):
        if (d / "tokenizer.json").exists():
            return d
    pytest.skip("no tokenizer files (.device/tokenizer or .cache/models/smollm2-135m)")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    import random_model

    return random_model.write("llama-tiny", tmp_path_factory.mktemp("tiny"), _tokenizer_dir())


@pytest.fixture(scope="module")
def tiny24_dir(tiny_dir, tmp_path_factory) -> Path:
    """The tiny model with every projection pruned to 2:4."""
    from fms_worker.quantization.sparse24 import prune_24

    out = tmp_path_factory.mktemp("tiny24")
    for f in tiny_dir.iterdir():
        if f.suffix == ".safetensors":
            tensors = {k: prune_24(v) if k.endswith("proj.weight") else v for k, v in load_file(f).items()}
            save_file(tensors, out / f.name, metadata={"format": "pt"})
        else:
            out.joinpath(f.name).write_bytes(f.read_bytes())
    return out


def _prompts(n=8, seed=0):
    rng = random.Random(seed)
    return [[rng.randrange(49152) for _ in range(rng.randint(3, 70))] for _ in range(n)]


def _greedy(model_dir: Path, precision: dict, eager: bool, prompts, max_tokens=24):
    from fms_worker.config import WorkerConfig
    from fms_worker.engine.llm_engine import LLMEngine
    from fms_worker.engine.types import SamplingParams

    cfg = WorkerConfig.model_validate({
        "model": {"path": str(model_dir), "max_model_len": 512},
        "precision": {"dtype": "bfloat16", **precision},
        "batching": {"max_num_seqs": 16, "max_num_batched_tokens": 1024},
        "caching": {"num_kv_blocks": 256, "block_size": 16},
        "runtime": {"device": "cuda", "enforce_eager": eager},
    })
    engine = LLMEngine(cfg)
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True))
    used_graphs = engine.runner.graphs is not None
    del engine
    torch.cuda.empty_cache()
    return [o.outputs[0].token_ids for o in outs], used_graphs


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_graph_path_matches_eager(tiny_dir, tiny24_dir, scheme):
    from fms_worker.quantization.fp8 import fp8_unsupported_reason

    if "fp8" in scheme and fp8_unsupported_reason(torch.device("cuda")):
        pytest.skip(fp8_unsupported_reason(torch.device("cuda")))
    model_dir = tiny24_dir if scheme == "sparse24" else tiny_dir
    prompts = _prompts()
    graph, used = _greedy(model_dir, SCHEMES[scheme], False, prompts)
    assert used, "the CUDA-graph path was not taken"
    eager, _ = _greedy(model_dir, SCHEMES[scheme], True, prompts)
    assert graph == eager
    if scheme != "sparse24":
        base, _ = _greedy(tiny_dir, {}, True, prompts)
        same = sum(a == b for x, y in zip(graph, base) for a, b in zip(x, y)) / sum(len(x) for x in base)
        print(f"{scheme}: {same:.0%} of greedy tokens equal to bf16")
        assert same > 0.5
