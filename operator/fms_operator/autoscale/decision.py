"""The autoscaling formula: observed signal + policy + history -> Decision.

Pure: no clock, no I/O, no Kubernetes objects. The loop feeds it plain
dataclasses and keeps the returned history for the next round. The shape
follows the HorizontalPodAutoscaler's algorithm (ratio with a tolerance band,
per-direction stabilization windows over past recommendations, a rate limit,
then bounds) with two serving-specific additions: a replica is a whole
tensor/pipeline-parallel group, and a namespace GPU budget caps growth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Policy:
    min_replicas: int = 1
    max_replicas: int = 1
    target: float = 1.0
    tolerance: float = 0.1
    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 300.0
    max_step_up: int = 4
    max_step_down: int = 1
    gpus_per_replica: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must be between 0 and maxReplicas ({self.max_replicas})")
        if self.target <= 0:
            raise ValueError(f"target must be positive, got {self.target}")
        if self.max_step_up < 1 or self.max_step_down < 1:
            raise ValueError("maxScaleUpStep and maxScaleDownStep must be at least 1")


@dataclass(frozen=True)
class Observation:
    """What the loop saw this round.

    `current` is spec.replicas: it already counts replicas that are starting,
    so capacity on the way is never requested twice. `sampled` is how many
    Ready replicas answered with metrics; `value` is their per-replica average
    of the chosen signal (None when nobody answered).
    """

    current: int
    sampled: int
    value: float | None


@dataclass(frozen=True)
class Budget:
    """Namespace GPU budget: `limit` GPUs for all fms in the namespace, of
    which `used_by_others` are requested by the other fms objects."""

    limit: int
    used_by_others: int = 0

    def max_replicas(self, gpus_per_replica: int) -> int:
        return max(0, (self.limit - self.used_by_others) // gpus_per_replica)


@dataclass(frozen=True)
class Recommendation:
    time: float
    replicas: int


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    inputs: dict[str, float | int | str | None]
    capped: bool = False
    recommendation: int | None = None
    history: tuple[Recommendation, ...] = field(default=(), repr=False)

    @property
    def changed(self) -> bool:
        return self.desired != self.inputs["current"]


def decide(
    policy: Policy,
    obs: Observation,
    history: tuple[Recommendation, ...],
    now: float,
    budget: Budget | None = None,
    observing_since: float | None = None,
) -> Decision:
    """One evaluation. `observing_since` is when this operator began watching
    the fms; scale-down waits a full down window after it, so a restarted
    operator (empty history) cannot shrink the fleet on its first look."""
    inputs: dict[str, float | int | str | None] = {
        "current": obs.current,
        "sampled": obs.sampled,
        "observed": obs.value,
        "target": policy.target,
    }
    if obs.value is None or obs.sampled == 0:
        desired, reason, capped = _bounds(policy, obs.current, obs.current)
        why = "no metrics from any ready replica; holding" if desired == obs.current else reason
        return Decision(desired, why, inputs, capped, None, history)

    ratio = obs.value / policy.target
    inputs["ratio"] = round(ratio, 4)
    raw = _recommend(obs, ratio, policy.tolerance)
    horizon = max(policy.scale_up_window_s, policy.scale_down_window_s)
    history = tuple(r for r in history if now - r.time <= horizon) + (Recommendation(now, raw),)

    stabilized = _stabilize(policy, obs.current, history, now)
    young = ""
    if stabilized < obs.current and observing_since is not None and now - observing_since < policy.scale_down_window_s:
        stabilized = obs.current
        young = f"no scale-down before watching for one down window ({policy.scale_down_window_s:g}s)"
    stepped = _limit_step(policy, obs.current, stabilized)
    desired, bound_reason, capped = _bounds(policy, obs.current, stepped)
    desired, budget_reason, budget_capped = _cap_budget(policy, obs.current, desired, budget)

    reason = _explain(obs, ratio, raw, stabilized, stepped, desired, policy)
    for extra in (young, bound_reason, budget_reason):
        if extra:
            reason = f"{reason}; {extra}"
    return Decision(desired, reason, inputs, capped or budget_capped, raw, history)


def _recommend(obs: Observation, ratio: float, tolerance: float) -> int:
    if abs(ratio - 1.0) <= tolerance:
        return obs.current
    unknown = max(0, obs.current - obs.sampled)
    if ratio > 1.0:
        # Replicas without metrics (warming up, scrape failed) count as idle
        # capacity: they absorb load once Ready, so don't ask for them again.
        # A ratio above 1 that still lands below `current` (many replicas
        # warming) holds rather than reverses direction.
        return max(math.ceil(obs.sampled * ratio), obs.current)
    # Scale-down assumes replicas without metrics run exactly at target, so a
    # missing scrape can never make the fleet look idler than it is.
    return min(math.ceil(obs.sampled * ratio + unknown), obs.current)


def _stabilize(policy: Policy, current: int, history: tuple[Recommendation, ...], now: float) -> int:
    # Scale up only as far as every recommendation in the up window agrees,
    # scale down only as far as every recommendation in the down window agrees.
    up = min(r.replicas for r in history if now - r.time <= policy.scale_up_window_s)
    down = max(r.replicas for r in history if now - r.time <= policy.scale_down_window_s)
    stabilized = current
    if stabilized < up:
        stabilized = up
    if stabilized > down:
        stabilized = down
    return stabilized


def _limit_step(policy: Policy, current: int, proposed: int) -> int:
    return max(current - policy.max_step_down, min(current + policy.max_step_up, proposed))


def _bounds(policy: Policy, current: int, proposed: int) -> tuple[int, str, bool]:
    if proposed > policy.max_replicas:
        return policy.max_replicas, f"capped at maxReplicas {policy.max_replicas}", True
    if proposed < policy.min_replicas:
        return policy.min_replicas, f"raised to minReplicas {policy.min_replicas}", False
    return proposed, "", False


def _cap_budget(policy: Policy, current: int, desired: int, budget: Budget | None) -> tuple[int, str, bool]:
    # The budget stops growth; it never evicts replicas that already run.
    if budget is None or desired <= current:
        return desired, "", False
    allowed = max(current, budget.max_replicas(policy.gpus_per_replica))
    if desired <= allowed:
        return desired, "", False
    free = budget.limit - budget.used_by_others
    return (
        allowed,
        f"capped by namespace GPU budget {budget.limit} ({budget.used_by_others} used by other services, "
        f"{free} free, {policy.gpus_per_replica} per replica)",
        True,
    )


def _explain(obs: Observation, ratio: float, raw: int, stabilized: int, stepped: int, desired: int, policy: Policy) -> str:
    head = f"observed {obs.value:.3g} vs target {policy.target:.3g} (ratio {ratio:.2f}) over {obs.sampled}/{obs.current} replicas"
    if raw == obs.current:
        within = abs(ratio - 1.0) <= policy.tolerance
        return f"{head}: {'within tolerance' if within else 'replicas without metrics cover it'}"
    text = f"{head}: recommends {raw}"
    if stabilized != raw:
        window = policy.scale_up_window_s if raw > obs.current else policy.scale_down_window_s
        text += f", stabilized to {stabilized} over {window:g}s"
    if stepped != stabilized:
        text += f", step-limited to {stepped}"
    return text


def with_inputs(decision: Decision, **inputs: float | int | str | None) -> Decision:
    """Adds extra context (metric name, per-signal values) to a decision's inputs."""
    return replace(decision, inputs={**decision.inputs, **inputs})
