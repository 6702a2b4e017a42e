"""GPU- and NVLink-aware scheduling constraints, from node labels (pure).

Labels (docs/fleet.md): nvidia.com/gpu.product, nvidia.com/gpu.count and
nvidia.com/gpu.memory (MiB) from GPU Feature Discovery, and
topology.fms.dev/nvlink-domain-size (GPUs sharing one NVLink/NVSwitch domain;
absent on PCIe-only nodes). Node affinity has Gt but no Ge, hence `n - 1`.
"""

from __future__ import annotations

import re
from typing import Any

from fms_operator.api.models import FoundationModelServiceSpec

GPU_RESOURCE = "nvidia.com/gpu"
PRODUCT_LABEL = "nvidia.com/gpu.product"
COUNT_LABEL = "nvidia.com/gpu.count"
MEMORY_LABEL = "nvidia.com/gpu.memory"
NVLINK_DOMAIN_LABEL = "topology.fms.dev/nvlink-domain-size"

_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}


def quantity_mib(quantity: str) -> int:
    """'80Gi' -> 81920. Rounds down: the label must be at least this."""
    m = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kMGTP]i?|)", quantity)
    if not m:
        raise ValueError(f"cannot read memory quantity {quantity!r}; use e.g. 80Gi or 24000Mi")
    return int(float(m.group(1)) * _UNITS[m.group(2)] // 2**20)


def _at_least(key: str, n: int) -> dict[str, Any]:
    return {"key": key, "operator": "Gt", "values": [str(n - 1)]}


def node_selector(spec: FoundationModelServiceSpec) -> dict[str, str]:
    selector = dict(spec.placement.node_selector)
    if spec.resources.gpu_product:
        selector[PRODUCT_LABEL] = spec.resources.gpu_product
    return selector


def interconnect_terms(spec: FoundationModelServiceSpec) -> list[dict[str, Any]]:
    return [_at_least(NVLINK_DOMAIN_LABEL, spec.parallelism.tensor), _at_least(COUNT_LABEL, gpus_per_pod(spec))]


def affinity(spec: FoundationModelServiceSpec) -> dict[str, Any] | None:
    required: list[dict[str, Any]] = []
    preferred: list[dict[str, Any]] = []
    policy = spec.placement.interconnect
    if policy == "nvlink-required":
        required += interconnect_terms(spec)
    elif policy == "nvlink-preferred" and gpus_per_pod(spec) > 1:
        # A one-GPU replica has nothing to talk to; don't steer it onto NVLink nodes.
        preferred.append({"weight": 100, "preference": {"matchExpressions": interconnect_terms(spec)}})
    if spec.resources.gpu_memory:
        required.append(_at_least(MEMORY_LABEL, quantity_mib(spec.resources.gpu_memory)))
    node: dict[str, Any] = {}
    if required:
        node["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [{"matchExpressions": required}]}
    if preferred:
        node["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return {"nodeAffinity": node} if node else None


def tolerations(spec: FoundationModelServiceSpec) -> list[dict[str, Any]]:
    # GPU nodes are commonly tainted nvidia.com/gpu:NoSchedule; tolerate it always.
    base = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
    return base + [t.model_dump(by_alias=True, exclude_none=True) for t in spec.placement.tolerations]


def gpus_per_pod(spec: FoundationModelServiceSpec) -> int:
    """A pipeline group (parallelism.nodes > 1) splits the replica's GPUs over its pods."""
    return spec.gpus_per_replica // spec.parallelism.nodes


def needs(spec: FoundationModelServiceSpec) -> str:
    """What one worker pod needs, in the words of the labels and resources involved."""
    product = spec.resources.gpu_product or "any product"
    text = f"{gpus_per_pod(spec)} {GPU_RESOURCE} ({product}"
    if spec.resources.gpu_memory:
        text += f", at least {spec.resources.gpu_memory} each"
    if spec.placement.interconnect == "nvlink-required" and spec.parallelism.tensor > 1:
        text += f", {spec.parallelism.tensor} of them in one NVLink domain"
    return text + ")"


def explain_unschedulable(spec: FoundationModelServiceSpec, scheduler_message: str) -> tuple[str, str]:
    """(reason, message) for the Placed condition: which capability no node offers, then the scheduler's words."""
    msg = scheduler_message
    no_match = "didn't match Pod's node affinity" in msg
    tensor, product = spec.parallelism.tensor, spec.resources.gpu_product or "any"
    if "cannot allocate all claims" in msg or "resourceclaim" in msg.lower():
        constraint = (f" sharing one {spec.placement.dra.clique_attribute}"
                      if spec.placement.interconnect == "nvlink-required" and tensor > 1 else "")
        return "NoDeviceAllocation", (f"DRA could not allocate {tensor} GPUs per stage of DeviceClass "
                                      f"{spec.placement.dra.device_class_name}{constraint}; scheduler: {msg}")
    if "didn't match pod affinity rules" in msg and spec.parallelism.nodes > 1:
        return "GroupDomainFull", (f"the rest of its pipeline group sits in a {spec.placement.group_topology_key} "
                                   f"domain where no node has {needs(spec)} free; scheduler: {msg}")
    if f"Insufficient {GPU_RESOURCE}" in msg:  # some node has the capability, none has it free
        return "InsufficientGPUs", f"no node has {needs(spec)} free; scheduler: {msg}"
    if no_match and spec.placement.interconnect == "nvlink-required" and tensor > 1:
        return "NoNVLinkDomain", (f"no node offers an NVLink domain of {tensor} {product} GPUs "
                                  f"({NVLINK_DOMAIN_LABEL} >= {tensor}, {COUNT_LABEL} >= {gpus_per_pod(spec)}); "
                                  f"use interconnect nvlink-preferred or a smaller tensor degree; scheduler: {msg}")
    if no_match:
        return "NoMatchingNode", f"no node matches {needs(spec)} and placement.nodeSelector; scheduler: {msg}"
    return "Unschedulable", msg
