"""A 2-node pipeline group lands in one topology domain, or not at all.

The test labels the GPU nodes with GPU Feature Discovery's multi-node NVLink
clique label: h100-0 and h100-1 form clique `nvl-a`, a100-0 is alone in
`nvl-b`. A group of two 8-GPU pods fits nvl-a; on A100s its second pod can
never follow the first, and the operator must give up on the group.
"""

from __future__ import annotations

import json

import pytest
from operator_harness import apply, condition, get, wait_until
from test_placement_fleet import A100, H100, service

pytestmark = pytest.mark.integration

CLIQUE = "nvidia.com/gpu.clique"
LABELS = {"h100-0": "nvl-a", "h100-1": "nvl-a", "a100-0": "nvl-b"}


@pytest.fixture(scope="module")
def cliques(cluster):
    for node, clique in LABELS.items():
        cluster.kubectl("label", "node", node, f"{CLIQUE}={clique}", "--overwrite")
    yield LABELS
    for node in LABELS:
        cluster.kubectl("label", "node", node, f"{CLIQUE}-", check=False)


def group_pods(cluster, ns: str) -> list[dict]:
    items = json.loads(cluster.kubectl("-n", ns, "get", "pods", "-l", "serving.fms.dev/group", "-o", "json").stdout)["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def test_group_packs_into_one_clique(cluster, cliques, operator, namespace):
    doc = service("pp-h100", tensor=8, pipeline=2, product=H100)
    doc["spec"]["parallelism"]["nodes"] = 2
    apply(cluster, namespace, doc)

    def bound():
        p = group_pods(cluster, namespace)
        return p if len(p) == 2 and all(x["spec"].get("nodeName") for x in p) else None

    placed = wait_until("both ranks bound", bound, timeout=90)
    assert sorted(p["metadata"]["name"] for p in placed) == ["pp-h100-g0-0", "pp-h100-g0-1"]
    nodes = sorted(p["spec"]["nodeName"] for p in placed)
    assert nodes == ["h100-0", "h100-1"] and {cliques[n] for n in nodes} == {"nvl-a"}
    assert get(cluster, "service", namespace, "pp-h100-group")["spec"]["clusterIP"] == "None"
    assert get(cluster, "deployment", namespace, "pp-h100") is None
    # the main Service reaches the leader only: the StatefulSet controller's pod-index label tells ranks apart
    selector = get(cluster, "service", namespace, "pp-h100")["spec"]["selector"]
    served = [p["metadata"]["name"] for p in placed if all(p["metadata"]["labels"].get(k) == v for k, v in selector.items())]
    assert served == ["pp-h100-g0-0"]
    cluster.kubectl("-n", namespace, "delete", "fms", "pp-h100", "--wait=true", "--timeout=60s")
    wait_until("group pods gone", lambda: not group_pods(cluster, namespace), timeout=60)


def test_group_that_cannot_fit_one_clique_is_rolled_back(cluster, cliques, operator, namespace):
    # two pods of 8 GPUs (tensor 4 x 2 stages each): a100-0 holds one, nvl-b has no second A100 node
    doc = service("pp-a100", tensor=4, pipeline=4, product=A100, gangTimeoutSeconds=10)
    doc["spec"]["parallelism"]["nodes"] = 2
    apply(cluster, namespace, doc)
    wait_until("leader bound", lambda: any(p["spec"].get("nodeName") == "a100-0" for p in group_pods(cluster, namespace)),
               timeout=90)

    def given_up():
        f = get(cluster, "fms", namespace, "pp-a100")
        return f if condition(f, "Placed").get("reason") == "GangUnschedulable" else None

    fms = wait_until("GangUnschedulable", given_up, timeout=120)
    placed = condition(fms, "Placed")
    assert placed["status"] == "False" and fms["status"]["phase"] == "Pending"
    assert "pp-a100-g0" in placed["message"] and "a100-0" in placed["message"]
    events = cluster.kubectl("-n", namespace, "get", "events", "-o", "json").stdout
    assert "GangUnschedulable" in events
