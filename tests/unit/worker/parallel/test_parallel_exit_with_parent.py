"""A follower rank exits when the process that spawned it is gone, and not when the spawning thread ends."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

WORKER = str(Path(__file__).resolve().parents[4] / "worker")

# The follower: watches the pid its spawner handed it (as follower_main does with FMS_PARENT_PID; its own
# getppid() at that point may already be a reaper's), says so in a marker file, then waits to be stopped.
FOLLOWER = """
import sys, time
from pathlib import Path
from fms_worker.parallel.launch import exit_with_parent
exit_with_parent(int(sys.argv[1]), interval_s=0.05)
Path(sys.argv[2]).touch()
time.sleep(120)
"""

# Rank 0's stand-in: spawns the follower from a thread that ends at once (as the server's executor
# thread does), reports its pid, then lives on.
RANK0 = f"""
import os, subprocess, sys, threading, time
procs = []
argv = [sys.executable, "-c", {FOLLOWER!r}, str(os.getpid()), sys.argv[1]]
t = threading.Thread(target=lambda: procs.append(subprocess.Popen(argv)))
t.start()
t.join()
print(procs[0].pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(pid)


def test_follower_outlives_the_spawning_thread_and_exits_with_the_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [WORKER, os.environ.get("PYTHONPATH")])))
    marker = tmp_path / "watching"
    rank0 = subprocess.Popen([sys.executable, "-c", RANK0, str(marker)], env=env, stdout=subprocess.PIPE, text=True)
    follower = None
    try:
        follower = int(rank0.stdout.readline())
        deadline = time.monotonic() + 120  # the follower imports torch first
        while not marker.exists() and _alive(follower) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the follower never started watching"
        time.sleep(1.0)  # the spawning thread has long ended; many watch intervals have passed
        assert _alive(follower), "the follower died with the thread that spawned it"
        rank0.kill()
        rank0.wait(10)
        assert _gone_within(follower, 10), "the follower outlived rank 0"
    finally:
        if rank0.poll() is None:
            rank0.kill()
        rank0.stdout.close()
        if follower is not None and _alive(follower):
            os.kill(follower, 9)
