"""The reconciler gives up on a half-placed pipeline group: deletes its StatefulSet, says why, retries."""

from __future__ import annotations

from test_operator_reconciler import FakeKube, body

from fms_operator.plan import observed_from
from fms_operator.reconciler import Reconciler, Snapshot
from fms_operator.status import PodView

SPEC = {"parallelism": {"tensor": 4, "pipeline": 4, "nodes": 2}, "placement": {"gangTimeoutSeconds": 60}}


def _pod(name, node, created="2026-01-01T00:00:00Z"):
    return PodView(name=name, phase="Running" if node else "Pending", node=node, ready=False, deleting=False,
                   unschedulable=None if node else "0/7 nodes are available: 1 node(s) didn't match pod affinity rules.",
                   problem=None, group="m-g0", created=created)


def _reconcile(rec, kube, pods):
    kube.writes.clear()
    snap = Snapshot(body=body(SPEC, status=kube.status), observed=[observed_from(o) for o in kube.objects.values()],
                    pods=pods)
    rec.reconcile(snap, "test")


def _placed(kube):
    return next(c for c in kube.status["conditions"] if c["type"] == "Placed")


def test_stuck_group_is_deleted_and_reported_until_it_places():
    events = []
    kube = FakeKube()
    clock = ["2026-01-01T00:00:30Z"]
    rec = Reconciler(kube, lambda body, type_, reason, msg: events.append((type_, reason, msg)), clock=lambda: clock[0])
    half = [_pod("m-g0-0", "a100-0"), _pod("m-g0-1", "")]
    _reconcile(rec, kube, half)
    assert ("StatefulSet", "m-g0") in kube.objects and _placed(kube)["reason"] == "GroupDomainFull"
    assert rec.recheck_after.get(("ns", "m")) == 10.0  # the handlers look again before the timeout

    clock[0] = "2026-01-01T00:01:01Z"  # past the 60 s gang timeout
    _reconcile(rec, kube, half)
    assert ("delete", "StatefulSet", "m-g0") in kube.writes and ("apply", "StatefulSet", "m-g0") not in kube.writes
    placed = _placed(kube)
    assert (placed["status"], placed["reason"]) == ("False", "GangUnschedulable") and "a100-0" in placed["message"]
    assert kube.status["phase"] == "Pending" and any(r == "GangUnschedulable" for _, r, _ in events)

    _reconcile(rec, kube, [])  # the next pass re-creates the group (a new try); the reason stays
    assert ("apply", "StatefulSet", "m-g0") in kube.writes and _placed(kube)["reason"] == "GangUnschedulable"

    _reconcile(rec, kube, [_pod("m-g0-0", "h100-0"), _pod("m-g0-1", "h100-1")])  # placed whole at last
    assert _placed(kube)["reason"] != "GangUnschedulable"
