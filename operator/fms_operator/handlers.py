"""kopf wiring: indices of what exists, a queue of fms that need a look, one worker loop.

Indices (kopf.index, async: they run in the event loop) keep a small view of every fms, owned object and worker
pod in memory; an index function also marks its fms dirty. A single loop
(`Flusher`) takes the dirty set every DEBOUNCE_S and reconciles each fms in a
thread: a burst of pod and Deployment events costs one reconcile per fms, and
a reconcile that finds everything right makes no API call. kopf runs
non-indexing handlers only after all indices are filled, so a restarted
operator decides nothing before it has seen everything (and then writes
nothing).
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
from fms_operator.render.group import groups_as_deployment, statefulset_summary
from fms_operator.render.meta import MANAGED_BY, NAME_LABEL
from fms_operator.status import deployment_view, pod_view

log = logging.getLogger(__name__)

OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY, NAME_LABEL: kopf.PRESENT}
PODS = {NAME_LABEL: kopf.PRESENT}
DEBOUNCE_S = 0.3
RETRY_S = 5.0
RESYNC_S = 120.0
CONCURRENCY = 8  # reconciles in flight; more only adds contention on a small machine (bench: 32 was slower)

Key = tuple[str, str]
INDICES = ("fms_objects", "fms_configmaps", "fms_services", "fms_pdbs", "fms_pvcs", "fms_deployments", "fms_statefulsets",
           "fms_pods")


def _emit(body: dict[str, Any], type_: str, reason: str, message: str) -> None:
    kopf.event(body, type=type_, reason=reason, message=message)


class Flusher:
    """The dirty set and the loop that drains it."""

    def __init__(self) -> None:
        self.dirty: set[Key] = set()
        self.wake = asyncio.Event()
        self.indices: dict[str, Any] = {}
        self.task: asyncio.Task | None = None
        self._reconciler: Reconciler | None = None

    @property
    def reconciler(self) -> Reconciler:
        if self._reconciler is None:  # built once, on first use (after kopf has logged in)
            self._reconciler = Reconciler(Kube.connect(), _emit)
        return self._reconciler

    def mark(self, key: Key) -> None:
        self.dirty.add(key)
        self.wake.set()

    def start(self, indices: dict[str, Any]) -> None:
        """Called from a kopf handler: the task inherits kopf's context (needed by kopf.event)."""
        if self.task is None:
            self.indices = {name: indices[name] for name in INDICES}
            self.task = asyncio.create_task(self._loop())
            asyncio.get_running_loop().call_later(RESYNC_S, self._resync)

    def _resync(self) -> None:
        for key in list(self.indices.get("fms_objects", {})):
            self.mark(key)
        asyncio.get_running_loop().call_later(RESYNC_S, self._resync)

    async def _loop(self) -> None:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(key: Key) -> None:
            async with gate:
                await asyncio.to_thread(self._run, key)

        while True:
            await self.wake.wait()
            await asyncio.sleep(DEBOUNCE_S)
            self.wake.clear()
            keys, self.dirty = self.dirty, set()
            await asyncio.gather(*(one(k) for k in keys))

    def _run(self, key: Key) -> None:
        snap = snapshot(key, self.indices)
        if snap is None:
            return
        try:
            self.reconciler.reconcile(snap, "event")
            if (delay := self.reconciler.recheck_after.pop(key, None)) and self.task:  # e.g. a gang timeout
                loop = self.task.get_loop()
                loop.call_soon_threadsafe(loop.call_later, delay, self.mark, key)
        except Exception as e:  # retried; kopf would only log it
            log.exception("reconcile of %s/%s failed", *key)
            _emit(snap.body, "Warning", "ReconcileError", f"{type(e).__name__}: {e}"[:1000])
            loop = self.task.get_loop() if self.task else None
            if loop:
                loop.call_soon_threadsafe(loop.call_later, RETRY_S, self.mark, key)


FLUSHER = Flusher()


# ---------------------------------------------------------------- indices (what exists)


@kopf.index(GROUP, VERSION, PLURAL)
async def fms_objects(body: kopf.Body, namespace: str, name: str, **_: Any) -> dict:
    meta = body["metadata"]
    return {(namespace, name): {
        "apiVersion": body["apiVersion"], "kind": body["kind"],
        "metadata": {"name": name, "namespace": namespace, "uid": meta["uid"], "generation": meta.get("generation")},
        "spec": body.get("spec") or {}, "status": body.get("status") or {},
    }}


def _owned(body: kopf.Body, namespace: str, labels: kopf.Labels, value: Any) -> dict:
    key = (namespace, labels[NAME_LABEL])
    FLUSHER.mark(key)
    return {key: value}


@kopf.index("configmaps", labels=OWNED)
async def fms_configmaps(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels, observed_from(body))


@kopf.index("services", labels=OWNED)
async def fms_services(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels, observed_from(body))


@kopf.index("policy", "v1", "poddisruptionbudgets", labels=OWNED)
async def fms_pdbs(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels, observed_from(body))


@kopf.index("persistentvolumeclaims", labels=OWNED)
async def fms_pvcs(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels, observed_from(body))


@kopf.index("apps", "v1", "deployments", labels=OWNED)
async def fms_deployments(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels, (observed_from(body), deployment_view(body)))


@kopf.index("apps", "v1", "statefulsets", labels=OWNED)
async def fms_statefulsets(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels, (observed_from(body), statefulset_summary(body)))


@kopf.index("pods", labels=PODS)
async def fms_pods(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict:
    return _owned(body, namespace, labels, pod_view(body))


def snapshot(key: Key, idx: dict[str, Any]) -> Snapshot | None:
    bodies = idx["fms_objects"].get(key)
    if not bodies:
        return None
    observed = [o for name in ("fms_configmaps", "fms_services", "fms_pdbs", "fms_pvcs") for o in idx[name].get(key, [])]
    deployments = list(idx["fms_deployments"].get(key, []))
    observed += [o for o, _ in deployments]
    body = next(iter(bodies))
    view = deployments[0][1] if deployments else None
    if groups := list(idx["fms_statefulsets"].get(key, [])):  # pipeline groups stand in for the Deployment
        observed += [o for o, _ in groups]
        view = groups_as_deployment([s for _, s in groups], int(body["spec"].get("replicas", 1)))
    return Snapshot(body=body, observed=observed, deployment=view, pods=list(idx["fms_pods"].get(key, [])))


# ---------------------------------------------------------------- events (what changed)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def fms_changed(type: str | None, namespace: str, name: str, **kw: Any) -> None:
    FLUSHER.start(kw)
    if type == "DELETED":  # owned objects go with it (ownerReferences, garbage collector)
        FLUSHER.reconciler.forget(namespace, name)
        return
    FLUSHER.mark((namespace, name))


def _deleted(type: str | None, **_: Any) -> bool:
    return type == "DELETED"


async def _owned_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels) -> None:
    """Forget what we applied, so the next reconcile re-creates it."""
    FLUSHER.reconciler.forget(namespace, labels[NAME_LABEL], body["kind"], body["metadata"]["name"])
    FLUSHER.mark((namespace, labels[NAME_LABEL]))


@kopf.on.event("apps", "v1", "deployments", labels=OWNED, when=_deleted)
async def deployment_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    await _owned_deleted(body, namespace, labels)


@kopf.on.event("apps", "v1", "statefulsets", labels=OWNED, when=_deleted)
async def statefulset_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    await _owned_deleted(body, namespace, labels)


@kopf.on.event("configmaps", labels=OWNED, when=_deleted)
async def configmap_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    await _owned_deleted(body, namespace, labels)


@kopf.on.event("services", labels=OWNED, when=_deleted)
async def service_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    await _owned_deleted(body, namespace, labels)


@kopf.on.event("persistentvolumeclaims", labels=OWNED, when=_deleted)
async def pvc_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    await _owned_deleted(body, namespace, labels)


@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OWNED, when=_deleted)
async def pdb_deleted(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> None:
    await _owned_deleted(body, namespace, labels)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.WARNING  # our own Events are explicit; kopf's INFO logs are noise
    settings.watching.server_timeout = 300
    FLUSHER.wake = asyncio.Event()  # bound to kopf's loop


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if FLUSHER.task:
        FLUSHER.task.cancel()
