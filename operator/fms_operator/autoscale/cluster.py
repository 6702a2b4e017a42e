"""The Kubernetes calls the autoscaler makes, on top of the operator's Kube.

Every request still goes through Kube's single request path (`_call`); this
subclass only adds the few endpoints the autoscaler needs. They can move
into kube.py as they are.
"""

from __future__ import annotations

from typing import Any

from fms_operator.api.models import GROUP, PLURAL, VERSION
from fms_operator.kube import Kube

_FMS = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}"


class AutoscaleKube(Kube):
    def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        result = self._call("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)])
        return (result or {}).get("items", [])

    def list_fms(self, namespace: str) -> list[dict[str, Any]]:
        result = self._call("GET", _FMS.format(ns=namespace))
        return (result or {}).get("items", [])

    def namespace_annotations(self, namespace: str) -> dict[str, str]:
        # A list with a field selector, not a get: the operator's RBAC already
        # lists namespaces for kopf, and needs no extra verb for this.
        result = self._call("GET", "/api/v1/namespaces", query=[("fieldSelector", f"metadata.name={namespace}")])
        items = (result or {}).get("items") or [{}]
        return (items[0].get("metadata") or {}).get("annotations") or {}

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """spec.replicas through the scale subresource, as an HPA would write it."""
        path = _FMS.format(ns=namespace) + f"/{name}/scale"
        self._call("PATCH", path, {"spec": {"replicas": replicas}}, content_type="application/merge-patch+json")

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        self._call("PATCH", path, {"metadata": {"annotations": annotations}}, content_type="application/merge-patch+json")
