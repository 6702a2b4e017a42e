"""Snapshots of stuck processes, taken from outside them (no GIL, no signal handlers needed).

    python bench/proc_snapshot.py --pids 123 456 --after 60 --every 20 --count 2 --out stacks.txt

For each pid, at each snapshot: its state and every thread's state and kernel wait channel
(/proc), its kernel stack where readable, `py-spy dump --native` where py-spy is installed
(Python and C frames of every thread), and the GPUs' utilization from nvidia-smi (a GPU at 100%
with no progress is spinning in a collective; one at 0% is waiting on the host).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from pathlib import Path


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError as exc:
        return f"({exc.strerror})"


def threads(pid: int) -> list[str]:
    rows = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*"), key=lambda p: int(p.name)):
        stat = _read(task / "stat")
        # comm is in parentheses and may hold spaces; the state follows the closing one
        state = stat[stat.rfind(")") + 2:].split(" ", 1)[0] if ")" in stat else "?"
        rows.append(f"  tid {task.name:>7} {_read(task / 'comm').strip():<16} state {state}  "
                    f"wchan {_read(task / 'wchan').strip() or '-'}")
    return rows


def snapshot(pids: list[int], py_spy: str | None) -> str:
    out = [f"=== {time.strftime('%H:%M:%S')}"]
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=30)
        out.append("GPUs (index, utilization, memory): " + q.stdout.strip().replace("\n", "; "))
    for pid in pids:
        status = _read(Path(f"/proc/{pid}/status"))
        state = next((line for line in status.splitlines() if line.startswith("State:")), "State: (gone)")
        out.append(f"--- pid {pid} {state}")
        out.extend(threads(pid))
        stack = _read(Path(f"/proc/{pid}/stack")).strip()
        if stack:
            out.append("  kernel stack of the main thread:\n    " + stack.replace("\n", "\n    "))
        if py_spy:
            dump = subprocess.run([py_spy, "dump", "--native", "--pid", str(pid)], capture_output=True, text=True,
                                  timeout=120)
            out.append("  py-spy:\n    " + (dump.stdout + dump.stderr).strip().replace("\n", "\n    "))
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pids", type=int, nargs="+", required=True)
    ap.add_argument("--after", type=float, default=0.0, help="seconds before the first snapshot")
    ap.add_argument("--every", type=float, default=20.0)
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--py-spy", default=shutil.which("py-spy"), help="py-spy binary (default: from PATH)")
    args = ap.parse_args()
    time.sleep(args.after)
    for i in range(args.count):
        with args.out.open("a") as f:
            f.write(snapshot(args.pids, args.py_spy))
        if i + 1 < args.count:
            time.sleep(args.every)


if __name__ == "__main__":
    main()
