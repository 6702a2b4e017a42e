"""Table tests of the pure renderers and placement."""

from __future__ import annotations

import pytest
from operator_factory import make_fms

from fms_operator import placement
from fms_operator.render import render_all
from fms_operator.render.deployment import deployment
from fms_operator.render.meta import CONFIG_HASH


def _pod(fms):
    return deployment(fms)["spec"]["template"]["spec"]


@pytest.mark.parametrize("tensor,pipeline,gpus", [(1, 1, "1"), (2, 1, "2"), (4, 2, "8"), (8, 1, "8")])
def test_gpu_request_is_tensor_times_pipeline(tensor, pipeline, gpus):
    c = _pod(make_fms({"parallelism": {"tensor": tensor, "pipeline": pipeline}}))["containers"][0]
    assert c["resources"]["requests"]["nvidia.com/gpu"] == gpus
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus


@pytest.mark.parametrize("policy,tensor,required,preferred", [
    ("nvlink-required", 4, [("topology.fms.dev/nvlink-domain-size", "3"), ("nvidia.com/gpu.count", "3")], None),
    ("nvlink-required", 1, [("topology.fms.dev/nvlink-domain-size", "0"), ("nvidia.com/gpu.count", "0")], None),
    ("nvlink-preferred", 8, None, [("topology.fms.dev/nvlink-domain-size", "7"), ("nvidia.com/gpu.count", "7")]),
    ("nvlink-preferred", 1, None, None),  # one GPU: nothing to interconnect
    ("any", 8, None, None),
])
def test_interconnect_affinity(policy, tensor, required, preferred):
    spec = make_fms({"parallelism": {"tensor": tensor}, "placement": {"interconnect": policy}}).spec
    aff = (placement.affinity(spec) or {}).get("nodeAffinity", {})
    req = aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    pref = aff.get("preferredDuringSchedulingIgnoredDuringExecution")
    as_pairs = lambda exprs: [(e["key"], e["values"][0]) for e in exprs if e["operator"] == "Gt"]  # noqa: E731
    assert (as_pairs(req["nodeSelectorTerms"][0]["matchExpressions"]) if req else None) == required
    assert (as_pairs(pref[0]["preference"]["matchExpressions"]) if pref else None) == preferred


@pytest.mark.parametrize("quantity,mib", [("80Gi", 81920), ("24000Mi", 24000), ("1Ti", 1048576), ("80G", 76293)])
def test_quantity_mib(quantity, mib):
    assert placement.quantity_mib(quantity) == mib


def test_gpu_memory_and_product_select_nodes():
    pod = _pod(make_fms({"resources": {"gpuProduct": "NVIDIA-L4", "gpuMemory": "20000Mi"},
                         "placement": {"interconnect": "any", "nodeSelector": {"zone": "a"}}}))
    assert pod["nodeSelector"] == {"zone": "a", "nvidia.com/gpu.product": "NVIDIA-L4"}
    expr = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchExpressions"]
    assert expr == [{"key": "nvidia.com/gpu.memory", "operator": "Gt", "values": ["19999"]}]


def test_worker_container_contract():
    fms = make_fms({"worker": {"drainSeconds": 45, "startupTimeoutSeconds": 600, "env": [{"name": "A", "value": "1"}]}})
    pod = _pod(fms)
    c = pod["containers"][0]
    assert c["command"] == ["fms-worker", "serve", "--config", "/etc/fms/worker.yaml"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] == 600
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["terminationGracePeriodSeconds"] > 45
    assert c["lifecycle"]["preStop"]
    assert c["securityContext"]["readOnlyRootFilesystem"] and not c["securityContext"]["allowPrivilegeEscalation"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert {"name": "A", "value": "1"} in c["env"]
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/etc/fms", "/tmp", "/var/cache/fms"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 8000, "metrics": 9090}


@pytest.mark.parametrize("cache,expected", [
    ({}, {"emptyDir": {"sizeLimit": "100Gi"}}),
    ({"modelCache": {"claimName": "cache"}}, {"persistentVolumeClaim": {"claimName": "cache"}}),
])
def test_model_cache_volume(cache, expected):
    vols = {v["name"]: v for v in _pod(make_fms({"caching": cache}))["volumes"]}
    assert {k: v for k, v in vols["model-cache"].items() if k != "name"} == expected


def test_pvc_source_is_mounted_and_secrets_become_env():
    pvc = _pod(make_fms({"model": {"source": {"pvc": {"claimName": "models", "path": "llama"}}}}))
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "models" for v in pvc["volumes"])
    hf = _pod(make_fms({"model": {"source": {"hf": {"repo": "o/m", "private": True, "tokenSecret": {"name": "tok"}}}}}))
    assert {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "token"}}} in hf["containers"][0]["env"]
    s3 = _pod(make_fms({"model": {"source": {"s3": {"bucket": "bkt", "credentialsSecret": "creds"}}}}))
    assert s3["containers"][0]["envFrom"] == [{"secretRef": {"name": "creds"}}]


@pytest.mark.parametrize("replicas,kinds", [(1, ["ConfigMap", "Deployment", "Service"]),
                                            (3, ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget"])])
def test_pdb_only_with_several_replicas(replicas, kinds):
    assert [o["kind"] for o in render_all(make_fms({"replicas": replicas}))] == kinds


def test_owner_reference_and_rollout_settings():
    dep = deployment(make_fms({"worker": {"rollout": {"maxSurge": 0, "maxUnavailable": 1}}}))
    ref = dep["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["controller"], ref["uid"]) == ("FoundationModelService", True, "u-1")
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_config_hash_changes_only_with_worker_config():
    base = deployment(make_fms())["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    same = deployment(make_fms({"replicas": 5}))["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    other = deployment(make_fms({"batching": {"maxNumSeqs": 64}}))["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH]
    assert base == same != other
