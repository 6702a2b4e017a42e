"""Desired vs observed -> actions (pure).

Each applied object carries the hash of what the operator rendered for it; an
object whose hash matches is left alone, so a restarted operator (or a status
refresh) writes nothing. Owned objects no longer rendered (a PDB after scaling
to one replica) are deleted.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from fms_operator.render.meta import APPLIED_HASH, digest

MANAGED_KINDS = ("ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "StatefulSet", "ResourceClaimTemplate")


@dataclass(frozen=True)
class Observed:
    kind: str
    name: str
    applied_hash: str | None


@dataclass(frozen=True)
class Action:
    verb: Literal["apply", "delete"]
    kind: str
    name: str
    reason: str
    manifest: dict[str, Any] | None = None


def stamp(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its own hash as an annotation (computed without it)."""
    stamped = copy.deepcopy(manifest)
    stamped["metadata"].setdefault("annotations", {})[APPLIED_HASH] = digest(manifest)
    return stamped


def observed_from(body: dict[str, Any]) -> Observed:
    meta = body["metadata"]
    return Observed(kind=body["kind"], name=meta["name"], applied_hash=(meta.get("annotations") or {}).get(APPLIED_HASH))


def plan(desired: Iterable[dict[str, Any]], observed: Iterable[Observed]) -> list[Action]:
    seen = {(o.kind, o.name): o for o in observed}
    actions: list[Action] = []
    wanted: set[tuple[str, str]] = set()
    for manifest in desired:
        key = (manifest["kind"], manifest["metadata"]["name"])
        wanted.add(key)
        stamped = stamp(manifest)
        current = seen.get(key)
        if current is None:
            actions.append(Action("apply", *key, reason="Created", manifest=stamped))
        elif current.applied_hash != stamped["metadata"]["annotations"][APPLIED_HASH]:
            actions.append(Action("apply", *key, reason="Updated", manifest=stamped))
    for key in sorted(seen):
        if key not in wanted and key[0] in MANAGED_KINDS:
            actions.append(Action("delete", *key, reason="NoLongerNeeded"))
    return actions
