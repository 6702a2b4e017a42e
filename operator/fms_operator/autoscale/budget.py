"""Namespace GPU budgets: how many GPUs all fms objects of a namespace may ask for.

Configured by an annotation on the Namespace, e.g.

    kubectl annotate namespace team-a serving.fms.dev/gpu-budget=16

The autoscaler never grows an fms past what the budget leaves after the
other fms objects' spec.replicas x GPUs per replica; it never shrinks one to
fit a budget lowered later (that would drop traffic). Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .decision import Budget

BUDGET_ANNOTATION = "serving.fms.dev/gpu-budget"


class BudgetError(ValueError):
    pass


def budget_from_annotations(namespace: str, annotations: Mapping[str, str] | None) -> int | None:
    """The namespace's GPU budget, or None when it has none."""
    raw = (annotations or {}).get(BUDGET_ANNOTATION)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise BudgetError(f"namespace {namespace}: annotation {BUDGET_ANNOTATION}={raw!r} must be a whole number of GPUs, e.g. \"16\"")
    return value


def gpus_of(body: Mapping[str, Any]) -> int:
    """GPUs an fms asks for: spec.replicas x tensor x pipeline (defaults as the CRD's)."""
    spec = body.get("spec") or {}
    par = spec.get("parallelism") or {}
    return int(spec.get("replicas", 1)) * int(par.get("tensor", 1)) * int(par.get("pipeline", 1))


def namespace_budget(namespace: str, annotations: Mapping[str, str] | None, fms_bodies: Iterable[Mapping[str, Any]],
                     own_uid: str) -> Budget | None:
    limit = budget_from_annotations(namespace, annotations)
    if limit is None:
        return None
    others = sum(gpus_of(b) for b in fms_bodies if b["metadata"].get("uid") != own_uid)
    return Budget(limit=limit, used_by_others=others)
