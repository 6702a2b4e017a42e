"""The main Service reaches only pods that serve HTTP: a pipeline group's leader, never its followers (pure)."""

from __future__ import annotations

import pytest
from operator_factory import make_fms

from fms_operator.render import render_all
from fms_operator.render.group import POD_INDEX_LABEL

INDEX = POD_INDEX_LABEL


def _matches(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector.items())


def _objects(parallelism):
    objects = render_all(make_fms({"replicas": 2, "parallelism": parallelism}))
    svc = next(o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") != "None")
    return svc, [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("parallelism, pod_index, served", [
    ({"tensor": 1}, None, True),  # Deployment pods carry no index: all of them serve
    ({"tensor": 4, "pipeline": 2}, None, True),  # one pod, in-pod pipeline
    ({"tensor": 8, "pipeline": 2, "nodes": 2}, "0", True),  # group leader
    ({"tensor": 8, "pipeline": 2, "nodes": 2}, "1", False),  # follower: no HTTP server
    ({"tensor": 2, "pipeline": 4, "nodes": 4}, "3", False),
    ({"tensor": 2, "pipeline": 4, "nodes": 4}, "0", True),
])
def test_service_selects_serving_pods_only(parallelism, pod_index, served):
    svc, workloads = _objects(parallelism)
    assert workloads
    for w in workloads:
        pod_labels = dict(w["spec"]["template"]["metadata"]["labels"])
        if pod_index is not None:  # what the StatefulSet controller adds to each pod
            pod_labels[INDEX] = pod_index
        assert _matches(svc["spec"]["selector"], pod_labels) is served


def test_group_headless_service_still_reaches_every_rank():
    objects = render_all(make_fms({"parallelism": {"tensor": 8, "pipeline": 2, "nodes": 2}}))
    headless = next(o for o in objects if o["kind"] == "Service" and o["spec"].get("clusterIP") == "None")
    assert INDEX not in headless["spec"]["selector"]
