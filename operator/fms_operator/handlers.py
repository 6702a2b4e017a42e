"""kopf wiring: indices of what exists, thin event handlers, a retry/resync loop.

Every handler does the same thing: build a Snapshot of one fms from the
indices and hand it to the Reconciler. kopf runs non-indexing handlers only
after all indices are filled, so a restarted operator sees everything that
exists before it decides anything (and then writes nothing).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from fms_operator.api.models import GROUP, PLURAL, VERSION
from fms_operator.autoscale import timer as _autoscale_timer  # noqa: F401  registers the autoscaler's kopf timer
from fms_operator.kube import Kube
from fms_operator.plan import observed_from
from fms_operator.reconciler import Reconciler, Snapshot
from fms_operator.render.meta import MANAGED_BY, NAME_LABEL
from fms_operator.status import deployment_view, pod_view

log = logging.getLogger(__name__)

OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY, NAME_LABEL: kopf.PRESENT}
PODS = {NAME_LABEL: kopf.PRESENT}
RESYNC_S = 60.0
RETRY_S = 5.0

_state: dict[str, Any] = {"reconciler": None, "retry": set()}


def _emit(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message)


def reconciler() -> Reconciler:
    if _state["reconciler"] is None:
        _state["reconciler"] = Reconciler(Kube.connect(), _emit)
    return _state["reconciler"]


# ---------------------------------------------------------------- indices (what exists)


@kopf.index(GROUP, VERSION, PLURAL)
def fms_objects(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    meta = body["metadata"]
    return {(namespace, name): {
        "apiVersion": body["apiVersion"], "kind": body["kind"],
        "metadata": {"name": name, "namespace": namespace, "uid": meta["uid"], "generation": meta.get("generation")},
        "spec": body.get("spec") or {}, "status": body.get("status") or {},
    }}


def _owned(body: kopf.Body, namespace: str, labels: kopf.Labels) -> dict:
    return {(namespace, labels[NAME_LABEL]): observed_from(body)}


@kopf.index("configmaps", labels=OWNED)
def fms_configmaps(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels)


@kopf.index("services", labels=OWNED)
def fms_services(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels)


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=OWNED)
def fms_pdbs(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels)


@kopf.index("apps", "v1", "deployments", labels=OWNED)
def fms_deployments(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return {(namespace, labels[NAME_LABEL]): (observed_from(body), deployment_view(body))}


@kopf.index("pods", labels=PODS)
def fms_pods(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return {(namespace, labels[NAME_LABEL]): pod_view(body)}


def snapshot(key: tuple[str, str], idx: dict[str, Any]) -> Snapshot | None:
    bodies = idx["fms_objects"].get(key)
    if not bodies:
        return None
    observed = [o for name in ("fms_configmaps", "fms_services", "fms_pdbs") for o in idx[name].get(key, [])]
    deployments = list(idx["fms_deployments"].get(key, []))
    observed += [o for o, _ in deployments]
    return Snapshot(body=next(iter(bodies)), observed=observed, deployment=deployments[0][1] if deployments else None,
                    pods=list(idx["fms_pods"].get(key, [])))


def _run(key: tuple[str, str], idx: dict[str, Any], trigger: str) -> None:
    snap = snapshot(key, idx)
    if snap is None:
        return
    try:
        reconciler().reconcile(snap, trigger)
        _state["retry"].discard(key)
    except Exception as e:  # retried by the resync loop; kopf would only log it
        log.exception("reconcile of %s/%s failed", *key)
        _state["retry"].add(key)
        _emit(snap.body, "Warning", "ReconcileError", f"{type(e).__name__}: {e}"[:1000])


# ---------------------------------------------------------------- events (what changed)


@kopf.on.event(GROUP, VERSION, PLURAL)
def fms_changed(type: str | None, namespace: str, name: str, **kw: Any) -> None:
    if type == "DELETED":  # owned objects go with it (ownerReferences, garbage collector)
        reconciler().forget(namespace, name)
        return
    _run((namespace, name), kw, "fms")


def _owned_changed(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, kw: dict[str, Any]) -> None:
    fms_name = labels[NAME_LABEL]
    if type == "DELETED" and body["kind"] != "Pod":
        reconciler().forget(namespace, fms_name, body["kind"], body["metadata"]["name"])
    _run((namespace, fms_name), kw, body["kind"].lower())


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
def deployment_changed(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, **kw: Any) -> None:
    _owned_changed(type, body, namespace, labels, kw)


@kopf.on.event("pods", labels=PODS)
def pod_changed(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, **kw: Any) -> None:
    _owned_changed(type, body, namespace, labels, kw)


@kopf.on.event("configmaps", labels=OWNED)
def configmap_changed(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, **kw: Any) -> None:
    if type == "DELETED":
        _owned_changed(type, body, namespace, labels, kw)


@kopf.on.event("services", labels=OWNED)
def service_changed(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, **kw: Any) -> None:
    if type == "DELETED":
        _owned_changed(type, body, namespace, labels, kw)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OWNED)
def pdb_changed(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, **kw: Any) -> None:
    if type == "DELETED":
        _owned_changed(type, body, namespace, labels, kw)


# ---------------------------------------------------------------- retries and resync


async def _resync(idx: dict[str, Any]) -> None:
    """Retry failed reconciles every RETRY_S; recheck every fms every RESYNC_S (no-ops cost no API calls)."""
    elapsed = 0.0
    while True:
        await asyncio.sleep(RETRY_S)
        elapsed += RETRY_S
        keys = list(idx["fms_objects"]) if elapsed >= RESYNC_S else list(_state["retry"])
        if elapsed >= RESYNC_S:
            elapsed = 0.0
        for key in keys:
            await asyncio.to_thread(_run, key, idx, "resync")


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **kw: Any) -> None:
    settings.posting.level = logging.WARNING  # our own Events are explicit; kopf's INFO logs are noise
    settings.execution.max_workers = 16
    settings.watching.server_timeout = 300
    reconciler()
    memo["resync"] = asyncio.create_task(_resync(kw))


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task = memo.get("resync")
    if task:
        task.cancel()
