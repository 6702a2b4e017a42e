"""Multi-node pipeline groups: one replica spread over `parallelism.nodes` pods (pure).

Layout, LeaderWorkerSet-like: replica r is the StatefulSet `<name>-g<r>` of
`nodes` pods with stable names `<name>-g<r>-<i>` (pod 0 leads, and serves
HTTP) behind one headless Service `<name>-group`, so rank i finds the leader
at `<name>-g<r>-0.<name>-group` for the rendezvous. Each pod holds
`tensor x pipeline / nodes` GPUs: whole pipeline stages, so only stage-to-stage
hidden states cross the network while tensor parallelism stays on NVLink.

All pods of a group must share one topology domain (placement.groupTopologyKey,
by default GPU Feature Discovery's `nvidia.com/gpu.clique`): a required pod
affinity to the group's own pods. The first pod matches its own term and may
go anywhere; the others follow it or stay Pending. Kubernetes has no gang
scheduling without a plugin, so `gang_verdict` tells a half-placed group that
waited too long; the operator then deletes the group's StatefulSet (its pods
go with it, freeing the GPUs the placed ones held), re-creates it for another
try, and reports why.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

from fms_operator import placement
from fms_operator.api.resource import FMS
from fms_operator.render.meta import labels, metadata, selector_labels

GROUP_LABEL = "serving.fms.dev/group"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"  # set by the StatefulSet controller (1.28+)


def is_grouped(fms: FMS) -> bool:
    return fms.spec.parallelism.nodes > 1


def group_name(fms: FMS, replica: int) -> str:
    return f"{fms.name}-g{replica}"


def headless_service_name(fms: FMS) -> str:
    return f"{fms.name}-group"


def gpus_per_pod(fms: FMS) -> int:
    p = fms.spec.parallelism
    return p.tensor * p.pipeline // p.nodes


def headless_service(fms: FMS) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(fms, headless_service_name(fms)),
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,  # ranks meet before they are ready
                     "selector": selector_labels(fms),
                     "ports": [{"name": "rendezvous", "port": 29500, "targetPort": 29500, "protocol": "TCP"}]}}


def _pod_template(fms: FMS, base_template: dict[str, Any], replica: int) -> dict[str, Any]:
    template = copy.deepcopy(base_template)
    group = group_name(fms, replica)
    template["metadata"]["labels"] = {**labels(fms), GROUP_LABEL: group}
    pod = template["spec"]
    gpus = str(gpus_per_pod(fms))
    for container in pod["containers"]:
        if container["name"] != "worker":
            continue
        for part in ("requests", "limits"):
            if placement.GPU_RESOURCE in container["resources"].get(part, {}):
                container["resources"][part][placement.GPU_RESOURCE] = gpus
        container["env"] = container.get("env", []) + [
            {"name": "FMS_GROUP_SIZE", "value": str(fms.spec.parallelism.nodes)},
            {"name": "FMS_GROUP_RANK", "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}}},
            {"name": "FMS_GROUP_LEADER", "value": f"{group}-0.{headless_service_name(fms)}.{fms.namespace}.svc"},
        ]
        container["ports"] = container.get("ports", []) + [{"name": "rendezvous", "containerPort": 29500, "protocol": "TCP"}]
    term = {"labelSelector": {"matchLabels": {**selector_labels(fms), GROUP_LABEL: group}},
            "topologyKey": fms.spec.placement.group_topology_key}
    affinity = pod.setdefault("affinity", {})
    affinity["podAffinity"] = {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
    return template


def group_statefulsets(fms: FMS, base_template: dict[str, Any]) -> list[dict[str, Any]]:
    """One StatefulSet per replica, from the single-pod template the Deployment would have used."""
    out = []
    for r in range(fms.spec.replicas):
        template = _pod_template(fms, base_template, r)
        out.append({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": metadata(fms, group_name(fms, r)),
            "spec": {
                "replicas": fms.spec.parallelism.nodes,
                "serviceName": headless_service_name(fms),
                "podManagementPolicy": "Parallel",  # all ranks at once: the group only works whole
                "selector": {"matchLabels": {**selector_labels(fms), GROUP_LABEL: group_name(fms, r)}},
                "template": template,
            },
        })
    return out


@dataclass(frozen=True)
class GroupPod:
    name: str
    node: str  # empty while Pending
    pending_since: float  # seconds since creation (epoch-free: the caller passes ages)


Verdict = Literal["placed", "waiting", "stuck"]


def gang_verdict(pods: list[GroupPod], size: int, timeout_s: float) -> Verdict:
    """placed: every rank has a node. stuck: some are placed while another waited past the timeout
    (the placed ones hold GPUs the group can never use). waiting: otherwise."""
    bound = [p for p in pods if p.node]
    if len(bound) == size:
        return "placed"
    overdue = any(not p.node and p.pending_since > timeout_s for p in pods)
    return "stuck" if bound and overdue else "waiting"


def gang_message(fms: FMS, group: str, pods: list[GroupPod]) -> str:
    bound = sorted({p.node for p in pods if p.node})
    waiting = [p.name for p in pods if not p.node]
    return (f"pipeline group {group} could not be placed whole in one {fms.spec.placement.group_topology_key} domain: "
            f"{len(pods) - len(waiting)}/{fms.spec.parallelism.nodes} pods placed (on {', '.join(bound) or '-'}), "
            f"{', '.join(waiting)} pending; the group was deleted to free its GPUs and is tried again. Give it a domain with "
            f"{fms.spec.parallelism.nodes} nodes of {gpus_per_pod(fms)} free GPUs each, or lower parallelism.nodes")


def statefulset_summary(body: dict[str, Any]) -> dict[str, int]:
    """The few numbers of a group's StatefulSet the status needs (kept in the operator's index)."""
    st = body.get("status") or {}
    return {"generation": int(body["metadata"].get("generation") or 0),
            "observed_generation": int(st.get("observedGeneration") or 0),
            "size": int((body.get("spec") or {}).get("replicas") or 0),
            "replicas": int(st.get("replicas") or 0), "ready": int(st.get("readyReplicas") or 0),
            "updated": int(st.get("updatedReplicas") or 0)}


def groups_as_deployment(summaries: list[dict[str, int]], desired: int):
    """Groups counted like a Deployment's replicas: a replica is ready when all its pods are."""
    from fms_operator.status import DeploymentView  # status imports the renderers: import late

    whole = [s for s in summaries if s["size"]]
    return DeploymentView(
        # sums: the total lags behind exactly when one StatefulSet's controller does
        generation=sum(s["generation"] for s in whole),
        observed_generation=sum(min(s["observed_generation"], s["generation"]) for s in whole),
        spec_replicas=desired,
        replicas=len(whole),
        ready_replicas=sum(1 for s in whole if s["ready"] >= s["size"]),
        updated_replicas=sum(1 for s in whole if s["updated"] >= s["size"]),
        progress_deadline_exceeded=False,
    )


def stuck_groups(fms: FMS, pods: list, ages: dict[str, float]) -> dict[str, tuple[list[str], str]]:
    """group -> (its pod names, message) for each group `gang_verdict` calls stuck.

    `pods` are status PodViews (name, node, group); `ages` their seconds since creation.
    """
    by_group: dict[str, list[GroupPod]] = {}
    for p in pods:
        if getattr(p, "group", None) and not p.deleting:
            by_group.setdefault(p.group, []).append(GroupPod(p.name, p.node, ages.get(p.name, 0.0)))
    out = {}
    timeout = fms.spec.placement.gang_timeout_seconds
    for group, members in sorted(by_group.items()):
        if gang_verdict(members, fms.spec.parallelism.nodes, timeout) == "stuck":
            out[group] = ([m.name for m in members], gang_message(fms, group, members))
    return out
