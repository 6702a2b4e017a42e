"""Which GPU each rank gets, and when the worker refuses to start (fake topologies, no GPU)."""

from __future__ import annotations

import pytest
import torch

from fms_worker.config import WorkerConfig
from fms_worker.engine.distributed import plan_gpus
from fms_worker.topology import GPUTopology

A100_4X2 = GPUTopology.from_rows(["NNNNPPPP"] * 4 + ["PPPPNNNN"] * 4)
INTERLEAVED = GPUTopology.from_rows(["NPNPNPNP", "PNPNPNPN"] * 4)
CUDA = torch.device("cuda")


def _config(tensor: int, pipeline: int = 1, interconnect: str = "any") -> WorkerConfig:
    return WorkerConfig.model_validate({"model": {"path": "/m"},
                                        "parallel": {"tensor": tensor, "pipeline": pipeline, "interconnect": interconnect}})


def test_tensor_groups_follow_the_nvlink_islands():
    assert plan_gpus(_config(4, interconnect="nvlink-required"), CUDA, INTERLEAVED) == [0, 2, 4, 6]
    assert plan_gpus(_config(4, 2, "nvlink-required"), CUDA, INTERLEAVED) == [0, 2, 4, 6, 1, 3, 5, 7]


def test_nvlink_required_refuses_a_group_across_islands():
    with pytest.raises(RuntimeError, match="nvlink-required but GPUs .* are not all NVLink-connected"):
        plan_gpus(_config(8, interconnect="nvlink-required"), CUDA, A100_4X2)
    assert plan_gpus(_config(8, interconnect="nvlink-preferred"), CUDA, A100_4X2) == list(range(8))


def test_nvlink_required_needs_gpus_and_nvml():
    with pytest.raises(RuntimeError, match="runs on CPU"):
        plan_gpus(_config(2, interconnect="nvlink-required"), torch.device("cpu"), None)
    with pytest.raises(RuntimeError, match="NVML cannot read"):
        plan_gpus(_config(2, interconnect="nvlink-required"), CUDA, None)
    assert plan_gpus(_config(2), torch.device("cpu"), None) == []
    assert plan_gpus(_config(1, interconnect="nvlink-required"), torch.device("cpu"), None) == []


def test_cpu_threads_per_rank_share_the_cores():
    import torch

    from fms_worker.parallel.launch import cpu_threads_per_rank

    assert cpu_threads_per_rank(torch.device("cuda", 0), 4, 64) == 1  # GPU ranks barely compute on the host
    assert cpu_threads_per_rank(torch.device("cpu"), 2, 8) == 4
    assert cpu_threads_per_rank(torch.device("cpu"), 3, 2) == 1
    assert cpu_threads_per_rank(torch.device("cpu"), 1, 2) == 2
