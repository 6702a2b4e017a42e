"""The only module that calls the Kubernetes API (besides kopf's own watches).

Plain dicts in and out: the generated model classes of the kubernetes client
cost memory and CPU per object and add nothing to server-side apply.
"""

from __future__ import annotations

import json
from typing import Any

import kubernetes

from fms_operator.api.models import GROUP, PLURAL, VERSION

FIELD_MANAGER = "fms-operator"

_PATHS = {
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/{name}",
    "Service": "/api/v1/namespaces/{ns}/services/{name}",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "PersistentVolumeClaim": "/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}",
    "ResourceClaimTemplate": "/apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaimtemplates/{name}",
    "FoundationModelService": f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}/{{name}}",
}


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str, causes: tuple[str, ...] = ()) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.causes = causes  # the Status body's details.causes[].reason

    @property
    def namespace_terminating(self) -> bool:
        """The namespace is being deleted: nothing new can be created there, and nothing needs to be."""
        return self.status == 403 and "NamespaceTerminating" in self.causes


class Kube:
    def __init__(self, api: kubernetes.client.ApiClient) -> None:
        self.api = api

    @classmethod
    def connect(cls, pool_size: int = 16) -> "Kube":
        """In-cluster service account, else KUBECONFIG / ~/.kube/config."""
        config = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=config)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=config)
        config.connection_pool_maxsize = pool_size  # one connection per reconcile in flight
        return cls(kubernetes.client.ApiClient(config))

    def _call(self, method: str, path: str, body: Any = None, query: list[tuple[str, str]] | None = None,
              content_type: str = "application/json") -> dict[str, Any] | None:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        m, url, headers, _, _ = self.api.param_serialize(method, path, query_params=query or [], header_params=headers,
                                                         auth_settings=["BearerToken"])
        # The REST layer JSON-encodes dict bodies for JSON and YAML content types alike.
        resp = self.api.call_api(m, url, header_params=headers, body=body, _request_timeout=30)
        raw = resp.read()
        if resp.status == 404:
            return None
        if resp.status >= 400:
            try:
                body = json.loads(raw)
                message = body.get("message", raw)
                causes = tuple(c.get("reason", "") for c in (body.get("details") or {}).get("causes") or [])
            except (ValueError, AttributeError):
                message, causes = raw, ()
            raise KubeError(resp.status, str(message), causes)
        return json.loads(raw) if raw else {}

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager fms-operator (force: the operator owns these fields)."""
        meta = manifest["metadata"]
        path = _PATHS[manifest["kind"]].format(ns=meta["namespace"], name=meta["name"])
        result = self._call("PATCH", path, manifest, [("fieldManager", FIELD_MANAGER), ("force", "true")],
                            content_type="application/apply-patch+yaml")
        assert result is not None
        return result

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._call("DELETE", _PATHS[kind].format(ns=namespace, name=name), {"propagationPolicy": "Background"})

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._call("GET", _PATHS[kind].format(ns=namespace, name=name))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch only the operator's status keys (the autoscaler writes lastScale)."""
        path = _PATHS["FoundationModelService"].format(ns=namespace, name=name) + "/status"
        self._call("PATCH", path, {"status": status}, content_type="application/merge-patch+json")
