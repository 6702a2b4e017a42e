"""Process groups of a worker: rank 0 is the serving process; each pod's first process spawns the pod's other ranks.

In one pod that is ranks 1..N-1 meeting on 127.0.0.1. In a multi-node group
(parallel/group.py) pod i's first process is global rank i x ranks-per-pod and
spawns the ranks after it; all meet at the leader's rendezvous address.

Layout: rank = stage * tp + tp_rank, so each tensor-parallel group is tp
consecutive ranks (on NVLink neighbours, see topology.order_ranks) and stage s
sends its hidden state to the same tp_rank of stage s + 1. The default group
carries the model's collectives (NCCL on GPU, gloo on CPU); rank 0's pickled
per-step commands, which never belong on the GPU link, go over local sockets
when all ranks share the pod (parallel/command_channel.py), else over a second,
gloo group, which also carries the few collectives on host objects.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from fms_worker.parallel.command_channel import CommandChannel
from fms_worker.parallel.one_shot import MAX_BYTES, OneShotAllReduce
from fms_worker.parallel.reduce_norm import AllReduceAddNorm
from fms_worker.parallel.reduce_norm import mode_from_env as reduce_norm_mode
from fms_worker.parallel.state import ParallelState, get_parallel_state, set_parallel_state

log = logging.getLogger(__name__)

# Followers wait for the next step as long as the server is idle; the command
# group must not time out then. Model collectives keep torch's default.
IDLE_TIMEOUT = timedelta(days=30)
ENV_RANK, ENV_WORLD, ENV_ADDR, ENV_PORT = "FMS_RANK", "FMS_WORLD_SIZE", "FMS_MASTER_ADDR", "FMS_MASTER_PORT"
ENV_CONFIG, ENV_GPUS, ENV_LOCAL_RANK = "FMS_WORKER_CONFIG", "FMS_RANK_GPUS", "FMS_LOCAL_RANK"
ENV_PARENT = "FMS_PARENT_PID"  # the process that spawned a follower: it exits when that one is gone
ENV_COMMANDS = "FMS_COMMANDS"  # "gloo": rank 0's commands over the gloo group even inside one pod


@dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    tp: int
    pp: int

    @property
    def tp_rank(self) -> int:
        return self.rank % self.tp

    @property
    def pp_rank(self) -> int:
        return self.rank // self.tp

    def stage_rank(self, pp_rank: int) -> int:
        """The rank holding this tp_rank's slice in stage pp_rank."""
        return pp_rank * self.tp + self.tp_rank

    @property
    def last_stage_driver(self) -> int:
        """Rank 0 of the last stage: it answers each step's sampled tokens under pipeline parallelism."""
        return (self.pp - 1) * self.tp


@dataclass
class Groups:
    info: RankInfo
    device: torch.device
    commands: object  # gloo ProcessGroup for host objects (and the commands when channel is None)
    tp_group: object  # this rank's tensor-parallel group
    channel: CommandChannel | None = None  # rank 0's commands to the ranks of its pod


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def spawn_followers(config_json: str, ranks: range, world_size: int, addr: str, port: int,
                    gpus: list[int]) -> list[subprocess.Popen]:
    """Start `ranks` (this pod's ranks after its first) as `python -m fms_worker.engine.distributed`.

    They join the rendezvous at addr:port; local rank k (its GPU is gpus[k]) counts from this pod's first rank.
    """
    procs = []
    for local, rank in enumerate(ranks, start=1):
        env = dict(os.environ, **{ENV_RANK: str(rank), ENV_WORLD: str(world_size), ENV_ADDR: addr,
                                  ENV_PORT: str(port), ENV_CONFIG: config_json, ENV_GPUS: json.dumps(gpus),
                                  ENV_LOCAL_RANK: str(local), ENV_PARENT: str(os.getpid())})
        procs.append(subprocess.Popen([sys.executable, "-m", "fms_worker.engine.distributed"], env=env))
    return procs


def stop_followers(procs: list[subprocess.Popen], timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def exit_with_parent(parent_pid: int, interval_s: float = 0.5) -> threading.Thread:
    """A follower sends itself SIGTERM once the process that spawned it is gone, however it went (no orphan
    keeps its GPU): a daemon thread watches for re-parenting.

    Watching the process, not the kernel's parent-death signal (PR_SET_PDEATHSIG), on purpose: that signal
    fires when the spawning *thread* ends, and the server builds its engine in an executor thread that ends
    with the event loop, before rank 0 has stopped its followers."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        log.warning("rank 0 (pid %d) is gone: stopping", parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="exit-with-parent", daemon=True)
    thread.start()
    return thread


_THREADS_BEFORE: list[int] = []


def cpu_threads_per_rank(device: torch.device, local_ranks: int, cores: int) -> int:
    """Intra-op threads for one rank of a multi-process worker.

    Every process defaults to one thread per core, and OpenMP threads spin after each parallel region:
    N ranks on one host then fight over the cores whenever a step's host tensors are big enough to go
    parallel (prefill), which slowed a 2-GPU offline run ten-fold. A GPU rank does little CPU math
    (one thread); CPU ranks share the cores.
    """
    if device.type == "cuda":
        return 1
    return max(1, cores // max(1, local_ranks))


def init_groups(info: RankInfo, port: int, device: torch.device, addr: str = "127.0.0.1",
                local_ranks: int | None = None) -> Groups:
    """Join the rendezvous, make the tensor-parallel groups and publish this rank's ParallelState."""
    if "OMP_NUM_THREADS" not in os.environ:  # an explicit setting wins
        _THREADS_BEFORE.append(torch.get_num_threads())
        torch.set_num_threads(cpu_threads_per_rank(device, local_ranks or info.world_size, len(os.sched_getaffinity(0))))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=info.rank, world_size=info.world_size,
                            device_id=device if device.type == "cuda" else None)
    commands = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)
    channel = _open_channel(info, commands, (local_ranks or info.world_size) == info.world_size, port)
    tp_group = None
    for stage in range(info.pp):  # every rank must create every group, in the same order
        ranks = list(range(stage * info.tp, (stage + 1) * info.tp))
        group = dist.new_group(ranks, backend=backend) if info.pp > 1 else dist.group.WORLD
        if stage == info.pp_rank:
            tp_group = group
    set_parallel_state(ParallelState(tp_rank=info.tp_rank, tp_size=info.tp, group=tp_group,
                                     pp_rank=info.pp_rank, pp_size=info.pp))
    log.info("rank %d/%d (tp %d/%d, stage %d/%d) on %s over %s", info.rank, info.world_size, info.tp_rank, info.tp,
             info.pp_rank, info.pp, device, backend)
    return Groups(info, device, commands, tp_group, channel)


def _open_channel(info: RankInfo, commands, one_pod: bool, tag: int) -> CommandChannel | None:
    """Rank 0 decides (every rank of one pod, not switched off) and hands its address over gloo; a
    collective: every rank calls it at the same point."""
    server, box = None, [None]
    if info.rank == 0 and one_pod and os.environ.get(ENV_COMMANDS) != "gloo":
        server, box[0] = CommandChannel.listen(str(tag))
    dist.broadcast_object_list(box, src=0, group=commands)
    if box[0] is None:
        return None
    try:
        if info.rank == 0:
            return CommandChannel.accept(server, info.world_size - 1)
        return CommandChannel.connect(box[0])
    except OSError as exc:  # TimeoutError included
        raise RuntimeError(f"rank {info.rank}: the pod's command sockets did not connect ({exc}); set "
                           f"{ENV_COMMANDS}=gloo in the worker's environment to send commands over gloo") from exc


def enable_one_shot_all_reduce(groups: Groups, dtype: torch.dtype, max_bytes: int = MAX_BYTES) -> bool:
    """All-reduces of the tensor-parallel group in `dtype` up to `max_bytes` go one-shot over symmetric
    memory (GPU, one stage). Sized for the largest decode graph, it keeps NCCL out of captured graphs.
    Unless FMS_FUSED_NORM=0, small decode batches add the decoder's partial sums in the next norm's kernel
    (parallel/reduce_norm.py), over a second symmetric buffer.

    A collective: every rank of the group calls it at the same point. Returns whether it is on.
    """
    state = get_parallel_state()
    if groups.device.type != "cuda" or state.tp_size == 1 or state.pp_size > 1:
        return False
    max_bytes = max(max_bytes, MAX_BYTES)
    one_shot = OneShotAllReduce.create(state.group, groups.device, dtype, max_bytes)
    mode = reduce_norm_mode(state.tp_size)
    reduce_norm = AllReduceAddNorm.create(state.group, groups.device, dtype, max_bytes, push=mode == "push",
                                          ll=mode == "ll") \
        if one_shot is not None and mode is not None else None
    set_parallel_state(replace(state, one_shot=one_shot, reduce_norm=reduce_norm))
    if one_shot is not None:
        log.info("tensor-parallel all-reduces up to %d KiB: one-shot over symmetric memory%s",
                 one_shot.buffer.numel() * dtype.itemsize // 1024,
                 f", fused with the decoder's add+norm ({mode})" if reduce_norm is not None else "")
    return one_shot is not None


DESTROY_TIMEOUT_S = 60.0


def shutdown_groups(timeout_s: float | None = None) -> bool:
    """Leave the process groups. Returns False when destroying them did not finish within the timeout: NCCL
    can block there for good (a communicator held by live CUDA graphs, pytorch/pytorch#115388, which the
    runners avoid by dropping their graphs first), and a worker that cannot leave its group must still be
    able to exit, so the destroy runs in a daemon thread and is abandoned with an error in the log."""
    set_parallel_state(ParallelState())
    if _THREADS_BEFORE:  # rank 0 may be a long-lived process (tests, benchmarks) that builds other engines later
        torch.set_num_threads(_THREADS_BEFORE.pop())
    if not dist.is_initialized():
        return True
    done = threading.Event()

    def destroy():
        dist.destroy_process_group()
        done.set()

    threading.Thread(target=destroy, name="destroy-process-group", daemon=True).start()
    limit = DESTROY_TIMEOUT_S if timeout_s is None else timeout_s
    if done.wait(limit):
        return True
    log.error("destroying the process groups did not finish in %.0f s; leaving them to process exit", limit)
    return False


def broadcast_object(obj, groups: Groups, src: int = 0):
    """`obj` from rank `src` on every rank; rank 0's go through the pod's command channel where there is one."""
    if src == 0 and groups.channel is not None:
        if groups.info.rank == 0:
            groups.channel.send(obj)
            return obj
        return groups.channel.recv()
    box = [obj]
    dist.broadcast_object_list(box, src=src, group=groups.commands)
    return box[0]


def all_reduce_min(value: int, groups: Groups) -> int:
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN, group=groups.commands)
    return int(t.item())
