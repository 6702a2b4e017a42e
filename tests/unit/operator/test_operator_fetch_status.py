"""Table tests: pod status (fetch-model init container, conditions) -> ModelReady, modelFetch, start-up time."""

from __future__ import annotations

import json

import pytest

from fms_operator.fetch_status import FetchView, Startup, fetch_view, model_condition, startup, startup_report

URI = "hf://org/model"
SUMMARY = {"path": "/var/cache/fms/models/org-model-0123", "source": URI, "cached": False, "seconds": 42.5,
           "bytes": 541_000_000, "bytes_downloaded": 541_000_000, "files": 7, "revision": "abc123", "fetch_seconds": 42.5}


def init(state: dict, last: dict | None = None, name: str = "fetch-model") -> dict:
    return {"initContainerStatuses": [{"name": name, "state": state, "lastState": last or {}}]}


def terminated(code: int, message: str | None = None, reason: str = "Error") -> dict:
    t = {"exitCode": code, "reason": reason}
    if message is not None:
        t["message"] = message
    return {"terminated": t}


NOT_FOUND = "model hf://org/model not found at https://huggingface.co (404); check the org/name"


@pytest.mark.parametrize("pod_status,expected", [
    ({}, None),
    (init({"waiting": {"reason": "PodInitializing"}}, name="other"), None),
    (init({"waiting": {"reason": "PodInitializing"}}), FetchView("waiting")),
    (init({"running": {"startedAt": "2026-01-01T00:00:00Z"}}), FetchView("running")),
    (init(terminated(0, json.dumps(SUMMARY), "Completed")), FetchView("done", 0, json.dumps(SUMMARY))),
    (init(terminated(3, NOT_FOUND)), FetchView("failed", 3, NOT_FOUND)),
    # back-off after a failure: the state is waiting, the failure is in lastState
    (init({"waiting": {"reason": "CrashLoopBackOff"}}, terminated(4, "token invalid")), FetchView("failed", 4, "token invalid", True)),
    # running again after a failure: still failing until it succeeds
    (init({"running": {}}, terminated(7, "connection reset")), FetchView("failed", 7, "connection reset", True)),
    # killed without a message: the kubelet's reason stands in
    (init(terminated(137, None, "OOMKilled")), FetchView("failed", 137, "OOMKilled")),
    # a success after an earlier failure is a success
    (init(terminated(0, "", "Completed"), terminated(7, "connection reset")), FetchView("done", 0, "")),
])
def test_fetch_view(pod_status, expected):
    assert fetch_view(pod_status) == expected


@pytest.mark.parametrize("code,reason", [
    (1, "FetchFailed"), (2, "InvalidModelSource"), (3, "ModelNotFound"), (4, "BadCredentials"), (5, "ChecksumMismatch"),
    (6, "ModelCacheFull"), (7, "SourceUnavailable"), (8, "NoSafetensors"), (137, "FetchFailed"),
])
def test_failed_fetch_is_model_ready_false_with_reason(code, reason):
    cond, report = model_condition(URI, [("w-0", FetchView("done", 0, json.dumps(SUMMARY))),
                                         ("w-1", FetchView("failed", code, "the fetcher's sentence"))])
    assert (cond["type"], cond["status"], cond["reason"]) == ("ModelReady", "False", reason)
    assert cond["message"].startswith(f"w-1: fetch-model exited with code {code}: the fetcher's sentence (what to do: ")
    assert report["pods"] == 1  # the pod that succeeded still reports what it fetched


def test_not_found_message_says_what_to_change():
    cond, _ = model_condition(URI, [("w-0", FetchView("failed", 3, NOT_FOUND, retrying=True))])
    assert cond["message"] == (f"w-0: fetch-model exited with code 3; retrying: {NOT_FOUND} "
                               "(what to do: fix the model name, revision, bucket, prefix or path in spec.model)")


@pytest.mark.parametrize("views,status,reason", [
    ([], "Unknown", "Pending"),
    ([("w-0", None)], "Unknown", "Pending"),
    ([("w-0", FetchView("waiting"))], "Unknown", "Pending"),
    ([("w-0", FetchView("running"))], "False", "Fetching"),
    ([("w-0", FetchView("done", 0, json.dumps(SUMMARY)))], "True", "Downloaded"),
    ([("w-0", FetchView("done", 0, json.dumps({**SUMMARY, "cached": True, "seconds": 0.1})))], "True", "Cached"),
    ([("w-0", FetchView("done", 0, ""))], "True", "Fetched"),  # no summary (e.g. a simulated pod)
    # a new replica still fetching does not take readiness away from a model the others have
    ([("w-0", FetchView("done", 0, json.dumps(SUMMARY))), ("w-1", FetchView("running"))], "True", "Downloaded"),
])
def test_model_ready(views, status, reason):
    cond, _ = model_condition(URI, views)
    assert (cond["status"], cond["reason"]) == (status, reason)


def test_model_fetch_report():
    warm = {**SUMMARY, "cached": True, "seconds": 0.2, "bytes_downloaded": 0}
    _, report = model_condition(URI, [("w-0", FetchView("done", 0, json.dumps(SUMMARY))),
                                      ("w-1", FetchView("done", 0, json.dumps(warm))),
                                      ("w-2", FetchView("done", 0, "not json"))])
    assert report == {"source": URI, "pods": 3, "cachedPods": 1, "cached": False, "fetchSeconds": 42.5,
                      "seconds": 42.5, "bytes": 541_000_000, "revision": "abc123"}
    _, warm_only = model_condition(URI, [("w-1", FetchView("done", 0, json.dumps(warm)))])
    assert (warm_only["cached"], warm_only["cachedPods"]) == (True, 1)
    _, unknown = model_condition(URI, [("w-2", FetchView("done", 0, ""))])
    assert unknown == {"source": URI, "pods": 1, "cachedPods": 0}


def conditions(scheduled: str | None, ready: str | None, restarts: int = 0) -> dict:
    conds = []
    if scheduled:
        conds.append({"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled})
    if ready:
        conds.append({"type": "Ready", "status": "True", "lastTransitionTime": ready})
    return {"conditions": conds, "containerStatuses": [{"name": "worker", "restartCount": restarts}]}


@pytest.mark.parametrize("pod_status,seconds", [
    (conditions("2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z"), 90.0),
    (conditions("2026-01-01T00:00:00Z", None), None),  # not ready yet
    (conditions("2026-01-01T00:00:00Z", "2026-01-01T00:01:30Z", restarts=1), None),  # Ready is no longer the start
    (conditions("2026-01-01T00:00:00Z", "garbage"), None),
    ({"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
                     {"type": "Ready", "status": "False", "lastTransitionTime": "2026-01-01T00:00:05Z"}]}, None),
])
def test_startup(pod_status, seconds):
    got = startup(pod_status)
    assert (got.seconds if got else None) == seconds


def test_startup_report():
    assert startup_report([]) is None
    report = startup_report([Startup(90, ready_at=1000), Startup(30, ready_at=3000), Startup(600, ready_at=2000)])
    assert report == {"replicas": 3, "lastSeconds": 30.0, "p50Seconds": 90.0, "maxSeconds": 600.0}
