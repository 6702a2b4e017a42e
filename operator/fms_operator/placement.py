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
    return [_at_least(NVLINK_DOMAIN_LABEL, spec.parallelism.tensor), _at_least(COUNT_LABEL, spec.gpus_per_replica)]


def affinity(spec: FoundationModelServiceSpec) -> dict[str, Any] | None:
    required: list[dict[str, Any]] = []
    preferred: list[dict[str, Any]] = []
    policy = spec.placement.interconnect
    if policy == "nvlink-required":
        required += interconnect_terms(spec)
    elif policy == "nvlink-preferred" and spec.gpus_per_replica > 1:
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
