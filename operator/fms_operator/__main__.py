"""`fms-operator` / `python -m fms_operator`: run the kopf operator.

The cluster comes from the in-cluster service account or KUBECONFIG.
Peering is off by default (one replica); pass --peering NAME for HA setups.
"""

from __future__ import annotations

import argparse
import ctypes
import sys

import kopf

from fms_operator import logs, metrics


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="fms-operator", description="Operator for FoundationModelService (fms) resources.")
    p.add_argument("-n", "--namespace", action="append", default=[],
                   help="watch only this namespace (repeatable; globs allowed); cluster-wide when not given")
    p.add_argument("--peering", metavar="NAME", default=None,
                   help="coordinate with other operator replicas through this (cluster)kopfpeering; default: standalone")
    p.add_argument("--priority", type=int, default=0,
                   help="kopf peering priority: the highest-priority live replica handles events (the chart passes the pod index)")
    p.add_argument("--liveness", default="http://0.0.0.0:8081/healthz", metavar="URL",
                   help="kopf liveness endpoint; empty disables")
    p.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port; 0 disables")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p.parse_args(argv)


def _limit_malloc_arenas(n: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with kopf's and our worker threads the
    fragmentation roughly doubles peak RSS under load. Same effect as MALLOC_ARENA_MAX=2."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, n)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _limit_malloc_arenas()
    logs.configure(args.verbose)
    import fms_operator.handlers  # noqa: F401  registers the kopf handlers

    if args.metrics_port:
        metrics.serve(args.metrics_port)
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.peering is None,
        peering_name=args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness or None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
