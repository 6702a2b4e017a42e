"""Table tests of status from Deployment and Pod state."""

from __future__ import annotations

import pytest
from operator_factory import make_fms

from fms_operator.status import DeploymentView, PodView, compute, deployment_view, pod_view, transitions

SCHED_MSG = "0/7 nodes are available: 7 Insufficient nvidia.com/gpu."


def dep(ready=1, updated=1, replicas=1, gen=1, observed=1, spec=1):
    return DeploymentView(gen, observed, spec, replicas, ready, updated, False)


def pod(name="p-0", node="n1", ready=True, unschedulable=None, problem=None, phase="Running"):
    return PodView(name, phase, node, ready, False, unschedulable, problem)


def conds(status):
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


@pytest.mark.parametrize("replicas,deployment,pods,phase,expected", [
    (1, None, [], "Progressing", {"Ready": "False", "Progressing": "True", "Placed": "Unknown"}),
    (1, dep(), [pod()], "Ready", {"Ready": "True", "Progressing": "False", "Degraded": "False", "Placed": "True"}),
    (2, dep(ready=1, updated=2, replicas=2, spec=2), [pod(), pod("p-1", node="", ready=False, unschedulable=SCHED_MSG, phase="Pending")],
     "Pending", {"Placed": "False", "Ready": "False"}),
    (1, dep(ready=0), [pod(ready=False, problem=("WorkerExited", "container worker exited with code 3: model does not fit"))],
     "Degraded", {"Degraded": "True"}),
    (1, dep(gen=2, observed=1), [pod()], "Progressing", {"Progressing": "True"}),
    (1, DeploymentView(1, 1, 1, 0, 0, 0, False, 'pods "x" is forbidden: no PriorityClass with name inference was found'), [],
     "Degraded", {"Degraded": "True"}),
    (0, dep(ready=0, updated=0, replicas=0, spec=0), [], "ScaledToZero", {"Ready": "False", "Placed": "True"}),
])
def test_conditions_and_phase(replicas, deployment, pods, phase, expected):
    status = compute(make_fms({"replicas": replicas}), deployment, pods, {}, "T1")
    assert status["phase"] == phase
    assert {k: v[0] for k, v in conds(status).items() if k in expected} == expected


def test_scheduler_message_is_surfaced():
    status = compute(make_fms(), dep(ready=0), [pod(node="", ready=False, unschedulable=SCHED_MSG, phase="Pending")], {}, "T1")
    placed = next(c for c in status["conditions"] if c["type"] == "Placed")
    assert placed["reason"] == "InsufficientGPUs" and SCHED_MSG in placed["message"]  # placement.explain_unschedulable


def test_views_read_real_bodies():
    pending = pod_view({"metadata": {"name": "w-1"}, "spec": {}, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": SCHED_MSG}]}})
    assert pending.unschedulable == SCHED_MSG and pending.node == ""
    crashed = pod_view({"metadata": {"name": "w-2"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running", "containerStatuses": [
        {"name": "worker", "state": {"waiting": {"reason": "CrashLoopBackOff"}},
         "lastState": {"terminated": {"exitCode": 2, "message": "CUDA out of memory: model needs 140 GiB"}}}]}})
    assert crashed.problem[0] == "WorkerExited" and "140 GiB" in crashed.problem[1]
    fetch = pod_view({"metadata": {"name": "w-3"}, "spec": {"nodeName": "n"}, "status": {"phase": "Pending", "initContainerStatuses": [
        {"name": "fetch-model", "state": {"terminated": {"exitCode": 3, "message": "model hf://o/m not found"}}}]}})
    # the fetcher's exit code names the fix (fetch_status.FETCH_FAILURES)
    assert fetch.problem == ("ModelNotFound", "fetch-model exited with code 3: model hf://o/m not found (what to do: fix the "
                             "model name, revision, bucket, prefix or path in spec.model)")
    image = pod_view({"metadata": {"name": "w-4"}, "spec": {"nodeName": "n"}, "status": {"phase": "Pending", "initContainerStatuses": [
        {"name": "fetch-model", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "pull access denied"}}}]}})
    assert image.problem == ("ImagePullBackOff", "container fetch-model: pull access denied")
    d = deployment_view({"metadata": {"generation": 3}, "spec": {"replicas": 2},
                         "status": {"observedGeneration": 3, "replicas": 2, "readyReplicas": 1, "updatedReplicas": 2}})
    assert (d.generation, d.ready_replicas, d.spec_replicas) == (3, 1, 2)


def test_transition_time_kept_when_status_unchanged():
    fms = make_fms()
    first = compute(fms, dep(), [pod()], {}, "T1")
    second = compute(fms, dep(), [pod()], first, "T2")
    assert [c["lastTransitionTime"] for c in second["conditions"]] == ["T1"] * 5
    assert transitions(first, second) == []
    third = compute(fms, dep(ready=0), [pod(ready=False)], second, "T3")
    ready = next(c for c in third["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == "T3"
    assert [c["type"] for c in transitions(second, third)] == ["Ready", "Progressing"]


def test_scale_subresource_fields():
    status = compute(make_fms({"replicas": 3}, name="llm"), dep(replicas=2, ready=2, spec=3), [], {}, "T")
    assert (status["replicas"], status["readyReplicas"], status["desiredReplicas"]) == (2, 2, 3)
    assert status["selector"] == "serving.fms.dev/name=llm"
    assert status["endpoint"]["url"] == "http://llm.ns.svc.cluster.local:8000/v1"


FETCH_OK = '{"cached": true, "seconds": 0.1, "fetch_seconds": 61.0, "bytes": 100, "files": 3}'


def _fetch_pod(name, fetch_state, ready=False, scheduled="2026-01-01T00:00:00Z", ready_at="2026-01-01T00:02:00Z"):
    conds = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled},
             {"type": "Ready", "status": str(ready), "lastTransitionTime": ready_at}]
    return pod_view({"metadata": {"name": name}, "spec": {"nodeName": "n"}, "status": {
        "phase": "Running" if ready else "Pending", "conditions": conds,
        "initContainerStatuses": [{"name": "fetch-model", **fetch_state}],
        "containerStatuses": [{"name": "worker", "restartCount": 0}]}})


def test_failed_fetch_is_model_ready_false_and_degraded():
    failing = _fetch_pod("w-0", {"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                 "lastState": {"terminated": {"exitCode": 4, "message": "access to hf://org/m denied (401)"}}})
    status = compute(make_fms(), dep(ready=0), [failing], {}, "T1")
    c = conds(status)
    assert c["ModelReady"] == ("False", "BadCredentials") and c["Degraded"] == ("True", "BadCredentials")
    assert status["phase"] == "Degraded"
    degraded = next(x for x in status["conditions"] if x["type"] == "Degraded")
    assert degraded["message"].startswith("w-0: fetch-model exited with code 4; retrying: access to hf://org/m denied (401)")


def test_model_fetch_and_startup_in_status_survive_scale_to_zero():
    ready = _fetch_pod("w-0", {"state": {"terminated": {"exitCode": 0, "message": FETCH_OK}}}, ready=True)
    status = compute(make_fms(), dep(), [ready], {}, "T1")
    assert conds(status)["ModelReady"] == ("True", "Cached")
    assert status["modelFetch"]["cached"] is True and status["modelFetch"]["fetchSeconds"] == 61.0
    assert status["startup"] == {"replicas": 1, "lastSeconds": 120.0, "p50Seconds": 120.0, "maxSeconds": 120.0}
    gone = compute(make_fms({"replicas": 0}), dep(ready=0, updated=0, replicas=0, spec=0), [], status, "T2")
    assert (gone["modelFetch"], gone["startup"]) == (status["modelFetch"], status["startup"])
    assert conds(gone)["ModelReady"] == ("Unknown", "Pending")
