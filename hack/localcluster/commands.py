"""Command lines and config files of each control-plane component (pure: paths and ports in, argv/dicts out)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .binaries import Binaries
from .fleet import KWOK_ANNOTATION

SERVICE_CIDR = "10.96.0.0/16"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
# kwok renews each node's Lease; the node lifecycle controller then keeps the
# node Ready without status heartbeats (like a modern kubelet).
NODE_LEASE_SECONDS = 40
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int


@dataclass(frozen=True)
class Layout:
    """The state folder: everything a cluster writes lives under `dir`."""

    dir: Path

    @property
    def pki(self) -> Path:
        return self.dir / "pki"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def pids(self) -> Path:
        return self.dir / "pids"

    @property
    def etcd_data(self) -> Path:
        return self.dir / "etcd"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig users and tests point KUBECONFIG at."""
        return self.dir / "kubeconfig"

    def component_kubeconfig(self, stem: str) -> Path:
        return self.dir / f"{stem}.kubeconfig"

    @property
    def kwok_config(self) -> Path:
        return self.dir / "kwok.yaml"

    @property
    def state(self) -> Path:
        return self.dir / "cluster.json"


def server_url(ports: Ports) -> str:
    return f"https://127.0.0.1:{ports.apiserver}"


def etcd_command(b: Binaries, lay: Layout, p: Ports) -> list[str]:
    client = f"http://127.0.0.1:{p.etcd_client}"
    peer = f"http://127.0.0.1:{p.etcd_peer}"
    return [
        str(b.etcd), "--name=local", f"--data-dir={lay.etcd_data}",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=local={peer}",
        # A throwaway store: no fsync, small backend; startup and writes stay fast on a busy disk.
        "--unsafe-no-fsync", "--quota-backend-bytes=2147483648", "--log-level=warn",
    ]


def apiserver_command(b: Binaries, lay: Layout, p: Ports) -> list[str]:
    pki = lay.pki
    return [
        str(b.apiserver),
        f"--etcd-servers=http://127.0.0.1:{p.etcd_client}",
        "--bind-address=127.0.0.1", f"--secure-port={p.apiserver}",
        # Only loopback exists: advertise it and skip the endpoint reconciler,
        # which would otherwise fight other local clusters over the same IP.
        "--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--service-account-issuer={SA_ISSUER}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--authorization-mode=Node,RBAC",
        # DRA is GA in 1.34; ask for its API explicitly so a changed default fails loudly here.
        "--runtime-config=resource.k8s.io/v1=true",
        "--allow-privileged=true",
        "--profiling=false",
    ]


def _component_common(lay: Layout, stem: str, port: int) -> list[str]:
    kc = lay.component_kubeconfig(stem)
    return [
        f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1", f"--secure-port={port}",
        # One instance per cluster: no lease to win, so it starts working at once.
        "--leader-elect=false", "--profiling=false",
        # The default client rate limit (20 QPS) makes the controller-manager's
        # start-up (a ServiceAccount and token per controller) take seconds.
        "--kube-api-qps=200", "--kube-api-burst=400",
    ]


def controller_manager_command(b: Binaries, lay: Layout, p: Ports) -> list[str]:
    return [
        str(b.controller_manager), *_component_common(lay, "controller-manager", p.controller_manager),
        # Tokens for ServiceAccounts and the root CA in every namespace (kube-root-ca.crt).
        f"--service-account-private-key-file={lay.pki / 'sa.key'}",
        f"--root-ca-file={lay.pki / 'ca.crt'}",
        "--use-service-account-credentials=true",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # All default controllers, the garbage collector (ownerReferences cascade) included.
        "--controllers=*",
    ]


def scheduler_command(b: Binaries, lay: Layout, p: Ports) -> list[str]:
    return [str(b.scheduler), *_component_common(lay, "scheduler", p.scheduler)]


def kwok_command(b: Binaries, lay: Layout, stages: list[Path]) -> list[str]:
    configs = [*stages, lay.kwok_config]
    return [
        str(b.kwok),
        f"--kubeconfig={lay.component_kubeconfig('kwok')}",
        *[f"--config={c}" for c in configs],
        f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION[0]}={KWOK_ANNOTATION[1]}",
    ]


def kwok_config(fallback_cidr: str = "127.10.0.0/24") -> dict[str, Any]:
    """KwokConfiguration: pods on nodes without a podCIDR take IPs from `fallback_cidr` (loopback)."""
    return {
        "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
        "kind": "KwokConfiguration",
        # kwok applies its defaults only when no config file is given, so the
        # parallelism settings it documents as defaults are spelled out.
        "options": {
            "cidr": fallback_cidr,
            "nodeLeaseDurationSeconds": NODE_LEASE_SECONDS,
            "nodeLeaseParallelism": 4,
            "nodePlayStageParallelism": 4,
            "podPlayStageParallelism": 4,
            "podsOnNodeSyncParallelism": 1,
        },
    }


def kubeconfig(server: str, ca: Path, cert: Path, key: Path, user: str = "admin") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fms-local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "fms-local", "context": {"cluster": "fms-local", "user": user}}],
        "current-context": "fms-local",
    }
