"""The model cache volume forms (render/cache.py) and the per-pod start-up histogram (reconciler)."""

from __future__ import annotations

import pytest
from operator_factory import make_fms
from prometheus_client import REGISTRY
from pydantic import ValidationError

from fms_operator.api.resource import InvalidSpec
from fms_operator.fetch_status import Startup
from fms_operator.reconciler import Reconciler, Snapshot
from fms_operator.render import render_all
from fms_operator.render.deployment import deployment
from fms_operator.status import PodView


def cache_volume_of(spec):
    pod = deployment(make_fms(spec))["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "model-cache")
    mounts = [m["mountPath"] for c in pod["initContainers"] + pod["containers"] for m in c["volumeMounts"] if m["name"] == "model-cache"]
    assert mounts == ["/var/cache/fms", "/var/cache/fms"]  # fetch-model fills what the worker reads
    return {k: v for k, v in volume.items() if k != "name"}


@pytest.mark.parametrize("cache,volume", [
    ({}, {"emptyDir": {"sizeLimit": "100Gi"}}),
    ({"sizeLimit": "20Gi"}, {"emptyDir": {"sizeLimit": "20Gi"}}),
    ({"claimName": "team-models"}, {"persistentVolumeClaim": {"claimName": "team-models"}}),
    ({"claim": {}}, {"persistentVolumeClaim": {"claimName": "m-model-cache"}}),
    ({"hostPath": "/mnt/nvme/fms"}, {"hostPath": {"path": "/mnt/nvme/fms", "type": "DirectoryOrCreate"}}),
])
def test_cache_volume_forms(cache, volume):
    assert cache_volume_of({"caching": {"modelCache": cache}}) == volume


def test_claim_is_rendered_owned_and_before_the_deployment():
    objects = render_all(make_fms({"caching": {"modelCache": {"claim": {"size": "500Gi", "storageClassName": "cephfs"}}}}))
    kinds = [o["kind"] for o in objects]
    assert kinds.index("PersistentVolumeClaim") < kinds.index("Deployment")
    pvc = objects[kinds.index("PersistentVolumeClaim")]
    assert pvc["metadata"]["name"] == "m-model-cache"
    assert pvc["metadata"]["ownerReferences"][0]["kind"] == "FoundationModelService"  # deleted with the fms
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "500Gi"}},
                           "storageClassName": "cephfs"}
    rwo = render_all(make_fms({"caching": {"modelCache": {"claim": {"accessMode": "ReadWriteOnce"}}}}))
    assert next(o for o in rwo if o["kind"] == "PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "PersistentVolumeClaim" not in [o["kind"] for o in render_all(make_fms())]


@pytest.mark.parametrize("cache", [{"hostPath": "relative/dir"}, {"claim": {"accessMode": "ReadOnlyMany"}}, {"claim": {"size": "lots"}}])
def test_bad_cache_spec_is_refused(cache):
    with pytest.raises(InvalidSpec) as info:
        make_fms({"caching": {"modelCache": cache}})
    assert isinstance(info.value.__cause__, ValidationError)


class NoWrites:
    def apply(self, manifest):
        return manifest

    def delete(self, kind, namespace, name):
        pass

    def patch_status(self, namespace, name, status):
        pass


def _count() -> float:
    return REGISTRY.get_sample_value("fms_operator_replica_startup_seconds_count") or 0.0


def test_startup_observed_once_per_pod_and_not_for_pods_ready_before_start():
    rec = Reconciler(NoWrites(), lambda *a: None, clock=lambda: "T", started_at=1000.0)
    body = {"apiVersion": "serving.fms.dev/v1alpha1", "kind": "FoundationModelService",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
            "spec": {"model": {"source": {"hf": {"repo": "org/model"}}}}, "status": {}}

    def pod(name, ready_at):
        return PodView(name, "Running", "n1", True, False, None, None, startup=Startup(seconds=ready_at - 900, ready_at=ready_at))

    before = _count()
    rec.reconcile(Snapshot(body=body, pods=[pod("old", 990.0), pod("new", 1010.0)]), "test")
    assert _count() - before == 1  # "old" became ready before this operator started: its predecessor counted it
    rec.reconcile(Snapshot(body=body, pods=[pod("old", 990.0), pod("new", 1010.0), pod("newer", 1020.0)]), "test")
    assert _count() - before == 2
