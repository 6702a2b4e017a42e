"""The reconcile loop against a fake API: writes only what changed, nothing on a second pass."""

from __future__ import annotations

import pytest
from operator_factory import make_fms

from fms_operator.plan import observed_from
from fms_operator.reconciler import Reconciler, Snapshot


class FakeKube:
    def __init__(self):
        self.objects: dict[tuple[str, str], dict] = {}
        self.writes: list[tuple[str, str, str]] = []
        self.status: dict = {}

    def apply(self, manifest):
        self.objects[(manifest["kind"], manifest["metadata"]["name"])] = manifest
        self.writes.append(("apply", manifest["kind"], manifest["metadata"]["name"]))
        return manifest

    def delete(self, kind, namespace, name):
        self.objects.pop((kind, name))
        self.writes.append(("delete", kind, name))

    def patch_status(self, namespace, name, status):
        self.status = status
        self.writes.append(("status", "FoundationModelService", name))


def body(spec, generation=1, status=None):
    fms = make_fms(spec, generation=generation)
    return {"apiVersion": "serving.fms.dev/v1alpha1", "kind": "FoundationModelService",
            "metadata": {"name": fms.name, "namespace": fms.namespace, "uid": fms.uid, "generation": generation},
            "spec": {"model": {"source": {"hf": {"repo": "org/model"}}}, **spec}, "status": status or {}}


def run(rec, kube, spec, generation=1, fresh_process=False):
    kube.writes.clear()
    snap = Snapshot(body=body(spec, generation, kube.status), observed=[observed_from(o) for o in kube.objects.values()])
    if fresh_process:
        rec = Reconciler(kube, rec.emit, clock=lambda: "T")
    rec.reconcile(snap, "test")
    return kube.writes


def test_create_then_noop_then_update_then_restart():
    kube, events = FakeKube(), []
    rec = Reconciler(kube, lambda b, t, r, m: events.append((t, r, m)), clock=lambda: "T")
    assert run(rec, kube, {"replicas": 2}) == [("apply", "ConfigMap", "m-worker-config"), ("apply", "Deployment", "m"),
                                                ("apply", "Service", "m"), ("apply", "PodDisruptionBudget", "m"),
                                                ("status", "FoundationModelService", "m")]
    assert ("Normal", "Applied", "ConfigMap m-worker-config created, Deployment m created, Service m created, PodDisruptionBudget m created") in events
    assert run(rec, kube, {"replicas": 2}) == []
    assert run(rec, kube, {"replicas": 1}, generation=2) == [("apply", "Deployment", "m"), ("delete", "PodDisruptionBudget", "m"),
                                                              ("status", "FoundationModelService", "m")]
    # A restarted operator only knows what it observes: still nothing to write.
    assert run(rec, kube, {"replicas": 1}, generation=2, fresh_process=True) == []


def test_invalid_stored_spec_is_reported_not_raised():
    kube = FakeKube()
    rec = Reconciler(kube, lambda *a: None, clock=lambda: "T")
    snap = Snapshot(body=body({}) | {"spec": {"model": {"source": {}}, "parallelism": {"tensor": 99}}})
    assert rec.reconcile(snap, "test") == []
    assert kube.status["conditions"][0]["reason"] == "InvalidSpec"
    assert "parallelism.tensor" in kube.status["conditions"][0]["message"]


def test_an_object_being_deleted_is_left_alone():
    kube = FakeKube()
    rec = Reconciler(kube, lambda *a: None, clock=lambda: "T")
    snap = Snapshot(body=body({"replicas": 1}))
    snap.body["metadata"]["deletionTimestamp"] = "2026-11-27T00:00:00Z"
    assert rec.reconcile(snap, "test") == [] and kube.writes == []


def test_a_terminating_namespace_is_not_an_error():
    from fms_operator import metrics
    from fms_operator.kube import KubeError

    class TerminatingKube(FakeKube):
        def apply(self, manifest):
            raise KubeError(403, "unable to create new content in namespace ns because it is being terminated",
                            ("NamespaceTerminating",))

    errors = metrics.ERRORS.labels("test")._value.get()
    rec = Reconciler(TerminatingKube(), lambda *a: None, clock=lambda: "T")
    assert rec.reconcile(Snapshot(body=body({"replicas": 1})), "test") == []
    assert metrics.ERRORS.labels("test")._value.get() == errors

    class ForbiddenKube(FakeKube):  # any other refusal still surfaces
        def apply(self, manifest):
            raise KubeError(403, "configmaps is forbidden: User cannot create", ())

    rec = Reconciler(ForbiddenKube(), lambda *a: None, clock=lambda: "T")
    with pytest.raises(KubeError, match="User cannot create"):
        rec.reconcile(Snapshot(body=body({"replicas": 1})), "test")
