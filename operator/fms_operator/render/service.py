"""The worker Service (API + metrics ports) and the PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from fms_operator.api.resource import FMS
from fms_operator.render import group
from fms_operator.render.meta import metadata, selector_labels


def serving_selector(fms: FMS) -> dict[str, str]:
    """The pods that serve HTTP: every pod of a Deployment, only the leader (pod 0) of a pipeline group.

    A group's followers hold later stages and answer only /health. All pods of a
    StatefulSet share one template, so no label the operator renders can tell
    them apart; the StatefulSet controller's pod-index label can.
    """
    if group.is_grouped(fms):
        return {**selector_labels(fms), group.POD_INDEX_LABEL: "0"}
    return selector_labels(fms)


def service(fms: FMS) -> dict[str, Any]:
    worker = fms.spec.worker
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": metadata(fms),
        "spec": {
            "type": "ClusterIP",
            "selector": serving_selector(fms),
            "ports": [
                {"name": "http", "port": worker.port, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": worker.metrics_port, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def pod_disruption_budget(fms: FMS) -> dict[str, Any]:
    # One replica at a time: a replica is a whole (possibly multi-GPU) model copy.
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(fms),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(fms)}},
    }


def endpoint(fms: FMS) -> dict[str, Any]:
    host = f"{fms.name}.{fms.namespace}.svc.cluster.local"
    port = fms.spec.worker.port
    return {"host": host, "port": port, "url": f"http://{host}:{port}/v1"}
