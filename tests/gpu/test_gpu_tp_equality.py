"""On GPUs: NCCL tensor parallelism gives the greedy tokens of one GPU; NVML reads the links."""

from __future__ import annotations

import pytest
import torch

from fms_worker.topology import interconnect_problem, order_ranks, read_topology
from tiny_models import write_tiny_llama

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]
PROMPTS = [[5, 17, 99, 3], list(range(20, 200)), [250, 256, 1], [7] * 33]


def _gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


_GREEDY = """
import json, sys
from fms_worker.config import WorkerConfig
from fms_worker.engine.llm_engine import LLMEngine
from fms_worker.engine.types import SamplingParams

model_dir, tp, interconnect, all_reduce, prompts, precision = json.loads(sys.argv[1])
engine = LLMEngine(WorkerConfig.model_validate({
    "model": {"path": model_dir}, "precision": precision, "runtime": {"device": "cuda"},
    "parallel": {"tensor": tp, "interconnect": interconnect, "all_reduce": all_reduce},
    "caching": {"num_kv_blocks": 256, "block_size": 16}, "batching": {"max_num_batched_tokens": 512, "max_num_seqs": 8},
}))
outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True,
                                               logprobs=0 if precision.get("tp_invariant") else None))
if precision.get("tp_invariant"):  # the chosen tokens' logprobs too, to compare float for float
    print(json.dumps([[o.outputs[0].token_ids, [lp[t] for t, lp in zip(o.outputs[0].token_ids, o.outputs[0].logprobs)]]
                      for o in outs]))
else:
    print(json.dumps([o.outputs[0].token_ids for o in outs]))
if hasattr(engine.runner, "close"):
    engine.runner.close()
"""


def _greedy(model_dir, tp: int, interconnect: str = "any", all_reduce: str = "auto",
            precision: dict | None = None) -> list:
    """One engine per process, as a worker runs it (rank 0 here is the child, its followers its children).
    float32 unless `precision` says otherwise."""
    import json
    import subprocess
    import sys

    args = json.dumps([str(model_dir), tp, interconnect, all_reduce, PROMPTS, precision or {"dtype": "float32"}])
    out = subprocess.run([sys.executable, "-c", _GREEDY, args], capture_output=True, text=True, timeout=240)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", heads=8, kv_heads=2, hidden=256, layers=4,
                            vocab=1001)


def test_topology_is_read():
    topo = read_topology()
    # NVML counts every GPU of the host; the topology keeps those CUDA_VISIBLE_DEVICES shows torch.
    assert topo is not None and topo.count == _gpus()
    print(topo.summary())


@pytest.fixture(scope="module")
def tp1_tokens(model_dir):
    return _greedy(model_dir, 1)


@pytest.mark.parametrize("tp", [2, 4])
@pytest.mark.parametrize("all_reduce", ["nccl", "auto"])  # auto: one-shot over symmetric memory for small messages
def test_tp_matches_tp1(model_dir, tp1_tokens, tp, all_reduce):
    if _gpus() < tp:
        pytest.skip(f"needs {tp} GPUs")
    assert _greedy(model_dir, tp, all_reduce=all_reduce) == tp1_tokens


TREE = {"dtype": "bfloat16", "tp_invariant": True}


@pytest.fixture(scope="module")
def tp1_tree(model_dir):
    return _greedy(model_dir, 1, precision=TREE)


@pytest.mark.parametrize("tp", [2, 4])
def test_tp_invariant_bf16_is_bitwise_tp1(model_dir, tp1_tree, tp):
    """precision.tp_invariant in bf16: TP=1's tokens with the same logprobs, float for float (decode graphs,
    the one-shot all-reduce of the embedding, the tree kernel and NCCL gathers of the subtotals)."""
    if _gpus() < tp:
        pytest.skip(f"needs {tp} GPUs")
    assert len({tuple(t) for t, _ in tp1_tree}) > 1
    assert _greedy(model_dir, tp, precision=TREE) == tp1_tree


@pytest.mark.skipif(_gpus() < 2, reason="needs 2 GPUs")
def test_one_shot_all_reduce_sums(tmp_path):
    """The one-shot kernel's sum equals NCCL's for decode-sized and uneven messages (2 ranks); odd bf16 counts do not fit."""
    import subprocess
    import sys

    script = tmp_path / "ar.py"
    script.write_text(_ONE_SHOT_CHECK)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "one-shot ok" in out.stdout


_ONE_SHOT_CHECK = """
import os, torch, torch.distributed as dist, torch.multiprocessing as mp
from fms_worker.parallel.one_shot import OneShotAllReduce

def rank_main(rank):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29611")
    dev = torch.device("cuda", rank)
    torch.cuda.set_device(dev)
    dist.init_process_group("nccl", rank=rank, world_size=2, device_id=dev)
    one = OneShotAllReduce.create(dist.group.WORLD, dev, torch.bfloat16, 2 << 20)  # 256 x 4096 bf16, as for 8B
    assert one is not None, "symmetric memory rendezvous failed"
    g = torch.Generator(device=dev).manual_seed(rank)
    for n in (1, 4097):  # an odd count of bf16 values: the kernel refuses it, so the worker keeps NCCL
        assert not one.fits(torch.empty(n, dtype=torch.bfloat16, device=dev)), n
    for n in (2, 4096, 4098, 65536, 262144, 1 << 20):
        x = torch.randn(n, device=dev, generator=g).to(torch.bfloat16)
        ref = x.float().clone()
        dist.all_reduce(ref)
        got = one(x)
        assert torch.allclose(got.float(), ref, atol=2e-2, rtol=1e-2), (n, (got.float() - ref).abs().max())
    assert not one.fits(torch.empty((1 << 20) + 1, dtype=torch.bfloat16, device=dev))
    dist.destroy_process_group()
    if rank == 0:
        print("one-shot ok")

if __name__ == "__main__":
    mp.spawn(rank_main, nprocs=2, join=True)
"""


@pytest.mark.skipif(_gpus() < 2, reason="needs 2 GPUs")
def test_nvlink_required_follows_the_links(model_dir):
    topo = read_topology()
    problem = interconnect_problem(topo, order_ranks(topo, 2, 2), 2, "nvlink-required")
    if problem is None:
        assert _greedy(model_dir, 2, "nvlink-required") == _greedy(model_dir, 1)
    else:
        with pytest.raises(RuntimeError, match="nvlink-required"):
            _greedy(model_dir, 2, "nvlink-required")
