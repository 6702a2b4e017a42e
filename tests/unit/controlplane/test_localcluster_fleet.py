"""hack/fleet.yaml -> Node objects: labels, capacity and pod networks derived from one gpu block."""

from __future__ import annotations

import ipaddress

import pytest

from localcluster.cluster import DEFAULT_FLEET
from localcluster.fleet import FleetError, load_fleet, parse_fleet, render_node, render_nodes

PRODUCTS = {"NVIDIA-L4": {"memoryMiB": 23034, "family": "ada-lovelace", "fp8": True}}


def fleet_doc(gpu: dict | None, count: int = 1, name: str = "g") -> dict:
    group = {"name": name, "count": count, "cpu": "8", "memory": "64Gi"}
    if gpu is not None:
        group["gpu"] = gpu
    return {"gpuProducts": PRODUCTS, "groups": [group]}


def by_name():
    return {n.name: n for n in load_fleet(DEFAULT_FLEET)}


def test_the_fleet_file_has_the_documented_shape():
    nodes = by_name()
    assert sorted(nodes) == ["a100-0", "cpu-0", "cpu-1", "h100-0", "h100-1", "l4-0", "l4-1"]
    shapes = {name: (n.gpus.product.name, n.gpus.count, n.gpus.interconnect, n.gpus.nvlink_domains)
              for name, n in nodes.items() if n.gpus}
    assert shapes == {
        "h100-0": ("NVIDIA-H100-80GB-HBM3", 8, "nvlink", 1),
        "h100-1": ("NVIDIA-H100-80GB-HBM3", 8, "nvlink", 1),
        "a100-0": ("NVIDIA-A100-SXM4-80GB", 8, "nvlink", 2),
        "l4-0": ("NVIDIA-L4", 4, "pcie", 0),
        "l4-1": ("NVIDIA-L4", 4, "pcie", 0),
    }


@pytest.mark.parametrize("name, want", [
    ("h100-0", {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "nvidia.com/gpu.count": "8",
                "nvidia.com/gpu.memory": "81559", "nvidia.com/gpu.family": "hopper",
                "topology.fms.dev/interconnect": "nvlink", "topology.fms.dev/nvlink-domain-size": "8",
                "topology.fms.dev/nvlink-domains": "1", "topology.fms.dev/fp8": "true"}),
    ("a100-0", {"nvidia.com/gpu.family": "ampere", "topology.fms.dev/nvlink-domain-size": "4",
                "topology.fms.dev/nvlink-domains": "2", "topology.fms.dev/fp8": "false"}),
    ("l4-0", {"nvidia.com/gpu.count": "4", "topology.fms.dev/interconnect": "pcie", "topology.fms.dev/fp8": "true"}),
])
def test_gpu_nodes_carry_gfd_and_topology_labels(name, want):
    labels = render_node(by_name()[name])["metadata"]["labels"]
    assert want.items() <= labels.items()


def test_pcie_and_cpu_nodes_have_no_nvlink_labels_and_cpu_nodes_no_gpus():
    l4 = render_node(by_name()["l4-0"])
    assert not [k for k in l4["metadata"]["labels"] if "nvlink" in k]
    cpu = render_node(by_name()["cpu-0"])
    assert not [k for k in cpu["metadata"]["labels"] if k.startswith(("nvidia.com/", "topology.fms.dev/"))]
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]


def test_gpu_capacity_matches_the_count_label():
    for node in by_name().values():
        obj = render_node(node)
        cap, alloc = obj["status"]["capacity"], obj["status"]["allocatable"]
        assert cap == alloc
        assert cap.get("nvidia.com/gpu") == obj["metadata"]["labels"].get("nvidia.com/gpu.count")


def test_every_node_gets_its_own_loopback_pod_network_and_the_kwok_annotation():
    items = render_nodes(list(by_name().values()))["items"]
    nets = [ipaddress.ip_network(n["spec"]["podCIDR"]) for n in items]
    assert len(set(nets)) == len(nets)
    assert all(net.subnet_of(ipaddress.ip_network("127.0.0.0/8")) for net in nets)
    assert all(n["metadata"]["annotations"] == {"kwok.x-k8s.io/node": "fake"} for n in items)


@pytest.mark.parametrize("gpu, message", [
    ({"product": "NVIDIA-L4", "count": 8, "machine": "m", "interconnect": "nvlink", "nvlinkDomainSize": 3},
     "nvlinkDomainSize 3 must divide the GPU count 8"),
    ({"product": "NVIDIA-L4", "count": 4, "machine": "m", "interconnect": "pcie", "nvlinkDomainSize": 4},
     "only for interconnect: nvlink"),
    ({"product": "NVIDIA-B200", "count": 8, "machine": "m", "interconnect": "nvlink", "nvlinkDomainSize": 8},
     "not under gpuProducts"),
    ({"product": "NVIDIA-L4", "count": 4, "machine": "m", "interconnect": "infiniband"}, "must be one of"),
    ({"product": "NVIDIA-L4", "count": 4, "interconnect": "pcie"}, "missing `machine`"),
])
def test_invalid_gpu_blocks_say_what_to_fix(gpu, message):
    with pytest.raises(FleetError, match=message):
        parse_fleet(fleet_doc(gpu))


def test_repeated_group_names_are_refused():
    doc = fleet_doc(None)
    doc["groups"].append(dict(doc["groups"][0]))
    with pytest.raises(FleetError, match="distinct `name`"):
        parse_fleet(doc)
