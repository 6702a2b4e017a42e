"""Model readiness and start-up time from pod status (pure).

The `fetch-model` init container (render/fetch.py, worker/fms_worker/fetch)
ends with an exit code that names the kind of failure and a termination
message: a JSON summary on success, a sentence saying what is wrong on
failure. Kubernetes keeps both in initContainerStatuses; this module turns
them into the fms `ModelReady` condition and `status.modelFetch`, so a bad
model name shows up as ModelNotFound with the fetcher's words instead of a
crash-looping pod. It also reads each replica's start-up time (scheduled ->
Ready) from the pod's condition timestamps.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Mapping

from fms_operator.render.fetch import FETCH_CONTAINER

# Exit code -> (reason, what to do). The codes are fms_worker.fetch.errors.ExitCode (docs/model-sources.md).
FETCH_FAILURES: dict[int, tuple[str, str]] = {
    1: ("FetchFailed", "an unexpected error in the fetcher; if it persists, report it with this message"),
    2: ("InvalidModelSource", "fix spec.model.source"),
    3: ("ModelNotFound", "fix the model name, revision, bucket, prefix or path in spec.model"),
    4: ("BadCredentials", "fix the Secret named in spec.model.source (token or access keys) or grant it read access"),
    5: ("ChecksumMismatch", "the store or a proxy returned corrupt data; the pod retries the download"),
    6: ("ModelCacheFull", "give spec.caching.modelCache more space (sizeLimit, or a larger claim)"),
    7: ("SourceUnavailable", "the store did not answer; usually transient, the pod retries and resumes the download"),
    8: ("NoSafetensors", "the source has no safetensors weights; publish them as safetensors"),
}
OTHER_FAILURE = ("FetchFailed", "see the message; the fetch-model container has a 4Gi memory limit")


@dataclass(frozen=True)
class FetchView:
    """One pod's fetch-model init container: its latest finished or current attempt."""

    state: Literal["waiting", "running", "done", "failed"]
    exit_code: int | None = None
    message: str = ""  # JSON summary when done; the fetcher's sentence (or the kubelet's reason) when failed
    retrying: bool = False  # failed, and the kubelet is running or about to run it again


@dataclass(frozen=True)
class Startup:
    seconds: float  # PodScheduled -> Ready
    ready_at: float  # epoch seconds of the Ready transition


def _epoch(timestamp: str | None) -> float | None:
    if not timestamp:
        return None
    try:
        return datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def fetch_view(pod_status: Mapping[str, Any]) -> FetchView | None:
    """None when the pod has no fetch-model status yet (not scheduled, or rendered without the step)."""
    cs = next((c for c in pod_status.get("initContainerStatuses") or [] if c.get("name") == FETCH_CONTAINER), None)
    if cs is None:
        return None
    state, last = cs.get("state") or {}, cs.get("lastState") or {}
    if done := state.get("terminated"):
        code = int(done.get("exitCode", 0))
        text = (done.get("message") or "").strip() if code == 0 else (done.get("message") or done.get("reason") or "").strip()
        return FetchView("done" if code == 0 else "failed", code, text)
    before = last.get("terminated")
    if before and int(before.get("exitCode", 0)) != 0:  # running again, or in back-off (CrashLoopBackOff)
        return FetchView("failed", int(before["exitCode"]), (before.get("message") or before.get("reason") or "").strip(),
                         retrying=True)
    return FetchView("running" if "running" in state else "waiting")


def failure(view: FetchView) -> tuple[str, str]:
    """(reason, message) of a failed fetch, for ModelReady and Degraded."""
    reason, todo = FETCH_FAILURES.get(view.exit_code or 0, OTHER_FAILURE)
    again = "; retrying" if view.retrying else ""
    return reason, f"fetch-model exited with code {view.exit_code}{again}: {view.message or 'no message'} (what to do: {todo})"


def summary(view: FetchView) -> dict[str, Any]:
    """The fetcher's JSON summary of a finished fetch; {} when absent (e.g. a simulated pod) or not JSON."""
    try:
        doc = json.loads(view.message)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def startup(pod_status: Mapping[str, Any]) -> Startup | None:
    """Scheduled -> Ready of a pod whose containers never restarted (after a restart, Ready is no longer the start)."""
    conds = {c.get("type"): c for c in pod_status.get("conditions") or []}
    scheduled, ready = conds.get("PodScheduled") or {}, conds.get("Ready") or {}
    if scheduled.get("status") != "True" or ready.get("status") != "True":
        return None
    if any(int(c.get("restartCount") or 0) for c in pod_status.get("containerStatuses") or []):
        return None
    t0, t1 = _epoch(scheduled.get("lastTransitionTime")), _epoch(ready.get("lastTransitionTime"))
    if t0 is None or t1 is None or t1 < t0:
        return None
    return Startup(seconds=t1 - t0, ready_at=t1)


def model_condition(uri: str, fetches: list[tuple[str, FetchView | None]]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(ModelReady condition, status.modelFetch or None) from the live pods' (name, fetch view)."""
    failed = [(name, v) for name, v in fetches if v and v.state == "failed"]
    done = [(name, v) for name, v in fetches if v and v.state == "done"]
    running = [name for name, v in fetches if v and v.state == "running"]
    report = _report(uri, [v for _, v in done]) if done else None
    if failed:
        name, view = failed[0]
        reason, message = failure(view)
        return _cond(False, reason, f"{name}: {message}" + (f" ({len(failed)} pods failing)" if len(failed) > 1 else "")), report
    if report:
        if report.get("cached") is True:
            reason, how = "Cached", "found on the cache volume"
        elif report.get("cached") is False:
            reason, how = "Downloaded", f"downloaded in {report['fetchSeconds']:.1f} s" if report.get("fetchSeconds") is not None else "downloaded"
        else:
            reason, how = "Fetched", "fetched"
        return _cond(True, reason, f"{uri} {how}; ready on {report['pods']} pod(s)"), report
    if running:
        return _cond(False, "Fetching", f"{running[0]}: fetch-model is fetching {uri}"), None
    return _cond(None, "Pending", f"no worker pod has run the fetch-model step for {uri} yet"), None


def _report(uri: str, done: list[FetchView]) -> dict[str, Any]:
    docs = [summary(v) for v in done]
    known = [d for d in docs if isinstance(d.get("cached"), bool)]
    fetch_s = [float(d["fetch_seconds"]) for d in docs if isinstance(d.get("fetch_seconds"), (int, float))]
    run_s = [float(d["seconds"]) for d in docs if isinstance(d.get("seconds"), (int, float))]
    sizes = [int(d["bytes"]) for d in docs if isinstance(d.get("bytes"), int)]
    revisions = [d["revision"] for d in docs if isinstance(d.get("revision"), str)]
    report: dict[str, Any] = {
        "source": uri,
        "pods": len(done),
        "cachedPods": sum(1 for d in known if d["cached"]),
        # True: no pod had to download (a warm cache volume, or a pvc/image path); None: no summary to tell.
        "cached": all(d["cached"] for d in known) if known else None,
        "fetchSeconds": round(max(fetch_s), 2) if fetch_s else None,
        "seconds": round(max(run_s), 2) if run_s else None,
        "bytes": max(sizes) if sizes else None,
        "revision": revisions[0] if revisions else None,
    }
    return {k: v for k, v in report.items() if v is not None}


def startup_report(startups: list[Startup]) -> dict[str, Any] | None:
    """status.startup: scheduled -> Ready seconds over the live replicas that have one."""
    if not startups:
        return None
    seconds = [s.seconds for s in startups]
    last = max(startups, key=lambda s: s.ready_at)
    return {"replicas": len(seconds), "lastSeconds": round(last.seconds, 1),
            "p50Seconds": round(statistics.median(seconds), 1), "maxSeconds": round(max(seconds), 1)}


def _cond(ok: bool | None, reason: str, message: str) -> dict[str, Any]:
    return {"type": "ModelReady", "status": "Unknown" if ok is None else str(ok), "reason": reason, "message": message[:4000]}
