"""On GPUs: NCCL tensor parallelism gives the greedy tokens of one GPU; NVML reads the links."""

from __future__ import annotations

import pytest
import torch

from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams
from fms_worker.topology import interconnect_problem, order_ranks, read_topology
from tiny_models import write_tiny_llama

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]
PROMPTS = [[5, 17, 99, 3], list(range(20, 200)), [250, 256, 1], [7] * 33]


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _greedy(model_dir, tp: int, interconnect: str = "any") -> list[list[int]]:
    engine = LLMEngine(WorkerConfig.model_validate({
        "model": {"path": str(model_dir)}, "precision": {"dtype": "float32"}, "runtime": {"device": "cuda"},
        "parallel": {"tensor": tp, "interconnect": interconnect},
        "caching": {"num_kv_blocks": 256, "block_size": 16}, "batching": {"max_num_batched_tokens": 512, "max_num_seqs": 8},
    }))
    try:
        outs = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True))
        return [o.outputs[0].token_ids for o in outs]
    finally:
        if hasattr(engine.runner, "close"):
            engine.runner.close()
        del engine
        torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", heads=8, kv_heads=2, hidden=256, layers=4,
                            vocab=1001)


def test_topology_is_read():
    topo = read_topology()
    # NVML sees every GPU of the host, whatever CUDA_VISIBLE_DEVICES hides from torch.
    assert topo is not None and topo.count >= _gpus()
    print(topo.summary())


@pytest.mark.skipif(_gpus() < 2, reason="needs 2 GPUs")
def test_tp2_matches_tp1_over_nccl(model_dir):
    assert _greedy(model_dir, 2) == _greedy(model_dir, 1)


@pytest.mark.skipif(_gpus() < 2, reason="needs 2 GPUs")
def test_nvlink_required_follows_the_links(model_dir):
    topo = read_topology()
    problem = interconnect_problem(topo, order_ranks(topo, 2, 2), 2, "nvlink-required")
    if problem is None:
        assert _greedy(model_dir, 2, "nvlink-required") == _greedy(model_dir, 1)
    else:
        with pytest.raises(RuntimeError, match="nvlink-required"):
            _greedy(model_dir, 2, "nvlink-required")
