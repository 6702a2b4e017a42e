"""ModelReady, status.modelFetch, status.startup and the cache claim, against the real control plane + kwok.

kwok marks init containers Completed without a termination message; the tests
then write what a real kubelet reports for the fetch-model container (its exit
code and the fetcher's message) into the pod's status subresource.
"""

from __future__ import annotations

import json

import pytest
from operator_harness import apply, condition, get, sample, wait_until

pytestmark = pytest.mark.integration

NOT_FOUND = ("model hf://HuggingFaceTB/SmolLM2-135M-Instruct not found at https://huggingface.co (404); check the org/name; "
             "if the model is private or gated, put a token in a Secret and set spec.model.source.hf.tokenSecret")
SUMMARY = {"path": "/var/cache/fms/models/x", "source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "cached": True,
           "seconds": 0.12, "bytes": 269060381, "bytes_downloaded": 0, "files": 9, "revision": "12fd25f", "fetch_seconds": 15.2}


def _running_pod(cluster, namespace: str, fms: str) -> dict:
    def running():
        pods = json.loads(cluster.kubectl("-n", namespace, "get", "pods", "-l", f"serving.fms.dev/name={fms}", "-o", "json").stdout)["items"]
        return next((p for p in pods if p["status"].get("phase") == "Running"), None)
    return wait_until("a Running worker pod", running, timeout=90)


def _set_fetch_status(cluster, namespace: str, pod: dict, state: dict, last: dict | None = None) -> None:
    status = {"name": "fetch-model", "image": pod["spec"]["initContainers"][0]["image"], "ready": False,
              "restartCount": 1 if last else 0, "state": state, "lastState": last or {}}
    # merge patch: the list is replaced whole, as the kubelet writes it
    cluster.kubectl("-n", namespace, "patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"initContainerStatuses": [status]}}))


def _model_ready(cluster, namespace: str, reason: str):
    def check():
        fms = get(cluster, "fms", namespace, "smollm2")
        return fms if condition(fms, "ModelReady").get("reason") == reason else None
    return wait_until(f"ModelReady reason {reason}", check, timeout=60)


def test_failed_fetch_is_reported_then_recovers(cluster, operator, namespace):
    apply(cluster, namespace, sample("generate-minimal"))
    pod = _running_pod(cluster, namespace, "smollm2")
    # kwok's Completed init container carries no summary: ready, but nothing to say about the cache
    fms = _model_ready(cluster, namespace, "Fetched")
    assert condition(fms, "ModelReady")["status"] == "True"
    assert fms["status"]["modelFetch"] == {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "pods": 1, "cachedPods": 0}
    startup = wait_until("status.startup", lambda: (get(cluster, "fms", namespace, "smollm2") or {})["status"].get("startup"))
    assert startup["replicas"] == 1 and 0 <= startup["maxSeconds"] < 60
    assert operator.metric("fms_operator_replica_startup_seconds_count") >= 1

    _set_fetch_status(cluster, namespace, pod, {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s"}},
                      {"terminated": {"exitCode": 3, "reason": "Error", "message": NOT_FOUND}})
    fms = _model_ready(cluster, namespace, "ModelNotFound")
    model_ready, degraded = condition(fms, "ModelReady"), condition(fms, "Degraded")
    assert model_ready["status"] == "False"
    assert model_ready["message"] == (f"{pod['metadata']['name']}: fetch-model exited with code 3; retrying: {NOT_FOUND} "
                                      "(what to do: fix the model name, revision, bucket, prefix or path in spec.model)")
    assert (degraded["status"], degraded["reason"]) == ("True", "ModelNotFound")
    assert fms["status"]["phase"] == "Degraded"
    events = cluster.kubectl("-n", namespace, "get", "events", "--field-selector", "involvedObject.name=smollm2", "-o", "json").stdout
    assert "ModelNotFound" in events  # Degraded=True is posted as a Warning

    _set_fetch_status(cluster, namespace, pod, {"terminated": {"exitCode": 0, "reason": "Completed", "message": json.dumps(SUMMARY)}})
    fms = _model_ready(cluster, namespace, "Cached")
    assert fms["status"]["modelFetch"] == {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "pods": 1, "cachedPods": 1,
                                           "cached": True, "fetchSeconds": 15.2, "seconds": 0.12, "bytes": 269060381,
                                           "revision": "12fd25f"}
    assert condition(fms, "Degraded")["status"] == "False"
    wait_until("phase Ready", lambda: get(cluster, "fms", namespace, "smollm2")["status"]["phase"] == "Ready")


def test_cache_claim_is_created_and_mounted(cluster, operator, namespace):
    apply(cluster, namespace, sample("generate-minimal", caching={"modelCache": {"claim": {"size": "50Gi"}}}))
    pvc = wait_until("cache PVC", lambda: get(cluster, "pvc", namespace, "smollm2-model-cache"))
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pvc["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert pvc["metadata"]["ownerReferences"][0]["name"] == "smollm2"
    dep = wait_until("Deployment", lambda: get(cluster, "deployment", namespace, "smollm2"))
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "smollm2-model-cache"}

    # A PVC's access mode is immutable: the API server refuses the change with the CRD's message.
    changed = apply(cluster, namespace, sample("generate-minimal", caching={"modelCache": {"claim": {"accessMode": "ReadWriteOnce"}}}),
                    check=False)
    assert changed.returncode != 0 and "cannot change once the claim exists" in changed.stderr
    # Deleting the PVC (e.g. by hand) gets it re-created.
    uid = pvc["metadata"]["uid"]
    cluster.kubectl("-n", namespace, "delete", "pvc", "smollm2-model-cache", "--wait=false")
    cluster.kubectl("-n", namespace, "patch", "pvc", "smollm2-model-cache", "--type=json",
                    "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]', check=False)  # no attach/detach controller here
    wait_until("PVC re-created", lambda: (p := get(cluster, "pvc", namespace, "smollm2-model-cache")) and
               p["metadata"]["uid"] != uid and not p["metadata"].get("deletionTimestamp"), timeout=60)


def test_worker_exit_message_is_surfaced(cluster, operator, namespace):
    """A worker that exits at start (the model does not fit) shows up as Degraded with its termination message."""
    apply(cluster, namespace, sample("generate-minimal"))
    pod = _running_pod(cluster, namespace, "smollm2")
    worker = pod["spec"]["containers"][0]
    message = ("model load failed: the weights need 16.1 GiB of GPU memory and 15.0 GiB are free; "
               "set precision.quantization: int8 or ask for a larger GPU")
    status = {"name": worker["name"], "image": worker["image"], "ready": False, "restartCount": 2,
              "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
              "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}}
    cluster.kubectl("-n", namespace, "patch", "pod", pod["metadata"]["name"], "--subresource=status", "--type=merge",
                    "-p", json.dumps({"status": {"containerStatuses": [status]}}))

    def degraded():
        fms = get(cluster, "fms", namespace, "smollm2")
        return fms if condition(fms, "Degraded").get("status") == "True" else None

    fms = wait_until("Degraded=True", degraded, timeout=60)
    cond = condition(fms, "Degraded")
    assert cond["reason"] == "WorkerExited"
    assert message in cond["message"] and "exited with code 1" in cond["message"]
