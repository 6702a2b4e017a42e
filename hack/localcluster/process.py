"""Detached processes recorded by PID file, stopped by PID (never by name).

Each process gets pids/<name>.json ({pid, argv, started}) and logs/<name>.log
in the state folder. A PID is only signalled while /proc/<pid>/cmdline still
equals the recorded argv, so a recycled PID is never hit.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PR_SET_PDEATHSIG = 1
# Popen objects of processes this Python started: kept so they are reaped in
# stop() (a dropped Popen of a live child warns ResourceWarning, an error under pytest).
_children: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class Record:
    name: str
    pid: int
    argv: list[str]
    started: float


def _die_with_parent() -> None:
    # Runs in the child before exec: SIGTERM it when the parent (pytest) dies,
    # so a crashed test session leaves no control plane behind.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(name: str, argv: list[str], pids: Path, logs: Path, *, bind_to_parent: bool = False,
          env: dict[str, str] | None = None) -> Record:
    pids.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True, preexec_fn=_die_with_parent if bind_to_parent else None,
        )
    _children[proc.pid] = proc
    rec = Record(name, proc.pid, list(argv), time.time())
    (pids / f"{name}.json").write_text(json.dumps(vars(rec)))
    return rec


def child(rec: Record) -> subprocess.Popen:
    """The Popen of a process this Python spawned, to poll, signal or wait on it."""
    return _children[rec.pid]


def records(pids: Path) -> list[Record]:
    """Recorded processes, oldest first."""
    recs = [Record(**json.loads(p.read_text())) for p in pids.glob("*.json")] if pids.is_dir() else []
    return sorted(recs, key=lambda r: r.started)


def alive(rec: Record) -> bool:
    try:
        raw = Path(f"/proc/{rec.pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if not raw:  # a zombie: exited, not yet reaped
        return False
    return raw.rstrip(b"\0").split(b"\0") == [a.encode() for a in rec.argv]


def _signal(rec: Record, sig: int) -> None:
    if alive(rec):
        try:
            os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass


def stop(pids: Path, grace_s: float = 10.0, names: set[str] | None = None) -> list[str]:
    """SIGTERM every recorded process (or those in `names`), newest first; SIGKILL what outlives `grace_s`.
    Returns the names stopped."""
    recs = [r for r in reversed(records(pids)) if names is None or r.name in names]
    stopped = [r.name for r in recs if alive(r)]
    for rec in recs:
        _signal(rec, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(r) for r in recs) and time.monotonic() < deadline:
        time.sleep(0.1)
    for rec in recs:
        _signal(rec, signal.SIGKILL)
    for rec in recs:
        if (child := _children.pop(rec.pid, None)) is not None:
            child.wait()
        (pids / f"{rec.name}.json").unlink(missing_ok=True)
    return stopped
