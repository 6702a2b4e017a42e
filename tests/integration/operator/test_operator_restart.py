"""A restarted operator finds everything right and writes nothing (resourceVersions unchanged)."""

from __future__ import annotations

import json
import time

import pytest
from operator_harness import apply, get, install_crd, running_operator, sample, wait_until

pytestmark = pytest.mark.integration


def _versions(cluster, namespace: str) -> dict[str, str]:
    out = json.loads(cluster.kubectl("-n", namespace, "get", "fms,deployment,service,configmap,pdb", "-o", "json").stdout)
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["resourceVersion"] for o in out["items"]}


def _unchanged_for(cluster, namespace: str, seconds: float) -> bool:
    first = _versions(cluster, namespace)
    time.sleep(seconds)
    return _versions(cluster, namespace) == first


def test_restart_writes_nothing(cluster, namespace, tmp_path):
    install_crd(cluster)
    with running_operator(cluster, tmp_path / "first.log"):
        apply(cluster, namespace, sample("generate-minimal", replicas=2))
        apply(cluster, namespace, sample("embed-minimal"))
        for name in ("smollm2", "minilm"):
            wait_until(f"{name} Ready", lambda: (get(cluster, "fms", namespace, name) or {}).get("status", {}).get("phase") == "Ready")
        wait_until("settled (no change over 3 s)", lambda: _unchanged_for(cluster, namespace, 3.0), timeout=60, every=0)
    before = _versions(cluster, namespace)
    assert {"Deployment/smollm2", "PodDisruptionBudget/smollm2", "ConfigMap/minilm-worker-config"} <= before.keys()

    # Watching only this namespace: other tests' objects (some in namespaces being deleted) are not ours to count.
    with running_operator(cluster, tmp_path / "second.log", namespaces=(namespace,)) as op:
        # The new process has seen both objects (and their pods) before we look.
        wait_until("reconciles after restart", lambda: op.metric("fms_operator_reconciles_total") >= 2, timeout=60)
        time.sleep(5)  # room for any late (wrong) write to show up
        assert op.metric("fms_operator_writes_total") == 0, op.tail()
        assert op.metric("fms_operator_reconcile_errors_total") == 0, op.tail()
    assert _versions(cluster, namespace) == before
