"""Table tests of plan(desired, observed)."""

from __future__ import annotations

import pytest
from operator_factory import make_fms

from fms_operator.plan import Observed, plan, stamp
from fms_operator.render import render_all
from fms_operator.render.meta import APPLIED_HASH


def _observed(manifests, **overrides):
    out = []
    for m in manifests:
        key = (m["kind"], m["metadata"]["name"])
        digest = stamp(m)["metadata"]["annotations"][APPLIED_HASH]
        out.append(Observed(*key, overrides.get(key[0], digest)))
    return out


def _summary(actions):
    return [(a.verb, a.kind, a.reason) for a in actions]


DESIRED_1 = render_all(make_fms({"replicas": 1}))
DESIRED_3 = render_all(make_fms({"replicas": 3}))


@pytest.mark.parametrize("desired,observed,expected", [
    (DESIRED_1, [], [("apply", "ConfigMap", "Created"), ("apply", "Deployment", "Created"), ("apply", "Service", "Created")]),
    (DESIRED_1, _observed(DESIRED_1), []),
    (DESIRED_1, _observed(DESIRED_1, Deployment="old"), [("apply", "Deployment", "Updated")]),
    (DESIRED_1, _observed(DESIRED_3), [("apply", "Deployment", "Updated"), ("delete", "PodDisruptionBudget", "NoLongerNeeded")]),
    (DESIRED_3, _observed(DESIRED_1), [("apply", "Deployment", "Updated"), ("apply", "PodDisruptionBudget", "Created")]),
    (DESIRED_1, _observed(DESIRED_1, Service=None), [("apply", "Service", "Updated")]),  # not ours yet: take it over
])
def test_plan(desired, observed, expected):
    assert _summary(plan(desired, observed)) == expected


def test_applied_manifest_carries_its_hash():
    action = plan(DESIRED_1, [])[1]
    assert action.manifest["metadata"]["annotations"][APPLIED_HASH]
    assert APPLIED_HASH not in DESIRED_1[1]["metadata"].get("annotations", {})  # desired stays untouched
