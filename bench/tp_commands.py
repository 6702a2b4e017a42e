"""How long rank 0 is held sending one step's command to a follower: gloo broadcast vs the pod's sockets.

Two CPU processes join a real process group (`launch.init_groups`, gloo) and exchange real commands: a
256-sequence decode step as the followers get it (`SchedulerOutput.for_followers`, ~600-token contexts in
16-token blocks). Each step rank 0 sends the command, then does `--rank0-ms` of other host work
(scheduling, detokenizing); the follower receives it, then is busy `--follower-ms` (building inputs,
launching). Printed per transport: the median time rank 0 spends inside the send (pickling included),
the follower's median wait for the next command, and the loop period of the slower rank. Overlapped, the
period is the larger of the two works; one after the other, their sum.

    python bench/tp_commands.py [--steps 200] [--rank0-ms 4] [--follower-ms 6]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "worker"))


def busy(ms: float) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        pass


def step_command(seqs: int = 256, context: int = 600, block: int = 16):
    from fms_worker.engine.types import SamplingParams
    from fms_worker.scheduler.output import ScheduledSeq, SchedulerOutput

    rows = [ScheduledSeq(seq_id=i, token_ids=list(range(context)), start=context - 1, num_new=1,
                         block_ids=list(range(i * 64, i * 64 + context // block + 1)), sample=True,
                         params=SamplingParams(temperature=0.0, max_tokens=256, ignore_eos=True),
                         num_prompt_tokens=context - 40, inflight_input=True) for i in range(seqs)]
    return ("launch", (SchedulerOutput(seqs=rows, num_batched_tokens=seqs).for_followers(),))


def rank(r: int, port: int, transport: str, args, out) -> None:
    os.environ["FMS_COMMANDS"] = transport
    import torch

    from fms_worker.parallel import launch

    groups = launch.init_groups(launch.RankInfo(r, 2, 2, 1), port, torch.device("cpu"), local_ranks=2)
    cmd = step_command()
    held, waits, t0 = [], [], time.perf_counter()
    for _ in range(args.steps):
        if r == 0:
            t = time.perf_counter()
            launch.broadcast_object(cmd, groups)
            held.append(time.perf_counter() - t)
            busy(args.rank0_ms)
        else:
            t = time.perf_counter()
            launch.broadcast_object(None, groups)
            waits.append(time.perf_counter() - t)
            busy(args.follower_ms)
    period = (time.perf_counter() - t0) / args.steps
    if r == 0:
        launch.broadcast_object(("stop", ()), groups)
    else:
        launch.broadcast_object(None, groups)
    if groups.channel is not None:
        groups.channel.close()
    launch.shutdown_groups()
    out.put((r, statistics.median(held or waits) * 1e3, period * 1e3))


def run(transport: str, args) -> dict:
    from fms_worker.parallel import launch

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    port = launch.free_port()
    procs = [ctx.Process(target=rank, args=(r, port, transport, args, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    res = {r: (med, period) for r, med, period in (out.get(timeout=600) for _ in procs)}
    for p in procs:
        p.join()
    # the slower rank sets the pace (rank 0 may finish early with commands still queued in the sockets)
    return {"rank0_send_ms": res[0][0], "follower_wait_ms": res[1][0], "period_ms": max(res[0][1], res[1][1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rank0-ms", type=float, default=4.0, help="rank 0's other host work per step")
    ap.add_argument("--follower-ms", type=float, default=6.0, help="the follower's work per step")
    args = ap.parse_args()
    import pickle

    size = len(pickle.dumps(step_command(), protocol=pickle.HIGHEST_PROTOCOL))
    print(f"256-sequence step command: {size / 1024:.1f} KiB pickled; rank 0 works {args.rank0_ms} ms a step, "
          f"the follower {args.follower_ms} ms")
    print(f"{'transport':10} {'rank 0 in send':>15} {'follower wait':>14} {'loop period':>12}")
    for transport in ("gloo", "socket"):
        r = run(transport, args)
        print(f"{transport:10} {r['rank0_send_ms']:12.3f} ms {r['follower_wait_ms']:11.3f} ms {r['period_ms']:9.3f} ms")


if __name__ == "__main__":
    main()
