"""The operator's RBAC: one list of rules, rendered to crds/rbac.yaml (and tested by the chart).

Only the verbs the operator uses. kopf itself needs events, CRD and namespace
listing (cluster-wide mode) and, when peering is on, its peering objects.
"""

from __future__ import annotations

from dataclasses import dataclass

from fms_operator.api.models import GROUP, PLURAL

NAME = "fms-operator"
NAMESPACE = "fms-system"

_OWNED = ["get", "list", "watch", "create", "patch", "update", "delete"]


@dataclass(frozen=True)
class Rule:
    api_group: str
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    why: str

    def manifest(self) -> dict:
        return {"apiGroups": [self.api_group], "resources": list(self.resources), "verbs": list(self.verbs)}


RULES: tuple[Rule, ...] = (
    Rule(GROUP, (PLURAL,), ("get", "list", "watch", "patch", "update"), "reconcile the custom resource"),
    Rule(GROUP, (f"{PLURAL}/status",), ("get", "patch", "update"), "write status"),
    Rule(GROUP, (f"{PLURAL}/scale",), ("get", "patch", "update"), "builtin autoscaler writes replicas"),
    Rule(GROUP, (f"{PLURAL}/finalizers",), ("update",), "ownerReferences with blockOwnerDeletion"),
    Rule("", ("configmaps", "services"), tuple(_OWNED), "owned worker ConfigMap and Service"),
    Rule("apps", ("deployments",), tuple(_OWNED), "owned worker Deployment"),
    Rule("policy", ("poddisruptionbudgets",), tuple(_OWNED), "owned PodDisruptionBudget"),
    Rule("apps", ("statefulsets",), tuple(_OWNED), "owned StatefulSets of multi-node pipeline groups"),
    Rule("resource.k8s.io", ("resourceclaimtemplates",), tuple(_OWNED), "owned DRA ResourceClaimTemplate (gpuAllocation dra)"),
    Rule("", ("persistentvolumeclaims",), ("get", "list", "watch", "create", "patch"),
         "owned model cache claim (caching.modelCache.claim); never deleted by the operator, the garbage collector does"),
    Rule("", ("pods",), ("get", "list", "watch", "patch"), "status from pod state; the autoscaler annotates pods it scrapes"),
    Rule("", ("events",), ("create", "patch"), "Kubernetes Events (kopf posts core/v1 events)"),
    Rule("events.k8s.io", ("events",), ("create", "patch"), "Kubernetes Events (events.k8s.io)"),
    Rule("apiextensions.k8s.io", ("customresourcedefinitions",), ("get", "list", "watch"), "kopf resource discovery"),
    Rule("", ("namespaces",), ("get", "list", "watch"), "kopf cluster-wide mode; the autoscaler reads namespace GPU budgets"),
    Rule("kopf.dev", ("clusterkopfpeerings", "kopfpeerings"), ("get", "list", "watch", "patch"), "kopf peering (only with --peering)"),
)


def cluster_role_rules() -> list[dict]:
    return [rule.manifest() for rule in RULES]


def manifests(namespace: str = NAMESPACE) -> list[dict]:
    labels = {"app.kubernetes.io/name": NAME}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": namespace, "labels": labels}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": NAME, "labels": labels},
         "rules": cluster_role_rules()},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": NAME, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
         "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}]},
    ]
