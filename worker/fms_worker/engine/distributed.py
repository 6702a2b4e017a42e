"""Tensor and pipeline parallelism inside one pod: rank 0 drives, the other ranks only execute.

Rank 0 is the serving process. It runs the scheduler, and before each
model-runner call that touches the model (profiling, KV cache allocation, a
step) sends the call and its arguments (a pickled SchedulerOutput for a
step) to the other ranks (local sockets in one pod, else gloo); every follower makes the same call on its own slice
of the model, so the collectives inside the layers line up. Under pipeline
parallelism the last stage's sampled tokens are broadcast back to rank 0.

`python -m fms_worker.engine.distributed` is a follower; `make_runner` spawns
them when parallel.tensor x parallel.pipeline > 1.

Across pods (FMS_GROUP_*, see parallel/group.py) the same protocol spans the
group: the leader pod's rank 0 drives, and a follower pod's first process
(`follow_group`) spawns its pod's other ranks, replays the calls like any
follower, and answers only the kubelet's probes.
"""

from __future__ import annotations

import atexit
import faulthandler
import gc
import json
import logging
import os
import signal
import subprocess
import sys

import torch

from fms_worker.config import WorkerConfig
from fms_worker.device import DTYPES, resolve_device
from fms_worker.loader.weights import load_hf_config
from fms_worker.model_runner import ModelRunner
from fms_worker.models.registry import resolve_model_class
from fms_worker.parallel import launch
from fms_worker.parallel.group import PodGroup, pod_group
from fms_worker.parallel.health import FollowerHealth
from fms_worker.parallel.launch import Groups, RankInfo
from fms_worker.parallel.pipeline import build_parallel_model
from fms_worker.parallel.state import check_pipeline_parallel, check_tensor_parallel
from fms_worker.quantization import get_linear_method, kv_cache_dtype
from fms_worker.topology import GPUTopology, interconnect_problem, order_ranks, read_topology

log = logging.getLogger(__name__)

STOP = "stop"


def _finish(method: str, result, groups: Groups):
    """The collective that follows a call, the same on every rank."""
    if method == "profile_free_bytes":  # every rank must fit the same number of KV blocks
        return launch.all_reduce_min(result, groups)
    if method == "execute" and groups.info.pp > 1:
        return launch.broadcast_object(result, groups, src=groups.info.last_stage_driver)
    return result


class ParallelRunner:
    """ModelRunner's interface on rank 0; each model-touching call is replayed on every rank."""

    def __init__(self, local: ModelRunner, groups: Groups, followers: list[subprocess.Popen]):
        self.local, self.groups, self.followers = local, groups, followers
        self.vocab_size = local.vocab_size
        self._closed = False

    def _call(self, method: str, *args):
        launch.broadcast_object((method, args), self.groups)
        return _finish(method, getattr(self.local, method)(*args), self.groups)

    def kv_bytes_per_block(self) -> int:
        return self.local.kv_bytes_per_block()

    def profile_free_bytes(self, max_num_batched_tokens: int, gpu_memory_utilization: float) -> int:
        return self._call("profile_free_bytes", max_num_batched_tokens, gpu_memory_utilization)

    def allocate_kv_cache(self, num_blocks: int) -> None:
        self._call("allocate_kv_cache", num_blocks)

    def warm_up_kernels(self, max_rows: int, max_logit_rows: int) -> None:
        self._call("warm_up_kernels", max_rows, max_logit_rows)

    def _step(self, method: str, sched):
        # Followers get a compact copy (this step's input ids per row); rank 0 runs the step it scheduled.
        launch.broadcast_object((method, (sched.for_followers(),)), self.groups)
        return _finish(method, getattr(self.local, method)(sched), self.groups)

    def execute(self, sched):
        return self._step("execute", sched)

    def launch(self, sched):
        """Every rank queues the step; only rank 0 ever waits for its tokens (pipeline parallel: never used)."""
        return self._step("launch", sched)

    def resolve(self, launched):
        return self.local.resolve(launched)

    def capture_graphs(self, max_batch: int, max_model_len: int) -> float:
        if self.groups.info.pp > 1:
            # A captured decode would have to hold the stage-to-stage send/recv too; stages stay eager.
            log.info("pipeline parallel: decode CUDA graphs are off")
            return 0.0
        return self._call("capture_graphs", max_batch, max_model_len)

    @property
    def num_blocks(self) -> int:
        return self.local.num_blocks

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            launch.broadcast_object((STOP, ()), self.groups)
        except (RuntimeError, OSError) as exc:  # a follower already gone
            log.warning("could not stop followers cleanly: %s", exc)
        if self.groups.channel is not None:
            self.groups.channel.close()
        self.local.release_graphs()
        launch.shutdown_groups()
        launch.stop_followers(self.followers)


def _dtype(config: WorkerConfig) -> torch.dtype:
    return DTYPES[config.precision.dtype]


def _rank_device(device: torch.device, gpus: list[int], rank: int) -> torch.device:
    return torch.device("cuda", gpus[rank]) if device.type == "cuda" else torch.device("cpu")


def _stage_neighbours(info: RankInfo) -> tuple[int | None, int | None]:
    prev = info.stage_rank(info.pp_rank - 1) if info.pp_rank > 0 else None
    nxt = info.stage_rank(info.pp_rank + 1) if info.pp_rank < info.pp - 1 else None
    return prev, nxt


def _local_runner(config: WorkerConfig, hf_config, groups: Groups) -> ModelRunner:
    if config.parallel.all_reduce == "auto":
        # The largest decode graph's all-reduce ([max_num_seqs, hidden]) must fit: graphs then hold no NCCL.
        hidden = resolve_model_class(hf_config).args_type.from_hf(hf_config).hidden_size
        launch.enable_one_shot_all_reduce(groups, _dtype(config),
                                          config.batching.max_num_seqs * hidden * _dtype(config).itemsize)
    model = build_parallel_model(config.model.path, hf_config, groups.device, _dtype(config),
                                 _stage_neighbours(groups.info),
                                 get_linear_method(config.precision, groups.device, hf_config))
    return ModelRunner(config.model.path, hf_config, groups.device, _dtype(config), config.caching.block_size,
                       enforce_eager=config.runtime.enforce_eager, model=model,
                       kv_cache_dtype=kv_cache_dtype(config.precision.kv_cache_dtype, _dtype(config), groups.device),
                       tp_invariant=config.precision.tp_invariant)


def plan_gpus(config: WorkerConfig, device: torch.device,
              topo: GPUTopology | None, count: int | None = None) -> list[int]:
    """GPU index per local rank (count: this pod's ranks, by default all), NVLink neighbours first.

    Raises when nvlink-required cannot be met.
    """
    p = config.parallel
    count = p.world_size if count is None else count
    if device.type != "cuda":
        if p.interconnect == "nvlink-required" and p.tensor > 1:
            raise RuntimeError("parallel.interconnect is nvlink-required but the worker runs on CPU; "
                               "run it on GPUs or set interconnect to any")
        return []
    if topo is None:  # NVML unreadable: plain order, nothing to check against
        if p.interconnect == "nvlink-required" and p.tensor > 1:
            raise RuntimeError("parallel.interconnect is nvlink-required but NVML cannot read the GPU links; "
                               "check the NVIDIA driver in the container or set interconnect to nvlink-preferred")
        return list(range(count))
    gpus = order_ranks(topo, count, p.tensor)
    problem = interconnect_problem(topo, gpus, p.tensor, p.interconnect)
    if problem:
        raise RuntimeError(problem)
    return gpus


def _check_degrees(config: WorkerConfig, hf_config) -> None:
    """Refuse degrees the model cannot be split by, before any process starts."""
    args = resolve_model_class(hf_config).args_type.from_hf(hf_config)
    check_tensor_parallel(config.parallel.tensor, args.num_heads, args.num_kv_heads)
    check_pipeline_parallel(config.parallel.pipeline, args.num_layers)


def make_runner(config: WorkerConfig, hf_config, device: torch.device, dtype: torch.dtype):
    """(runner, topology): a plain ModelRunner for one GPU, else a ParallelRunner over spawned ranks."""
    p = config.parallel
    topo = read_topology() if device.type == "cuda" else None
    if topo is not None:
        log.info("GPU topology: %s", topo.summary())
    group = pod_group(os.environ)
    if p.world_size == 1 and group is None:
        plan_gpus(config, device, topo)
        runner = ModelRunner(config.model.path, hf_config, device, dtype, config.caching.block_size,
                             enforce_eager=config.runtime.enforce_eager,
                             quant_method=get_linear_method(config.precision, device, hf_config),
                             kv_cache_dtype=kv_cache_dtype(config.precision.kv_cache_dtype, dtype, device),
                             tp_invariant=config.precision.tp_invariant)
        return runner, topo
    _check_degrees(config, hf_config)
    if group is not None and not group.is_leader:
        raise RuntimeError(f"pod {group.index} of a pipeline group does not serve; run follow_group instead")
    per_pod = p.world_size if group is None else group.ranks_per_pod(p.world_size, p.tensor)
    addr, port = ("127.0.0.1", launch.free_port()) if group is None else (group.leader, group.port)
    gpus = plan_gpus(config, device, topo, per_pod)
    followers = launch.spawn_followers(config.model_dump_json(), range(1, per_pod), p.world_size, addr, port, gpus)
    try:
        info = RankInfo(0, p.world_size, p.tensor, p.pipeline)
        groups = launch.init_groups(info, port, _rank_device(device, gpus, 0), addr, local_ranks=per_pod)
        runner = ParallelRunner(_local_runner(config, hf_config, groups), groups, followers)
    except BaseException:
        launch.shutdown_groups()
        launch.stop_followers(followers)
        raise
    atexit.register(runner.close)
    return runner, topo


def serve_commands(runner: ModelRunner, groups: Groups) -> None:
    """A follower's life: replay rank 0's calls until it says stop."""
    gc.collect()
    gc.freeze()  # the loaded model's objects stay: a follower's collector pause would stall every rank's step
    try:
        while True:
            method, args = launch.broadcast_object(None, groups)
            if method == STOP:
                return
            _finish(method, getattr(runner, method)(*args), groups)
    finally:
        runner.release_graphs()  # before the caller destroys the groups
        if groups.channel is not None:
            groups.channel.close()


def follow_group(config: WorkerConfig, group: PodGroup) -> int:
    """A follower pod's first process: spawn the pod's other ranks, join the leader, replay its calls until stop.

    Returns when the leader stops the group; raises when the leader goes away (gloo loses the connection),
    so the pod exits with its group either way.
    """
    p = config.parallel
    device = resolve_device(config.runtime.device)
    per_pod = group.ranks_per_pod(p.world_size, p.tensor)
    first = group.first_rank(p.world_size, p.tensor)
    hf_config = load_hf_config(config.model.path)
    _check_degrees(config, hf_config)
    health = FollowerHealth(config.server.host, config.server.port)
    topo = read_topology() if device.type == "cuda" else None
    gpus = plan_gpus(config, device, topo, per_pod)
    followers = launch.spawn_followers(config.model_dump_json(), range(first + 1, first + per_pod), p.world_size,
                                       group.leader, group.port, gpus)
    try:
        torch.manual_seed(config.runtime.seed)
        info = RankInfo(first, p.world_size, p.tensor, p.pipeline)
        groups = launch.init_groups(info, group.port, _rank_device(device, gpus, 0), group.leader, local_ranks=per_pod)
        runner = _local_runner(config, hf_config, groups)
        health.set_ready()
        log.info("pod %d of %d: ranks %d..%d joined %s:%d", group.index, group.size, first, first + per_pod - 1,
                 group.leader, group.port)
        serve_commands(runner, groups)
    finally:
        launch.shutdown_groups()
        launch.stop_followers(followers)
        health.close()
    return 0


def follower_main() -> int:
    launch.exit_with_parent(int(os.environ[launch.ENV_PARENT]))
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1` prints where a follower is
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s rank%(process)d %(name)s: %(message)s")
    config = WorkerConfig.model_validate_json(os.environ[launch.ENV_CONFIG])
    p = config.parallel
    info = RankInfo(int(os.environ[launch.ENV_RANK]), int(os.environ[launch.ENV_WORLD]), p.tensor, p.pipeline)
    gpus = json.loads(os.environ[launch.ENV_GPUS])
    device = torch.device("cuda") if gpus else torch.device("cpu")
    torch.manual_seed(config.runtime.seed)
    local_rank = int(os.environ.get(launch.ENV_LOCAL_RANK, info.rank))
    groups = launch.init_groups(info, int(os.environ[launch.ENV_PORT]), _rank_device(device, gpus, local_rank),
                                os.environ[launch.ENV_ADDR])
    try:
        runner = _local_runner(config, load_hf_config(config.model.path), groups)
        serve_commands(runner, groups)
    finally:
        launch.shutdown_groups()
    return 0


if __name__ == "__main__":
    sys.exit(follower_main())
