"""The local control plane schedules against the simulated GPU fleet like a real cluster would."""

from __future__ import annotations

import ipaddress
import json
import time

import pytest

from localcluster.cluster import DEFAULT_FLEET
from localcluster.fleet import load_fleet, node_labels

pytestmark = pytest.mark.integration


def deployment(name: str, gpus: int) -> str:
    return json.dumps({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "server", "image": "fms-worker:test",
                    "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                }]},
            },
        },
    })


def get_json(cluster, *args: str) -> dict:
    return json.loads(cluster.kubectl("get", *args, "-o", "json").stdout)


def wait_for(what: str, probe, timeout: float = 60.0):
    """Poll `probe` until it returns something truthy; fail with `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := probe():
            return result
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def pods_of(cluster, namespace: str, app: str) -> list[dict]:
    return get_json(cluster, "pods", "-n", namespace, "-l", f"app={app}")["items"]


def condition(obj: dict, kind: str) -> dict | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), None)


def test_fleet_nodes_carry_gpu_labels(cluster):
    fleet = load_fleet(DEFAULT_FLEET)
    table = cluster.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").stdout
    rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
    assert "GPU.PRODUCT" in table.splitlines()[0]
    assert set(rows) == {n.name for n in fleet}
    for spec in fleet:
        assert rows[spec.name][1] == "Ready"
        if spec.gpus is not None:
            assert rows[spec.name][-1] == spec.gpus.product.name
        node = get_json(cluster, "node", spec.name)
        assert node_labels(spec).items() <= node["metadata"]["labels"].items()
        want_gpus = str(spec.gpus.count) if spec.gpus else None
        assert node["status"]["allocatable"].get("nvidia.com/gpu") == want_gpus


def test_dra_api_is_served(cluster):
    out = cluster.kubectl("api-resources", "--api-group=resource.k8s.io", "-o", "name").stdout.split()
    assert "resourceslices.resource.k8s.io" in out
    assert "resourceclaims.resource.k8s.io" in out


def test_eight_gpus_land_on_an_eight_gpu_node(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("tp8", 8))
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/tp8", "--timeout=60s")

    rs = get_json(cluster, "replicasets", "-n", namespace, "-l", "app=tp8")["items"]
    assert [o["kind"] for o in rs[0]["metadata"]["ownerReferences"]] == ["Deployment"]
    [pod] = pods_of(cluster, namespace, "tp8")
    node = get_json(cluster, "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.count"] == "8"
    assert pod["status"]["phase"] == "Running"
    # kwok hands out loopback pod IPs from the node's podCIDR: bindable by a real worker process.
    ip = ipaddress.ip_address(pod["status"]["podIP"])
    assert ip.is_loopback and ip in ipaddress.ip_network(node["spec"]["podCIDR"])


def test_sixteen_gpus_stay_pending_with_the_schedulers_reason(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("tp16", 16))

    def unschedulable():
        pods = pods_of(cluster, namespace, "tp16")
        cond = condition(pods[0], "PodScheduled") if pods else None
        return (pods[0], cond) if cond and cond["status"] == "False" else None

    pod, cond = wait_for("PodScheduled=False on the tp16 pod", unschedulable)
    assert cond["reason"] == "Unschedulable"
    assert "Insufficient nvidia.com/gpu" in cond["message"]
    assert pod["status"]["phase"] == "Pending" and "nodeName" not in pod["spec"]
    events = get_json(cluster, "events", "-n", namespace,
                      "--field-selector", f"involvedObject.name={pod['metadata']['name']}")["items"]
    assert any(e["reason"] == "FailedScheduling" and "Insufficient nvidia.com/gpu" in e["message"] for e in events)
    assert get_json(cluster, "replicasets", "-n", namespace, "-l", "app=tp16")["items"]


def test_deleting_a_deployment_cascades_to_its_pods(cluster, namespace):
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=deployment("gc", 1))
    cluster.kubectl("rollout", "status", "-n", namespace, "deployment/gc", "--timeout=60s")
    cluster.kubectl("delete", "-n", namespace, "deployment/gc", "--cascade=background")
    wait_for("the garbage collector to remove the ReplicaSet and Pod", lambda: not (
        get_json(cluster, "replicasets", "-n", namespace)["items"] or pods_of(cluster, namespace, "gc")))
