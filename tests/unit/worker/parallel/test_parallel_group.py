"""A pod's place in a pipeline group, from the FMS_GROUP_* variables the operator renders (pure)."""

from __future__ import annotations

import pytest

from fms_worker.parallel.group import RENDEZVOUS_PORT, PodGroup, pod_group

LEADER = "m-g0-0.m-group.ns.svc"


def _env(size="2", index="1", leader=LEADER, **extra):
    return {"FMS_GROUP_SIZE": size, "FMS_GROUP_RANK": index, "FMS_GROUP_LEADER": leader, **extra}


def test_no_group_variables_is_a_plain_pod():
    assert pod_group({}) is None
    assert pod_group(_env(size="1", index="0")) is None


def test_group_variables_parse_with_the_rendered_port():
    assert pod_group(_env()) == PodGroup(2, 1, LEADER, RENDEZVOUS_PORT)
    assert pod_group(_env(FMS_GROUP_PORT="4100")).port == 4100
    assert pod_group(_env(index="0")).is_leader and not pod_group(_env()).is_leader


@pytest.mark.parametrize("size, index, world, tp, per_pod, first", [
    (2, 0, 2, 1, 1, 0),  # pipeline 2, one stage per pod
    (2, 1, 2, 1, 1, 1),
    (2, 1, 16, 8, 8, 8),  # tensor 8 x pipeline 2 over 2 nodes
    (4, 3, 16, 2, 4, 12),  # tensor 2 x pipeline 8 over 4 nodes: two stages a pod
])
def test_global_rank_is_pod_index_times_ranks_per_pod(size, index, world, tp, per_pod, first):
    group = PodGroup(size, index, LEADER)
    assert group.ranks_per_pod(world, tp) == per_pod
    assert group.first_rank(world, tp) == first


@pytest.mark.parametrize("world, tp", [(3, 1), (8, 8), (12, 4)])  # a stage would span two pods
def test_split_that_cuts_a_stage_is_refused(world, tp):
    with pytest.raises(ValueError, match="make parallel.pipeline a multiple of the number of pods"):
        PodGroup(2, 0, LEADER).ranks_per_pod(world, tp)


@pytest.mark.parametrize("env, message", [
    (_env(index=""), "comes from the pod-index label"),
    (_env(size="two"), "must be integers"),
    (_env(index="2"), "FMS_GROUP_RANK=2 is outside the group of FMS_GROUP_SIZE=2 pods"),
    (_env(leader=""), "FMS_GROUP_LEADER is empty"),
])
def test_bad_group_variables_say_what_is_wrong(env, message):
    with pytest.raises(ValueError, match=message):
        pod_group(env)
