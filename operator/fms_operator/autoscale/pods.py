"""Which pods of an fms to sample, and which one to remove on scale-down.

Works on pod manifests as plain dicts (what kopf and the kube module hand
around), so it is pure and tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .collector_scrape import ScrapeTarget

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"


@dataclass(frozen=True)
class PodView:
    name: str
    ip: str
    ready: bool
    terminating: bool
    metrics_port: int | None

    @classmethod
    def from_manifest(cls, pod: Mapping[str, Any]) -> "PodView":
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())
        return cls(
            name=meta["name"],
            ip=status.get("podIP") or "",
            ready=ready and status.get("phase") == "Running",
            terminating=meta.get("deletionTimestamp") is not None,
            metrics_port=_metrics_port(spec),
        )

    @property
    def serving(self) -> bool:
        return self.ready and not self.terminating and bool(self.ip) and self.metrics_port is not None


def _metrics_port(spec: Mapping[str, Any]) -> int | None:
    # The `metrics` port when the worker has one, else /metrics on the API port.
    ports = {p.get("name"): p.get("containerPort") for c in spec.get("containers") or () for p in c.get("ports") or ()}
    return ports.get("metrics") or ports.get("http")


def scrape_targets(pods: list[PodView]) -> list[ScrapeTarget]:
    return [ScrapeTarget(p.name, f"http://{_host(p.ip)}:{p.metrics_port}/metrics") for p in pods if p.serving]


def _host(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def removal_order(load_by_pod: Mapping[str, float], count: int) -> dict[str, str]:
    """Deletion-cost annotations that make the ReplicaSet remove the `count`
    least-loaded pods (fewest requests to drain) first: they get negative
    costs, below the default 0 of every other pod. Ties break by name."""
    if count <= 0:
        return {}
    chosen = sorted(load_by_pod.items(), key=lambda kv: (kv[1], kv[0]))[:count]
    return {pod: str(-1000 + rank) for rank, (pod, _) in enumerate(chosen)}
