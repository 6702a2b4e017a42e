"""GPU- and NVLink-aware placement on the simulated fleet, with the real scheduler.

h100-0/1: 8 GPUs in one NVLink domain; a100-0: 8 GPUs in two domains of 4;
l4-0/1: 4 PCIe GPUs. The operator runs as a subprocess; the kube-scheduler
places the worker pods (kwok plays the kubelets).
"""

from __future__ import annotations

import json

import pytest
from operator_harness import apply, condition, get, sample, wait_until

pytestmark = pytest.mark.integration

H100, A100, L4 = "NVIDIA-H100-80GB-HBM3", "NVIDIA-A100-SXM4-80GB", "NVIDIA-L4"


def service(name: str, tensor: int, replicas: int = 1, pipeline: int = 1, product: str | None = None,
            interconnect: str = "nvlink-required", **placement) -> dict:
    doc = sample("generate-minimal")
    doc["metadata"]["name"] = name
    doc["spec"] |= {"replicas": replicas, "parallelism": {"tensor": tensor, "pipeline": pipeline},
                    "resources": {"cpu": "1", "memory": "4Gi", **({"gpuProduct": product} if product else {})},
                    "placement": {"interconnect": interconnect, **placement}}
    return doc


def pods(cluster, ns: str, name: str) -> list[dict]:
    out = cluster.kubectl("-n", ns, "get", "pods", "-l", f"serving.fms.dev/name={name}", "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def bound_nodes(cluster, ns: str, name: str, count: int) -> list[str]:
    def probe():
        nodes = [p["spec"].get("nodeName") for p in pods(cluster, ns, name)]
        return nodes if len(nodes) == count and all(nodes) else None
    return sorted(wait_until(f"{count} pod(s) of {name} bound", probe, timeout=90))


def remove(cluster, ns: str, name: str) -> None:
    """Free the GPUs now: the next test needs the same nodes."""
    cluster.kubectl("-n", ns, "delete", "fms", name, "--wait=true", "--timeout=60s", check=False)
    wait_until(f"pods of {name} gone", lambda: not pods(cluster, ns, name), timeout=60)


def test_tp8_lands_only_on_the_8_gpu_nvlink_nodes(cluster, operator, namespace):
    apply(cluster, namespace, service("tp8", tensor=8, replicas=2))
    assert bound_nodes(cluster, namespace, "tp8", 2) == ["h100-0", "h100-1"]  # a100-0 has 8 GPUs, but domains of 4
    fms = wait_until("placement in status", lambda: (f := get(cluster, "fms", namespace, "tp8"))
                     and len([p for p in f["status"].get("placement", []) if p.get("node")]) == 2 and f)
    assert condition(fms, "Placed")["status"] == "True"
    remove(cluster, namespace, "tp8")


def test_tp4_nvlink_required_on_the_a100_node(cluster, operator, namespace):
    apply(cluster, namespace, service("tp4", tensor=4, replicas=2, product=A100))
    assert bound_nodes(cluster, namespace, "tp4", 2) == ["a100-0", "a100-0"]  # one per 4-GPU domain
    remove(cluster, namespace, "tp4")


def test_tp8_on_l4_stays_pending_and_says_why(cluster, operator, namespace):
    apply(cluster, namespace, service("tp8-l4", tensor=8, product=L4))

    def pending():
        f = get(cluster, "fms", namespace, "tp8-l4")
        return f if condition(f, "Placed").get("status") == "False" else None

    fms = wait_until("Placed=False", pending, timeout=90)
    placed = condition(fms, "Placed")
    assert fms["status"]["phase"] == "Pending"
    assert placed["reason"] == "NoNVLinkDomain", placed
    assert "NVLink domain" in placed["message"] and "8" in placed["message"] and L4 in placed["message"]
    assert all(not p["spec"].get("nodeName") for p in pods(cluster, namespace, "tp8-l4"))


def test_tp8_on_l4_without_nvlink_needs_more_gpus_than_a_node_has(cluster, operator, namespace):
    apply(cluster, namespace, service("tp8-l4-any", tensor=8, product=L4, interconnect="any"))

    def pending():
        f = get(cluster, "fms", namespace, "tp8-l4-any")
        return f if condition(f, "Placed").get("status") == "False" else None

    placed = condition(wait_until("Placed=False", pending, timeout=90), "Placed")
    assert placed["reason"] == "InsufficientGPUs", placed
    assert "8" in placed["message"] and "nvidia.com/gpu" in placed["message"]
