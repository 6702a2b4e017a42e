"""Create, show, scale, update, place, delete: the operator against the real control plane + kwok fleet."""

from __future__ import annotations

import json

import pytest
import yaml
from fms_worker.config import WorkerConfig
from operator_harness import apply, condition, get, sample, wait_until

pytestmark = pytest.mark.integration


def _deployment(cluster, ns, name):
    return get(cluster, "deployment", ns, name)


def test_create_renders_objects_and_columns(cluster, operator, namespace):
    apply(cluster, namespace, sample("generate-minimal"))
    dep = wait_until("Deployment", lambda: _deployment(cluster, namespace, "smollm2"))
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert dep["metadata"]["ownerReferences"][0]["kind"] == "FoundationModelService"
    cm = wait_until("ConfigMap", lambda: get(cluster, "configmap", namespace, "smollm2-worker-config"))
    cfg = WorkerConfig.model_validate(yaml.safe_load(cm["data"]["worker.yaml"]))
    assert (cfg.server.port, cfg.server.metrics_port, cfg.model.source) == (8000, 9090, "hf://HuggingFaceTB/SmolLM2-135M-Instruct")
    svc = wait_until("Service", lambda: get(cluster, "service", namespace, "smollm2"))
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8000, "metrics": 9090}
    assert get(cluster, "pdb", namespace, "smollm2") is None  # one replica: no PDB

    wait_until("phase Ready", lambda: (get(cluster, "fms", namespace, "smollm2") or {}).get("status", {}).get("phase") == "Ready")
    table = cluster.kubectl("-n", namespace, "get", "fms").stdout.split("\n")
    assert table[0].split() == ["NAME", "MODEL", "QUANT", "TP", "GPUS", "READY", "DESIRED", "STATUS", "AGE"]
    assert table[1].split()[:8] == ["smollm2", "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "none", "1", "1", "1", "1", "Ready"]
    wide = cluster.kubectl("-n", namespace, "get", "fms", "-o", "wide").stdout.split("\n")[0].split()
    assert wide[-3:] == ["METRIC", "TARGET", "ENDPOINT"]
    events = cluster.kubectl("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=smollm2", "-o", "json").stdout
    assert "Deployment smollm2 created" in events


def test_full_sample_gets_pdb_gpus_and_nvlink_placement(cluster, operator, namespace):
    cluster.kubectl("-n", namespace, "create", "secret", "generic", "hf-token", "--from-literal=token=x")
    apply(cluster, namespace, sample("generate-full"))
    wait_until("PDB", lambda: get(cluster, "pdb", namespace, "llama-70b"))
    dep = _deployment(cluster, namespace, "llama-70b")
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    assert {"key": "topology.fms.dev/nvlink-domain-size", "operator": "Gt", "values": ["3"]} in terms
    fms = wait_until("2 ready", lambda: (f := get(cluster, "fms", namespace, "llama-70b")) and f["status"].get("readyReplicas") == 2 and f)
    assert {p["node"] for p in fms["status"]["placement"]} <= {"h100-0", "h100-1"}
    assert condition(fms, "Placed")["status"] == "True"


def test_scale_update_and_delete_cascade(cluster, operator, namespace):
    apply(cluster, namespace, sample("generate-minimal"))
    wait_until("Deployment", lambda: _deployment(cluster, namespace, "smollm2"))

    cluster.kubectl("-n", namespace, "scale", "fms", "smollm2", "--replicas=3")
    wait_until("3 replicas", lambda: (_deployment(cluster, namespace, "smollm2") or {}).get("spec", {}).get("replicas") == 3)
    wait_until("PDB", lambda: get(cluster, "pdb", namespace, "smollm2"))
    wait_until("status.replicas 3", lambda: (get(cluster, "fms", namespace, "smollm2") or {}).get("status", {}).get("replicas") == 3)

    before = _deployment(cluster, namespace, "smollm2")["spec"]["template"]["metadata"]["annotations"]["serving.fms.dev/config-hash"]
    cluster.kubectl("-n", namespace, "patch", "fms", "smollm2", "--type=merge", "-p", json.dumps({"spec": {"batching": {"maxNumSeqs": 32}}}))
    after = wait_until("new config hash", lambda: (h := _deployment(cluster, namespace, "smollm2")["spec"]["template"]["metadata"]
                                                   ["annotations"]["serving.fms.dev/config-hash"]) != before and h)
    assert after != before
    cm = get(cluster, "configmap", namespace, "smollm2-worker-config")
    assert yaml.safe_load(cm["data"]["worker.yaml"])["batching"]["max_num_seqs"] == 32
    sets = lambda: json.loads(cluster.kubectl("-n", namespace, "get", "rs", "-l", "serving.fms.dev/name=smollm2", "-o", "json").stdout)["items"]  # noqa: E731
    wait_until("a second ReplicaSet (rollout)", lambda: len(sets()) >= 2)

    cluster.kubectl("-n", namespace, "delete", "fms", "smollm2", "--wait=false")
    for kind, name in [("deployment", "smollm2"), ("service", "smollm2"), ("configmap", "smollm2-worker-config"), ("pdb", "smollm2")]:
        wait_until(f"{kind} garbage-collected", lambda: get(cluster, kind, namespace, name) is None, timeout=90)


def test_unplaceable_spec_reports_scheduler_reason(cluster, operator, namespace):
    doc = sample("generate-minimal", parallelism={"tensor": 8}, resources={"gpuProduct": "NVIDIA-L4"}, placement={"interconnect": "any"})
    apply(cluster, namespace, doc)

    def placed_false():
        c = condition(get(cluster, "fms", namespace, "smollm2"), "Placed")
        return c if c.get("status") == "False" else None

    placed = wait_until("Placed=False", placed_false, timeout=90)
    assert placed["reason"] == "InsufficientGPUs"  # placement.explain_unschedulable names the missing capability
    assert "nodes are available" in placed["message"] and "Insufficient nvidia.com/gpu" in placed["message"]
    fms = get(cluster, "fms", namespace, "smollm2")
    assert fms["status"]["phase"] == "Pending"
