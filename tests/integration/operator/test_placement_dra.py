"""GPUs through DRA (resource.k8s.io/v1): the real kube-scheduler allocates devices of one NVLink clique.

The test plays the DRA driver: a DeviceClass and, per GPU node of the fleet, a
ResourceSlice listing its GPUs with a `nvlinkClique` attribute (node name and
NVLink domain; PCIe GPUs have none). The scheduler's DynamicResources plugin
(on by default in 1.34) allocates the ResourceClaims the controller-manager
creates from the operator's ResourceClaimTemplate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from operator_harness import apply, get, wait_until
from test_placement_fleet import A100, service

from localcluster.fleet import load_fleet

pytestmark = pytest.mark.integration

DRIVER = "gpu.fms.dev"
FLEET = Path(__file__).resolve().parents[3] / "hack" / "fleet.yaml"


def clique_of(node, index: int) -> str | None:
    g = node.gpus
    return f"{node.name}.{index // g.nvlink_domain_size}" if g.interconnect == "nvlink" else None


def driver_objects() -> tuple[list[dict], dict[tuple[str, str], str | None]]:
    """(DeviceClass + ResourceSlices, (pool, device) -> clique)."""
    objects = [{"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": DRIVER},
                "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRIVER}"'}}]}}]
    cliques = {}
    for node in load_fleet(FLEET):
        if node.gpus is None:
            continue
        devices = []
        for i in range(node.gpus.count):
            attrs = {"index": {"int": i}, "productName": {"string": node.gpus.product.name}}
            if (clique := clique_of(node, i)) is not None:
                attrs["nvlinkClique"] = {"string": clique}
            devices.append({"name": f"gpu-{i}", "attributes": attrs})
            cliques[(node.name, f"gpu-{i}")] = clique
        objects.append({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                        "metadata": {"name": f"{node.name}-{DRIVER}"},
                        "spec": {"driver": DRIVER, "nodeName": node.name, "devices": devices,
                                 "pool": {"name": node.name, "generation": 1, "resourceSliceCount": 1}}})
    return objects, cliques


@pytest.fixture(scope="module")
def dra_driver(cluster):
    if "resource.k8s.io/v1" not in cluster.kubectl("api-versions").stdout.split():
        pytest.fail("the control plane does not serve resource.k8s.io/v1 (Kubernetes 1.34 should)")
    objects, cliques = driver_objects()
    doc = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": objects})
    cluster.kubectl("apply", "-f", "-", input=doc)
    yield cliques
    cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=doc, check=False)


def claims(cluster, ns: str) -> list[dict]:
    return json.loads(cluster.kubectl("-n", ns, "get", "resourceclaims", "-o", "json").stdout)["items"]


def test_tp4_claims_get_gpus_of_one_nvlink_clique(cluster, dra_driver, operator, namespace):
    apply(cluster, namespace, service("tp4-dra", tensor=4, replicas=2, product=A100, gpuAllocation="dra"))
    template = wait_until("ResourceClaimTemplate", lambda: get(cluster, "resourceclaimtemplate", namespace, "tp4-dra-gpus"))
    devices = template["spec"]["spec"]["devices"]
    assert devices["constraints"] == [{"requests": ["stage-0"], "matchAttribute": f"{DRIVER}/nvlinkClique"}]

    def allocated():
        items = [c for c in claims(cluster, namespace) if (c.get("status") or {}).get("allocation")]
        return items if len(items) == 2 else None

    used = []
    for claim in wait_until("2 allocated claims", allocated, timeout=90):
        results = claim["status"]["allocation"]["devices"]["results"]
        assert len(results) == 4 and {r["driver"] for r in results} == {DRIVER}
        groups = {dra_driver[(r["pool"], r["device"])] for r in results}
        assert len(groups) == 1 and None not in groups, results  # one NVLink clique
        assert claim["status"].get("reservedFor"), claim["status"]  # the scheduler reserved it for the pod
        used.append(groups.pop())
    assert sorted(used) == ["a100-0.0", "a100-0.1"]  # the two replicas took the two domains of a100-0

    pod = get(cluster, "deployment", namespace, "tp4-dra")["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"].get("limits", {})
    assert pod["resourceClaims"] == [{"name": "gpus", "resourceClaimTemplateName": "tp4-dra-gpus"}]
    nodes = wait_until("pods bound", lambda: (p := json.loads(cluster.kubectl(
        "-n", namespace, "get", "pods", "-o", "json").stdout)["items"]) and all(x["spec"].get("nodeName") for x in p)
        and [x["spec"]["nodeName"] for x in p])
    assert nodes == ["a100-0", "a100-0"]
