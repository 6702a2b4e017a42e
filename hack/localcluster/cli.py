"""Command line: up / down / status / spawn."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import cluster, process
from .binaries import MissingBinary
from .commands import Layout
from .fleet import FleetError

REPO = Path(__file__).resolve().parent.parent.parent
DEFAULT_DIR = REPO / ".cache" / "cluster"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state folder (default: %(default)s)")
    # --dir is accepted after the subcommand as well (SUPPRESS keeps the top-level default).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, default=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", parents=[common], help="start a fresh control plane and the simulated fleet")
    up.add_argument("--fleet", type=Path, default=cluster.DEFAULT_FLEET, help="fleet file (default: %(default)s)")
    sub.add_parser("down", parents=[common], help="stop every process started in --dir (by PID)")
    sub.add_parser("status", parents=[common], help="print the processes and API readiness as JSON")
    spawn = sub.add_parser("spawn", parents=[common], help="start a detached process that `down` stops too (e.g. the operator)")
    spawn.add_argument("name")
    spawn.add_argument("argv", nargs=argparse.REMAINDER, help="-- command ...")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "up":
            c = cluster.up(args.dir, args.fleet)
            t = c.timings
            print(f"cluster up in {t['total_s']:.1f} s (API ready after {t['apiserver_ready_s']:.1f} s)")
            print(f"  server:     {c.server}")
            print(f"  kubeconfig: export KUBECONFIG={c.kubeconfig}")
            print(f"  stop:       python hack/localcluster down --dir {args.dir}")
        elif args.cmd == "down":
            stopped = cluster.down(args.dir)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.cmd == "status":
            st = cluster.status(args.dir)
            print(json.dumps(st, indent=2))
            return 0 if st["processes"] and all(st["processes"].values()) and st.get("readyz") else 1
        elif args.cmd == "spawn":
            argv_ = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not argv_:
                print("spawn needs a command: spawn NAME -- CMD ...", file=sys.stderr)
                return 2
            lay = Layout(args.dir.resolve())
            rec = process.spawn(args.name, argv_, lay.pids, lay.logs)
            print(f"started {args.name} (pid {rec.pid}); log: {lay.logs / (args.name + '.log')}")
    except (cluster.ClusterError, MissingBinary, FleetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0
