"""The model cache volume (spec.caching.modelCache): where fetched weights and compile caches live.

Four forms, one volume named `model-cache` mounted at /var/cache/fms:

- emptyDir (default): per pod; every new pod fetches again.
- claimName: an existing PVC. A ReadWriteMany claim shared by every fms of a
  namespace is the usual shared cache: each model has its own directory and
  the fetcher's file lock makes one pod download while the others wait.
- claim: a PVC the operator creates for this fms (`<name>-model-cache`),
  shared by its replicas and kept across pod restarts and rollouts; it is
  deleted with the fms (ownerReference). ReadWriteMany where the storage
  offers it; ReadWriteOnce only works while all replicas share a node.
- hostPath: a node-local directory, shared by the replicas on one node and
  kept across restarts (the ReadWriteOnce alternative that scales out: each
  node fetches once).

The operator never deletes a cache claim itself (switching to another form
leaves it until the fms goes): refetching a large model costs more than the
storage.
"""

from __future__ import annotations

from typing import Any

from fms_operator.api.resource import FMS
from fms_operator.render.meta import metadata

VOLUME = "model-cache"


def claim_name(fms: FMS) -> str:
    return f"{fms.name}-model-cache"


def cache_volume(fms: FMS) -> dict[str, Any]:
    cache = fms.spec.caching.model_cache
    if cache.claim_name:
        return {"name": VOLUME, "persistentVolumeClaim": {"claimName": cache.claim_name}}
    if cache.claim:
        return {"name": VOLUME, "persistentVolumeClaim": {"claimName": claim_name(fms)}}
    if cache.host_path:
        # DirectoryOrCreate makes a root-owned directory: the worker (uid 1000) needs it writable (docs/model-sources.md).
        return {"name": VOLUME, "hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
    return {"name": VOLUME, "emptyDir": {"sizeLimit": cache.size_limit}}


def cache_claim(fms: FMS) -> dict[str, Any] | None:
    """The PVC to create for spec.caching.modelCache.claim; None for the other forms."""
    claim = fms.spec.caching.model_cache.claim
    if claim is None:
        return None
    spec: dict[str, Any] = {"accessModes": [claim.access_mode], "resources": {"requests": {"storage": claim.size}}}
    if claim.storage_class_name:
        spec["storageClassName"] = claim.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata(fms, claim_name(fms)), "spec": spec}
