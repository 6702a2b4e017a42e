"""Table tests for the pure autoscaling formula."""

from __future__ import annotations

import pytest

from fms_operator.autoscale.decision import Budget, Observation, Policy, Recommendation, decide

P = Policy(min_replicas=1, max_replicas=10, target=1.0, tolerance=0.1, scale_up_window_s=0, scale_down_window_s=60,
           max_step_up=4, max_step_down=2)


@pytest.mark.parametrize(
    "name, policy, obs, desired, capped, reason_part",
    [
        ("within tolerance up", P, Observation(3, 3, 1.09), 3, False, "within tolerance"),
        ("within tolerance down", P, Observation(3, 3, 0.91), 3, False, "within tolerance"),
        ("just outside tolerance", P, Observation(3, 3, 1.11), 4, False, "recommends 4"),
        ("proportional up", P, Observation(2, 2, 2.0), 4, False, "recommends 4"),
        ("max step up", P, Observation(2, 2, 5.0), 6, False, "step-limited to 6"),
        ("max replicas", P, Observation(8, 8, 2.0), 10, True, "capped at maxReplicas 10"),
        ("min replicas on scale-down", Policy(min_replicas=2, max_replicas=10, scale_down_window_s=0, max_step_down=5),
         Observation(3, 3, 0.1), 2, False, "raised to minReplicas 2"),
        ("below min is raised without metrics", Policy(min_replicas=2, max_replicas=4), Observation(1, 0, None), 2, False,
         "minReplicas"),
        ("above max is lowered without metrics", Policy(min_replicas=1, max_replicas=2), Observation(3, 0, None), 2, True,
         "maxReplicas"),
        ("missing metrics hold", P, Observation(5, 0, None), 5, False, "no metrics"),
        # warm-up: 2 of 4 replicas Ready; load of 1.5x on them asks for 3 <= 4 already on the way.
        ("warming replicas count as capacity", P, Observation(4, 2, 1.5), 4, False, "replicas without metrics cover it"),
        ("warming: more than the warming ones", P, Observation(3, 2, 2.5), 5, False, "recommends 5"),
        # scale-down with a pod not reporting: it counts as at-target, never as idle.
        ("unknown pod assumed at target", Policy(max_replicas=10, scale_down_window_s=0, max_step_down=10),
         Observation(4, 2, 0.2), 3, False, "recommends 3"),  # ceil(2 * 0.2 + 2 * 1.0)
        ("gpu budget caps growth", Policy(max_replicas=10, gpus_per_replica=2), Observation(2, 2, 3.0), 3, True,
         "capped by namespace GPU budget"),
        ("tensor group units: budget leaves room", Policy(max_replicas=10, gpus_per_replica=4), Observation(1, 1, 3.0), 3,
         False, "recommends 3"),
    ],
)
def test_decide_table(name, policy, obs, desired, capped, reason_part):
    budget = Budget(limit=16, used_by_others=10) if "budget" in name else None
    if name.startswith("tensor"):
        budget = Budget(limit=16, used_by_others=4)
    d = decide(policy, obs, (), now=1000.0, budget=budget)
    assert (d.desired, d.capped) == (desired, capped), d.reason
    assert reason_part in d.reason


def test_budget_never_exceeded_and_never_evicts():
    policy = Policy(max_replicas=10, gpus_per_replica=2)
    # 16 GPUs, 12 used elsewhere: room for 2 replicas of 2 GPUs, we already run 3 (budget lowered later).
    d = decide(policy, Observation(3, 3, 4.0), (), now=0, budget=Budget(limit=16, used_by_others=12))
    assert d.desired == 3 and d.capped and "budget" in d.reason
    # Scale-down is not affected by the budget.
    d = decide(Policy(max_replicas=10, scale_down_window_s=0, max_step_down=5), Observation(4, 4, 0.5), (), now=0,
               budget=Budget(limit=1))
    assert d.desired == 2 and not d.capped


def test_budget_exhausted_holds():
    d = decide(Policy(max_replicas=10), Observation(2, 2, 3.0), (), now=0, budget=Budget(limit=2, used_by_others=0))
    assert d.desired == 2 and d.capped


def test_flapping_load_does_not_flap_replicas():
    """Load alternating high/low every round: with a down window the fleet
    scales up once and then stays up while any recent round wanted it."""
    policy = Policy(max_replicas=10, scale_up_window_s=0, scale_down_window_s=60, max_step_down=5)
    history: tuple[Recommendation, ...] = ()
    current, seen = 2, []
    for i in range(12):
        value = 2.0 if i % 2 == 0 else 0.4
        d = decide(policy, Observation(current, current, value * 2 / current), history, now=i * 15.0)
        history, current = d.history, d.desired
        seen.append(current)
    assert seen[0] == 4
    assert seen[1:] == [4] * 11, seen


def test_scale_down_waits_for_down_window_then_goes_to_max_of_window():
    policy = Policy(max_replicas=10, scale_down_window_s=60, max_step_down=10)
    history: tuple[Recommendation, ...] = ()
    current = 6
    # t=0 recommends 5, then load drops further: 3, 3, 3 ...
    values = [5 / 6, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    out = []
    for i, v in enumerate(values):
        d = decide(policy, Observation(current, current, v), history, now=i * 15.0)
        history, current = d.history, d.desired
        out.append(current)
    # The first round goes to 5 (the only recommendation so far), then holds
    # at the window's max until t=0's recommendation is older than 60 s (t=75).
    assert out[0] == 5
    assert out[1:5] == [5, 5, 5, 5]
    assert out[5] == 3, out


def test_scale_up_window_takes_min_of_window():
    policy = Policy(max_replicas=10, scale_up_window_s=30, scale_down_window_s=300)
    history = (Recommendation(0.0, 3),)
    # Now recommends 6, but 15 s ago only 3: goes to 3 (the min) first.
    d = decide(policy, Observation(2, 2, 3.0), history, now=15.0)
    assert d.recommendation == 6
    assert d.desired == 3
    assert "stabilized to 3" in d.reason


def test_missing_metrics_never_scale_down_even_with_history():
    policy = Policy(max_replicas=10, scale_down_window_s=0)
    history = (Recommendation(0.0, 1),)
    d = decide(policy, Observation(4, 0, None), history, now=10.0)
    assert d.desired == 4
    assert d.history == history


def test_restarted_operator_does_not_scale_down_before_window():
    policy = Policy(max_replicas=10, scale_down_window_s=60, max_step_down=5)
    d = decide(policy, Observation(4, 4, 0.2), (), now=30.0, observing_since=0.0)
    assert d.desired == 4 and "no scale-down before watching for one down window" in d.reason
    d = decide(policy, Observation(4, 4, 0.2), d.history, now=61.0, observing_since=0.0)
    assert d.desired == 1


def test_max_step_down():
    policy = Policy(max_replicas=10, scale_down_window_s=0, max_step_down=1)
    d = decide(policy, Observation(8, 8, 0.1), (), now=0)
    assert d.desired == 7 and "step-limited to 7" in d.reason


def test_inputs_are_reported():
    d = decide(P, Observation(2, 2, 1.5), (), now=0)
    assert d.inputs == {"current": 2, "sampled": 2, "observed": 1.5, "target": 1.0, "ratio": 1.5}
    assert d.changed


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"min_replicas": 3, "max_replicas": 2}, "minReplicas"),
        ({"target": 0}, "target must be positive"),
        ({"max_step_up": 0}, "at least 1"),
    ],
)
def test_policy_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Policy(**kwargs)
