"""The simulated GPU fleet: hack/fleet.yaml -> Node objects (pure, no I/O but reading the file).

Every label and capacity figure of a node is derived here from one `gpu`
block, so `nvidia.com/gpu.count` and the `nvidia.com/gpu` capacity can never
disagree. docs/fleet.md describes the labels.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# kwok only simulates nodes carrying this annotation (see commands.kwok_command).
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
GFD = "nvidia.com/gpu"
TOPOLOGY = "topology.fms.dev"
INTERCONNECTS = ("nvlink", "pcie")
# Pods of node i get IPs from 127.10.(i+1).0/24: on Linux all of 127/8 is
# loopback, so a test can bind a real worker process to a pod's IP.
POD_NETWORK = ipaddress.ip_network("127.10.0.0/16")


class FleetError(ValueError):
    """hack/fleet.yaml is invalid; the message says which entry and how to fix it."""


@dataclass(frozen=True)
class GPUProduct:
    name: str
    memory_mib: int
    family: str
    fp8: bool


@dataclass(frozen=True)
class GPUs:
    product: GPUProduct
    count: int
    machine: str
    interconnect: str  # "nvlink" | "pcie"
    nvlink_domain_size: int  # 0 when interconnect is pcie

    @property
    def nvlink_domains(self) -> int:
        return self.count // self.nvlink_domain_size if self.nvlink_domain_size else 0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    cpu: str
    memory: str
    pods: int
    gpus: GPUs | None
    pod_cidr: str


def _require(entry: dict[str, Any], key: str, where: str) -> Any:
    if key not in entry:
        raise FleetError(f"{where}: missing `{key}`")
    return entry[key]


def _parse_products(raw: dict[str, Any]) -> dict[str, GPUProduct]:
    products = {}
    for name, p in (raw or {}).items():
        where = f"gpuProducts.{name}"
        products[name] = GPUProduct(
            name=name,
            memory_mib=int(_require(p, "memoryMiB", where)),
            family=str(_require(p, "family", where)),
            fp8=bool(_require(p, "fp8", where)),
        )
    return products


def _parse_gpus(raw: dict[str, Any], products: dict[str, GPUProduct], where: str) -> GPUs:
    product_name = _require(raw, "product", where)
    if product_name not in products:
        raise FleetError(f"{where}: product {product_name!r} is not under gpuProducts; add it there ({sorted(products)})")
    count = int(_require(raw, "count", where))
    interconnect = _require(raw, "interconnect", where)
    if interconnect not in INTERCONNECTS:
        raise FleetError(f"{where}: interconnect {interconnect!r} must be one of {INTERCONNECTS}")
    domain = int(raw.get("nvlinkDomainSize", 0))
    if interconnect == "nvlink" and (domain <= 0 or count % domain):
        raise FleetError(f"{where}: nvlinkDomainSize {domain} must divide the GPU count {count}")
    if interconnect == "pcie" and domain:
        raise FleetError(f"{where}: nvlinkDomainSize is only for interconnect: nvlink; remove it")
    return GPUs(products[product_name], count, str(_require(raw, "machine", where)), interconnect, domain)


def parse_fleet(doc: dict[str, Any]) -> list[NodeSpec]:
    products = _parse_products(doc.get("gpuProducts", {}))
    nodes: list[NodeSpec] = []
    for g, group in enumerate(doc.get("groups") or []):
        where = f"groups[{g}] ({group.get('name', '?')})"
        gpus = _parse_gpus(group["gpu"], products, f"{where}.gpu") if group.get("gpu") else None
        for i in range(int(group.get("count", 1))):
            index = len(nodes) + 1
            if index > 255:
                raise FleetError("at most 255 nodes fit the 127.10.0.0/16 pod network")
            nodes.append(
                NodeSpec(
                    name=f"{_require(group, 'name', where)}-{i}",
                    cpu=str(_require(group, "cpu", where)),
                    memory=str(_require(group, "memory", where)),
                    pods=int(group.get("pods", 110)),
                    gpus=gpus,
                    pod_cidr=str(list(POD_NETWORK.subnets(new_prefix=24))[index]),
                )
            )
    if len({n.name for n in nodes}) != len(nodes):
        raise FleetError("node names repeat; give every group a distinct `name`")
    return nodes


def load_fleet(path: Path) -> list[NodeSpec]:
    return parse_fleet(yaml.safe_load(path.read_text()))


def node_labels(node: NodeSpec) -> dict[str, str]:
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
    }
    g = node.gpus
    if g is None:
        return labels
    labels |= {
        f"{GFD}.product": g.product.name,
        f"{GFD}.count": str(g.count),
        f"{GFD}.memory": str(g.product.memory_mib),
        f"{GFD}.family": g.product.family,
        f"{GFD}.machine": g.machine,
        f"{TOPOLOGY}/interconnect": g.interconnect,
        f"{TOPOLOGY}/fp8": str(g.product.fp8).lower(),
    }
    if g.interconnect == "nvlink":
        labels[f"{TOPOLOGY}/nvlink-domain-size"] = str(g.nvlink_domain_size)
        labels[f"{TOPOLOGY}/nvlink-domains"] = str(g.nvlink_domains)
    return labels


def render_node(node: NodeSpec) -> dict[str, Any]:
    resources = {"cpu": node.cpu, "memory": node.memory, "pods": str(node.pods), "ephemeral-storage": "1Ti"}
    if node.gpus is not None:
        resources["nvidia.com/gpu"] = str(node.gpus.count)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": node_labels(node),
            "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1]},
        },
        "spec": {"podCIDR": node.pod_cidr, "podCIDRs": [node.pod_cidr]},
        # The API server keeps a Node's status on create, and kwok's
        # node-initialize stage preserves capacity/allocatable it finds.
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": node.name},
            ],
        },
    }


def render_nodes(nodes: list[NodeSpec]) -> dict[str, Any]:
    """All nodes as one v1 List, for a single `kubectl apply`."""
    return {"apiVersion": "v1", "kind": "List", "items": [render_node(n) for n in nodes]}
