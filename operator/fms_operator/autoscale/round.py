"""One autoscaling round for one fms, with its Kubernetes I/O: list the pods,
read the namespace budget, evaluate, then apply (deletion cost on the pods to
remove, spec.replicas via the scale subresource, status.lastScale, an Event).

The kopf timer in handlers.py calls `run_round` every interval; the kube
client is synchronous, so its calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from fms_operator.api.resource import FMS
from fms_operator.kube import KubeError
from fms_operator.render.meta import selector_string

from .budget import BUDGET_ANNOTATION, BudgetError, namespace_budget
from .cluster import AutoscaleKube
from .decision import Budget
from .loop import Autoscaler, Evaluation, builtin
from .pods import DELETION_COST

log = logging.getLogger(__name__)

# (type, reason, message): kopf.event bound to the object in handlers.py.
PostEvent = Callable[[str, str, str], None]


async def run_round(body: Mapping[str, Any], kube: AutoscaleKube, autoscaler: Autoscaler, post_event: PostEvent) -> Evaluation | None:
    fms = FMS.from_body(body)
    if not builtin(fms.spec):
        autoscaler.forget(fms.uid)
        return None
    pods = await asyncio.to_thread(kube.list_pods, fms.namespace, selector_string(fms))
    budget = await _budget(kube, fms, post_event)
    ev = await autoscaler.evaluate(fms, pods, budget)
    d = ev.decision
    if d.changed:
        # Mark the least-loaded pods first, so the ReplicaSet picks them when
        # spec.replicas drops; their SIGTERM drain then finishes in-flight work.
        for pod, cost in ev.deletion_costs.items():
            try:
                await asyncio.to_thread(kube.annotate_pod, fms.namespace, pod, {DELETION_COST: cost})
            except KubeError as e:  # only a preference: the ReplicaSet then picks by its own rules
                log.warning("autoscaler %s: deletion cost on pod %s not set: %s", ev.fms, pod, e)
        await asyncio.to_thread(kube.scale, fms.namespace, fms.name, d.desired)
        log.info("autoscaler %s: %s", ev.fms, ev.event_message())
    if ev.announce:
        post_event("Warning" if d.capped and not d.changed else "Normal", "Scaled" if d.changed else "ScaleCapped",
                   ev.event_message())
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    await asyncio.to_thread(kube.patch_status, fms.namespace, fms.name, {"lastScale": ev.last_scale(now)})
    return ev


async def _budget(kube: AutoscaleKube, fms: FMS, post_event: PostEvent) -> Budget | None:
    annotations = await asyncio.to_thread(kube.namespace_annotations, fms.namespace)
    try:
        if BUDGET_ANNOTATION not in annotations:
            return None
        bodies = await asyncio.to_thread(kube.list_fms, fms.namespace)
        return namespace_budget(fms.namespace, annotations, bodies, fms.uid)
    except BudgetError as e:
        # A typo in the annotation must not stop scaling: ignore it, say so.
        post_event("Warning", "InvalidGPUBudget", str(e))
        return None
