"""GPUs through Dynamic Resource Allocation (resource.k8s.io/v1) instead of the nvidia.com/gpu extended resource.

With `placement.gpuAllocation: dra` each replica's pod gets a ResourceClaim
from one ResourceClaimTemplate. The claim asks for `tensor` GPUs per pipeline
stage (one request per stage) and, under `interconnect: nvlink-required`,
constrains each stage's GPUs to share the value of the NVLink clique attribute,
so the scheduler itself picks GPUs of one NVLink domain, a guarantee the
extended resource (a count per node) cannot give. DRA has no soft
constraints, so nvlink-preferred renders none.
"""

from __future__ import annotations

from typing import Any

from fms_operator.api.resource import FMS
from fms_operator.render.meta import metadata

API_VERSION = "resource.k8s.io/v1"
POD_CLAIM = "gpus"


def uses_dra(fms: FMS) -> bool:
    return fms.spec.placement.gpu_allocation == "dra"


def claim_template_name(fms: FMS) -> str:
    return f"{fms.name}-gpus"


def request_names(fms: FMS) -> list[str]:
    return [f"stage-{s}" for s in range(fms.spec.parallelism.pipeline)]


def resource_claim_template(fms: FMS) -> dict[str, Any]:
    spec = fms.spec
    dra = spec.placement.dra
    names = request_names(fms)
    requests = [{"name": n, "exactly": {"deviceClassName": dra.device_class_name, "allocationMode": "ExactCount",
                                        "count": spec.parallelism.tensor}} for n in names]
    devices: dict[str, Any] = {"requests": requests}
    if spec.placement.interconnect == "nvlink-required" and spec.parallelism.tensor > 1:
        # One constraint per stage: a stage's tensor-parallel group shares one clique; stages may differ.
        devices["constraints"] = [{"requests": [n], "matchAttribute": dra.clique_attribute} for n in names]
    return {"apiVersion": API_VERSION, "kind": "ResourceClaimTemplate",
            "metadata": metadata(fms, claim_template_name(fms)),
            "spec": {"spec": {"devices": devices}}}


def use_claims(pod_spec: dict[str, Any], fms: FMS, gpu_resource: str) -> None:
    """Swap the worker container's extended-resource GPUs for the pod's claim (in place)."""
    pod_spec["resourceClaims"] = [{"name": POD_CLAIM, "resourceClaimTemplateName": claim_template_name(fms)}]
    for container in pod_spec["containers"]:
        if container["name"] != "worker":
            continue
        for part in ("requests", "limits"):
            container["resources"].get(part, {}).pop(gpu_resource, None)
        container["resources"]["claims"] = [{"name": POD_CLAIM}]
