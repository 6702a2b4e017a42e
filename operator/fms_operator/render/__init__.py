"""Pure rendering: one FMS -> the Kubernetes objects that serve it."""

from __future__ import annotations

from typing import Any

from fms_operator.api.resource import FMS
from fms_operator.render import dra, group
from fms_operator.render.cache import cache_claim
from fms_operator.render.deployment import deployment
from fms_operator.render.service import pod_disruption_budget, service
from fms_operator.render.worker_config import config_map


def render_all(fms: FMS) -> list[dict[str, Any]]:
    """Objects in apply order: the ConfigMap and cache claim before the Deployment that mounts them."""
    objects = [config_map(fms)]
    if claim := cache_claim(fms):  # before the pods that mount it
        objects.append(claim)
    if dra.uses_dra(fms):  # before the pods that claim from it
        objects.append(dra.resource_claim_template(fms))
    if group.is_grouped(fms):
        objects += [group.headless_service(fms), *group.group_statefulsets(fms, deployment(fms)["spec"]["template"])]
    else:
        objects.append(deployment(fms))
    objects.append(service(fms))
    if fms.spec.replicas > 1:
        objects.append(pod_disruption_budget(fms))
    return objects
