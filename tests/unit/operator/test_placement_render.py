"""DRA claims, pipeline groups, the gang verdict and the pending reasons (pure)."""

from __future__ import annotations

import pytest
from operator_factory import make_fms

from fms_operator import placement
from fms_operator.render import render_all
from fms_operator.render.group import GroupPod, gang_message, gang_verdict

H100 = "NVIDIA-H100-80GB-HBM3"


def _kinds(objects):
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def _worker(pod_spec):
    return next(c for c in pod_spec["containers"] if c["name"] == "worker")


def test_dra_claim_per_stage_with_clique_constraint():
    fms = make_fms({"parallelism": {"tensor": 4, "pipeline": 2}, "placement": {"interconnect": "nvlink-required",
                                                                                "gpuAllocation": "dra"}})
    objects = render_all(fms)
    template = next(o for o in objects if o["kind"] == "ResourceClaimTemplate")
    assert template["apiVersion"] == "resource.k8s.io/v1" and template["metadata"]["name"] == "m-gpus"
    devices = template["spec"]["spec"]["devices"]
    assert [(r["name"], r["exactly"]["count"], r["exactly"]["deviceClassName"]) for r in devices["requests"]] == [
        ("stage-0", 4, "gpu.fms.dev"), ("stage-1", 4, "gpu.fms.dev")]
    assert devices["constraints"] == [{"requests": ["stage-0"], "matchAttribute": "gpu.fms.dev/nvlinkClique"},
                                      {"requests": ["stage-1"], "matchAttribute": "gpu.fms.dev/nvlinkClique"}]
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["resourceClaims"] == [{"name": "gpus", "resourceClaimTemplateName": "m-gpus"}]
    worker = _worker(pod)
    assert worker["resources"]["claims"] == [{"name": "gpus"}]
    assert placement.GPU_RESOURCE not in worker["resources"]["requests"]
    assert placement.GPU_RESOURCE not in worker["resources"]["limits"]
    # the ConfigMap comes first, the claim template before the Deployment that names it
    kinds = [k for k, _ in _kinds(objects)]
    assert kinds.index("ResourceClaimTemplate") < kinds.index("Deployment")


@pytest.mark.parametrize("interconnect", ["nvlink-preferred", "any"])
def test_dra_without_nvlink_required_has_no_constraint(interconnect):
    fms = make_fms({"parallelism": {"tensor": 2}, "placement": {"interconnect": interconnect, "gpuAllocation": "dra"}})
    template = next(o for o in render_all(fms) if o["kind"] == "ResourceClaimTemplate")
    assert "constraints" not in template["spec"]["spec"]["devices"]


def test_extended_resource_is_the_default():
    objects = render_all(make_fms({"parallelism": {"tensor": 2}}))
    assert "ResourceClaimTemplate" not in [o["kind"] for o in objects]
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert _worker(pod)["resources"]["limits"][placement.GPU_RESOURCE] == "2" and "resourceClaims" not in pod


def test_pipeline_group_renders_statefulsets_and_a_headless_service():
    fms = make_fms({"replicas": 2, "parallelism": {"tensor": 8, "pipeline": 4, "nodes": 2},
                    "resources": {"gpuProduct": H100}, "placement": {"interconnect": "nvlink-required"}})
    objects = render_all(fms)
    kinds = _kinds(objects)
    assert ("Deployment", "m") not in kinds
    assert ("StatefulSet", "m-g0") in kinds and ("StatefulSet", "m-g1") in kinds and ("Service", "m-group") in kinds
    headless = next(o for o in objects if o["metadata"]["name"] == "m-group")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    sts = next(o for o in objects if o["metadata"]["name"] == "m-g1")
    assert sts["spec"]["replicas"] == 2 and sts["spec"]["serviceName"] == "m-group"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    pod = sts["spec"]["template"]["spec"]
    assert _worker(pod)["resources"]["limits"][placement.GPU_RESOURCE] == "16"  # 8 x 4 / 2 nodes
    term = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "nvidia.com/gpu.clique"
    assert term["labelSelector"]["matchLabels"]["serving.fms.dev/group"] == "m-g1"
    assert sts["spec"]["template"]["metadata"]["labels"]["serving.fms.dev/group"] == "m-g1"
    env = {e["name"]: e for e in _worker(pod)["env"]}
    assert env["FMS_GROUP_LEADER"]["value"] == "m-g1-0.m-group.ns.svc" and env["FMS_GROUP_SIZE"]["value"] == "2"
    count_term = {"key": placement.COUNT_LABEL, "operator": "Gt", "values": ["15"]}  # per pod, not per replica
    assert count_term in pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchExpressions"]


@pytest.mark.parametrize("pods,verdict", [
    ([GroupPod("g-0", "h100-0", 500), GroupPod("g-1", "h100-1", 500)], "placed"),
    ([GroupPod("g-0", "h100-0", 500), GroupPod("g-1", "", 500)], "stuck"),
    ([GroupPod("g-0", "h100-0", 30), GroupPod("g-1", "", 30)], "waiting"),  # not yet past the timeout
    ([GroupPod("g-0", "", 500), GroupPod("g-1", "", 500)], "waiting"),  # nothing placed holds GPUs
    ([GroupPod("g-0", "h100-0", 500)], "waiting"),  # the second pod is not even created yet
])
def test_gang_verdict(pods, verdict):
    assert gang_verdict(pods, size=2, timeout_s=300) == verdict


def test_gang_message_names_the_group_and_the_fix():
    fms = make_fms({"parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2}})
    text = gang_message(fms, "m-g0", [GroupPod("m-g0-0", "a100-0", 400), GroupPod("m-g0-1", "", 400)])
    assert "m-g0" in text and "a100-0" in text and "m-g0-1 pending" in text and "parallelism.nodes" in text


@pytest.mark.parametrize("spec,message,reason,words", [
    ({"parallelism": {"tensor": 8}, "resources": {"gpuProduct": "NVIDIA-L4"}, "placement": {"interconnect": "nvlink-required"}},
     "0/7 nodes are available: 7 node(s) didn't match Pod's node affinity/selector.", "NoNVLinkDomain",
     ["NVLink domain", "8", "NVIDIA-L4", "topology.fms.dev/nvlink-domain-size"]),
    ({"parallelism": {"tensor": 8}, "resources": {"gpuProduct": "NVIDIA-L4"}, "placement": {"interconnect": "any"}},
     "0/7 nodes are available: 2 Insufficient nvidia.com/gpu, 5 node(s) didn't match Pod's node affinity/selector.",
     "InsufficientGPUs", ["8 nvidia.com/gpu", "NVIDIA-L4"]),
    ({"resources": {"gpuProduct": "NVIDIA-B200"}, "placement": {"interconnect": "any"}},
     "0/7 nodes are available: 7 node(s) didn't match Pod's node affinity/selector.", "NoMatchingNode", ["NVIDIA-B200"]),
    ({"parallelism": {"tensor": 4}, "placement": {"gpuAllocation": "dra", "interconnect": "nvlink-required"}},
     "0/7 nodes are available: 7 cannot allocate all claims.", "NoDeviceAllocation", ["4", "gpu.fms.dev/nvlinkClique"]),
    ({}, "0/7 nodes are available: 7 node(s) had untolerated taint {x: y}.", "Unschedulable", ["untolerated taint"]),
])
def test_pending_reason_names_the_missing_capability(spec, message, reason, words):
    got_reason, got_message = placement.explain_unschedulable(make_fms(spec).spec, message)
    assert got_reason == reason
    for w in words:
        assert w in got_message
    assert message in got_message  # the scheduler's own words stay
