"""One reconcile: snapshot -> render -> plan -> apply -> status. No kopf here.

The handlers build a Snapshot from kopf's in-memory indices, so a reconcile
that finds everything right makes no API call at all. `applied` remembers
what this process last applied, because the watch that would tell the
indices lags behind our own writes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

from fms_operator import metrics
from fms_operator.kube import KubeError
from fms_operator.api.resource import FMS, InvalidSpec
from fms_operator.plan import Action, Observed, plan
from fms_operator.render import render_all
from fms_operator.render.meta import APPLIED_HASH
from fms_operator.render.group import is_grouped, stuck_groups
from fms_operator.status import DeploymentView, PodView, changed, compute, phase, transitions

log = logging.getLogger(__name__)

_VERBS = {"Created": "created", "Updated": "updated", "NoLongerNeeded": "deleted (no longer needed)"}
# Placed=False gets no Event of ours: the scheduler already posts FailedScheduling on each pod, the
# condition carries its message, and one Warning per pending fms halved throughput in the
# 500-object benchmark (bench/operator_scale.py, one run each on the shared 2-core machine: 44 s without, 84 s with).
_WARNINGS = {("Degraded", "True")}
Emit = Callable[[dict[str, Any], str, str, str], None]  # (fms body, Normal|Warning, reason, message)


class KubeWriter(Protocol):
    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]: ...
    def delete(self, kind: str, namespace: str, name: str) -> None: ...
    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...


@dataclass
class Snapshot:
    body: dict[str, Any]  # the fms object (metadata, spec, status)
    observed: list[Observed] = field(default_factory=list)
    deployment: DeploymentView | None = None
    pods: list[PodView] = field(default_factory=list)


def _epoch(timestamp: str) -> float:
    return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def utcnow() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    def __init__(self, kube: KubeWriter, emit: Emit, clock: Callable[[], str] = utcnow, started_at: float | None = None) -> None:
        self.kube = kube
        self.emit = emit
        self.clock = clock
        self.applied: dict[tuple[str, str], dict[tuple[str, str], str | None]] = defaultdict(dict)
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.gang_failures: dict[tuple[str, str], str] = {}  # last GangUnschedulable message, until a group places
        self.recheck_after: dict[tuple[str, str], float] = {}  # seconds; the handlers re-mark the fms then
        self._rendered: dict[tuple[str, str], tuple[tuple[Any, Any], FMS, list[dict[str, Any]]]] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = defaultdict(threading.Lock)
        # Pods whose start-up went into the histogram. Pods that became ready before this process started
        # are left out: the previous operator (or peer) counted them. Whole seconds, as in pod timestamps.
        self.started_at = float(int(time.time())) if started_at is None else started_at
        self._startups_seen: dict[tuple[str, str], set[str]] = defaultdict(set)

    def forget(self, namespace: str, fms_name: str, kind: str | None = None, name: str | None = None) -> None:
        """An owned object was deleted (or the fms itself, when kind is None)."""
        key = (namespace, fms_name)
        if kind is None:
            self.applied.pop(key, None)
            self.statuses.pop(key, None)
            self._rendered.pop(key, None)
            self._locks.pop(key, None)
            self._startups_seen.pop(key, None)
        else:
            self.applied[key].pop((kind, name or ""), None)

    def reconcile(self, snap: Snapshot, trigger: str) -> list[Action]:
        meta = snap.body["metadata"]
        key = (meta["namespace"], meta["name"])
        if meta.get("deletionTimestamp"):  # going away: its children go with it (owner references)
            return []
        with self._locks[key], metrics.reconcile_timer(trigger):
            try:
                return self._reconcile(snap, key)
            except KubeError as e:
                if not e.namespace_terminating:
                    raise
                log.info("%s/%s: its namespace is being deleted; nothing to reconcile", *key)
                return []

    def _reconcile(self, snap: Snapshot, key: tuple[str, str]) -> list[Action]:
        meta = snap.body["metadata"]
        try:
            fms, desired = self._render(key, snap.body)
        except InvalidSpec as e:
            self._write_status(snap.body, key, {"observedGeneration": meta.get("generation"), "phase": "Degraded",
                                                "conditions": [{"type": "Degraded", "status": "True", "reason": "InvalidSpec",
                                                                "message": str(e)[:4000], "lastTransitionTime": self.clock()}]})
            return []
        actions = plan(desired, self._observed(key, snap.observed))
        for action in actions:
            self._execute(key, action)
        if actions:  # one Event per reconcile, not per object: Events are API writes too
            done = ", ".join(f"{a.kind} {a.name} {_VERBS[a.reason]}" for a in actions)
            self.emit(snap.body, "Normal", "Applied", done)
        status = compute(fms, snap.deployment, snap.pods, self.statuses.get(key) or snap.body.get("status") or {}, self.clock())
        if is_grouped(fms):
            self._check_gangs(fms, key, snap, status)
        self._write_status(snap.body, key, status)
        self._observe_startups(key, snap.pods)
        return actions

    def _observe_startups(self, key: tuple[str, str], pods: list[PodView]) -> None:
        seen = self._startups_seen[key]
        seen &= {p.name for p in pods}  # only live pods can come back
        for pod in pods:
            if pod.startup and pod.name not in seen:
                seen.add(pod.name)
                if pod.startup.ready_at >= self.started_at:
                    metrics.observe_startup(pod.startup.seconds)

    def _render(self, key: tuple[str, str], body: dict[str, Any]) -> tuple[FMS, list[dict[str, Any]]]:
        """Parse and render once per (uid, generation): most reconciles are status refreshes."""
        meta = body["metadata"]
        version = (meta.get("uid"), meta.get("generation"))
        cached = self._rendered.get(key)
        if cached and cached[0] == version and version[1] is not None:
            return cached[1], cached[2]
        fms = FMS.from_body(body)
        desired = render_all(fms)
        self._rendered[key] = (version, fms, desired)
        return fms, desired

    def _check_gangs(self, fms: FMS, key: tuple[str, str], snap: Snapshot, status: dict[str, Any]) -> None:
        """Delete the StatefulSet of a group stuck half-placed (its pods go, freeing their GPUs; the next
        reconcile re-creates it, a new try) and say so."""
        now = _epoch(self.clock())
        ages = {p.name: now - _epoch(p.created) for p in snap.pods if p.created}
        for group, (_, message) in stuck_groups(fms, snap.pods, ages).items():
            self.kube.delete("StatefulSet", key[0], group)
            self.applied[key].pop(("StatefulSet", group), None)
            self.gang_failures[key] = message
            self.emit(snap.body, "Warning", "GangUnschedulable", message)
        live = [p for p in snap.pods if not p.deleting]
        if live and all(p.node for p in live) and len(live) == fms.spec.replicas * fms.spec.parallelism.nodes:
            self.gang_failures.pop(key, None)
        elif live:
            self.recheck_after[key] = min(10.0, float(fms.spec.placement.gang_timeout_seconds))
        if key in self.gang_failures:
            placed = next(c for c in status["conditions"] if c["type"] == "Placed")
            if placed["reason"] != "GangUnschedulable":
                placed.update(status="False", reason="GangUnschedulable", lastTransitionTime=self.clock())
            placed["message"] = self.gang_failures[key][:4000]
            status["phase"] = phase(fms.spec.replicas, status["conditions"])

    def _observed(self, key: tuple[str, str], indexed: list[Observed]) -> list[Observed]:
        merged = {(o.kind, o.name): o for o in indexed}
        for (kind, name), digest in self.applied[key].items():
            merged[(kind, name)] = Observed(kind, name, digest)
        return list(merged.values())

    def _execute(self, key: tuple[str, str], action: Action) -> None:
        ns = key[0]
        if action.verb == "apply":
            assert action.manifest is not None
            self.kube.apply(action.manifest)
            self.applied[key][(action.kind, action.name)] = action.manifest["metadata"]["annotations"][APPLIED_HASH]
        else:
            self.kube.delete(action.kind, ns, action.name)
            self.applied[key].pop((action.kind, action.name), None)
        metrics.count_write(action.kind, action.verb)

    def _write_status(self, body: dict[str, Any], key: tuple[str, str], status: dict[str, Any]) -> None:
        previous = self.statuses.get(key) or body.get("status") or {}
        if not changed(previous, status):
            return
        self.kube.patch_status(key[0], key[1], status)
        metrics.count_write("FoundationModelService", "patch-status")
        self.statuses[key] = {**previous, **status}
        for cond in transitions(previous, status) if "conditions" in status else []:
            warning = (cond["type"], cond["status"]) in _WARNINGS
            if warning or cond["type"] == "Ready":
                self.emit(body, "Warning" if warning else "Normal", cond["reason"], f"{cond['type']}={cond['status']}: {cond['message']}")
