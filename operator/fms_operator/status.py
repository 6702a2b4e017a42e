"""Status from the real state of the Deployment and its pods (pure).

Views are the few fields the operator reads from Deployment and Pod bodies;
they are small so the in-memory indices stay small with thousands of pods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from fms_operator import placement
from fms_operator.api.resource import FMS
from fms_operator.fetch_status import FetchView, Startup, failure, fetch_view, model_condition, startup, startup_report
from fms_operator.render.fetch import FETCH_CONTAINER, fetch_uri
from fms_operator.render.group import GROUP_LABEL
from fms_operator.render.meta import selector_string
from fms_operator.render.service import endpoint

CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Placed", "ModelReady")
MAX_PLACEMENT_ROWS = 100
_BAD_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                "CreateContainerError", "InvalidImageName", "RunContainerError"}


@dataclass(frozen=True)
class DeploymentView:
    generation: int
    observed_generation: int
    spec_replicas: int
    replicas: int
    ready_replicas: int
    updated_replicas: int
    progress_deadline_exceeded: bool
    replica_failure: str | None = None  # e.g. pods refused by admission (missing PriorityClass, quota)


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str
    node: str
    ready: bool
    deleting: bool
    unschedulable: str | None  # the scheduler's message, e.g. "0/7 nodes are available: ..."
    problem: tuple[str, str] | None  # (reason, message) of a failing container
    group: str | None = None  # pipeline group (parallelism.nodes > 1)
    created: str = ""  # creationTimestamp, for the gang timeout
    fetch: FetchView | None = None  # the fetch-model init container
    startup: Startup | None = None  # scheduled -> Ready, once ready


def deployment_view(body: Mapping[str, Any]) -> DeploymentView:
    st = body.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    return DeploymentView(
        generation=int(body["metadata"].get("generation") or 0),
        observed_generation=int(st.get("observedGeneration") or 0),
        spec_replicas=int((body.get("spec") or {}).get("replicas") or 0),
        replicas=int(st.get("replicas") or 0),
        ready_replicas=int(st.get("readyReplicas") or 0),
        updated_replicas=int(st.get("updatedReplicas") or 0),
        progress_deadline_exceeded=conds.get("Progressing", {}).get("reason") == "ProgressDeadlineExceeded",
        replica_failure=conds["ReplicaFailure"].get("message") if conds.get("ReplicaFailure", {}).get("status") == "True" else None,
    )


def _container_problem(st: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first failing container: init containers (the model fetch) first, then the worker."""
    for field_name, exited in (("initContainerStatuses", "InitContainerFailed"), ("containerStatuses", "WorkerExited")):
        for cs in st.get(field_name) or []:
            if field_name == "initContainerStatuses" and cs.get("name") == FETCH_CONTAINER:
                if (view := fetch_view(st)) and view.state == "failed":  # its exit code names the fix
                    return failure(view)
            state, last = cs.get("state") or {}, cs.get("lastState") or {}
            terminated = state.get("terminated") or last.get("terminated")
            waiting = state.get("waiting") or {}
            if terminated and terminated.get("exitCode", 0) != 0:
                text = (terminated.get("message") or terminated.get("reason") or "").strip()
                return exited, f"container {cs.get('name')} exited with code {terminated.get('exitCode')}: {text}"
            if waiting.get("reason") in _BAD_WAITING:
                return waiting["reason"], f"container {cs.get('name')}: {waiting.get('message') or waiting['reason']}"
    return None


def pod_view(body: Mapping[str, Any]) -> PodView:
    st = body.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    scheduled = conds.get("PodScheduled", {})
    unschedulable = None
    if scheduled.get("status") == "False":
        unschedulable = scheduled.get("message") or scheduled.get("reason") or "not scheduled"
    return PodView(
        name=body["metadata"]["name"],
        phase=st.get("phase") or "Pending",
        node=(body.get("spec") or {}).get("nodeName") or "",
        ready=conds.get("Ready", {}).get("status") == "True",
        deleting=bool(body["metadata"].get("deletionTimestamp")),
        unschedulable=unschedulable,
        problem=_container_problem(st),
        group=(body["metadata"].get("labels") or {}).get(GROUP_LABEL),
        created=body["metadata"].get("creationTimestamp") or "",
        fetch=fetch_view(st),
        startup=startup(st),
    )


def _cond(type_: str, ok: bool | None, reason: str, message: str) -> dict[str, Any]:
    return {"type": type_, "status": "Unknown" if ok is None else str(ok), "reason": reason, "message": message[:4000]}


def conditions(fms: FMS, dep: DeploymentView | None, pods: list[PodView]) -> list[dict[str, Any]]:
    desired = fms.spec.replicas
    live = sorted((p for p in pods if not p.deleting), key=lambda p: p.name)
    unsched = [p for p in live if p.unschedulable]
    problems = [(p, p.problem) for p in live if p.problem]
    ready = dep.ready_replicas if dep else 0
    updated = dep.updated_replicas if dep else 0

    if unsched:
        reason, why = placement.explain_unschedulable(fms.spec, unsched[0].unschedulable)
        placed = _cond("Placed", False, reason, f"{len(unsched)} pod(s) pending; {unsched[0].name}: {why}")
    elif desired == 0:
        placed = _cond("Placed", True, "NoReplicas", "scaled to zero")
    elif len(live) >= desired and all(p.node for p in live):
        placed = _cond("Placed", True, "Scheduled", f"{len(live)} pod(s) on {len({p.node for p in live})} node(s)")
    else:
        placed = _cond("Placed", None, "Scheduling", f"{sum(1 for p in live if p.node)}/{desired} pod(s) scheduled")

    if problems:
        pod, (reason, message) = problems[0]
        degraded = _cond("Degraded", True, reason, f"{pod.name}: {message}")
    elif dep and dep.replica_failure:
        degraded = _cond("Degraded", True, "FailedCreate", dep.replica_failure)
    elif dep and dep.progress_deadline_exceeded:
        degraded = _cond("Degraded", True, "ProgressDeadlineExceeded", "the rollout made no progress within its deadline")
    else:
        degraded = _cond("Degraded", False, "AsExpected", "no failing workers")

    if dep is None:
        progressing = _cond("Progressing", True, "Creating", "waiting for the Deployment")
    elif dep.observed_generation < dep.generation or updated < desired or dep.replicas > desired or ready < desired:
        progressing = _cond("Progressing", True, "RollingOut", f"{updated}/{desired} updated, {ready}/{desired} ready")
    else:
        progressing = _cond("Progressing", False, "Complete", f"{desired} replica(s) up to date")

    if desired == 0:
        ready_c = _cond("Ready", False, "ScaledToZero", "no replicas requested")
    elif ready >= desired:
        ready_c = _cond("Ready", True, "AllReplicasReady", f"{ready}/{desired} replicas ready")
    else:
        ready_c = _cond("Ready", False, "ReplicasNotReady", f"{ready}/{desired} replicas ready")
    model_ready, _ = model_condition(fetch_uri(fms), [(p.name, p.fetch) for p in live])
    return [ready_c, progressing, degraded, placed, model_ready]


def phase(desired: int, conds: list[dict[str, Any]]) -> str:
    by = {c["type"]: c["status"] for c in conds}
    if desired == 0:
        return "ScaledToZero"
    if by["Degraded"] == "True":
        return "Degraded"
    if by["Placed"] == "False":
        return "Pending"
    if by["Ready"] == "True" and by["Progressing"] == "False":
        return "Ready"
    return "Progressing"


def with_times(new: list[dict[str, Any]], old: list[Mapping[str, Any]], generation: int, now: str) -> list[dict[str, Any]]:
    """Keep lastTransitionTime where the status did not change."""
    previous = {c.get("type"): c for c in old}
    out = []
    for c in new:
        before = previous.get(c["type"])
        same = before is not None and before.get("status") == c["status"]
        out.append({**c, "lastTransitionTime": before.get("lastTransitionTime") if same and before else now,
                    "observedGeneration": generation})
    return out


def compute(fms: FMS, dep: DeploymentView | None, pods: list[PodView], previous: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The operator's part of .status (the autoscaler owns lastScale)."""
    conds = conditions(fms, dep, pods)
    live = sorted((p for p in pods if not p.deleting), key=lambda p: p.name)
    _, fetched = model_condition(fetch_uri(fms), [(p.name, p.fetch) for p in live])
    started = startup_report([p.startup for p in live if p.startup])
    return {
        "observedGeneration": fms.generation,
        "phase": phase(fms.spec.replicas, conds),
        "model": fms.spec.model.source.uri(),
        "conditions": with_times(conds, previous.get("conditions") or [], fms.generation, now),
        "replicas": dep.replicas if dep else 0,
        "readyReplicas": dep.ready_replicas if dep else 0,
        "desiredReplicas": fms.spec.replicas,
        "selector": selector_string(fms),
        "gpusPerReplica": fms.spec.gpus_per_replica,
        "endpoint": endpoint(fms),
        "placement": [{"pod": p.name, "node": p.node, "phase": p.phase} for p in live[:MAX_PLACEMENT_ROWS]],
        # Kept when the pods are gone (scaled to zero): the cache and the last start-up times are still facts.
        "modelFetch": fetched or previous.get("modelFetch"),
        "startup": started or previous.get("startup"),
    }


def changed(previous: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return any(previous.get(k) != v for k, v in new.items())


def transitions(previous: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Conditions whose status changed: the handlers turn these into Kubernetes Events."""
    before = {c.get("type"): c.get("status") for c in previous.get("conditions") or []}
    return [c for c in new["conditions"] if before.get(c["type"]) != c["status"]]
