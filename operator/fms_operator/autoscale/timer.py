"""kopf wiring of the built-in autoscaler: one timer per fms in builtin mode.

Importing this module registers the handlers (handlers.py imports it). The
HTTP session, Kubernetes client and Autoscaler are built once at start-up and
kept in the operator's memo; settings come from the environment
(settings.py) and are checked at import, so a bad value stops the operator
with a message instead of failing every round.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from fms_operator.api.models import GROUP, PLURAL, VERSION
from fms_operator.api.resource import InvalidSpec
from fms_operator.kube import KubeError

from .cluster import AutoscaleKube
from .collector_prometheus import PrometheusError
from .collector_scrape import new_session
from .loop import Autoscaler
from .round import run_round
from .settings import AutoscaleSettings

log = logging.getLogger(__name__)

SETTINGS = AutoscaleSettings.from_env()
_MEMO_KEY = "autoscaler"


def _builtin(spec: kopf.Spec, **_: Any) -> bool:
    autoscaling = spec.get("autoscaling")
    return autoscaling is not None and autoscaling.get("mode", "builtin") == "builtin"


@kopf.on.startup()
async def start_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    session = new_session(SETTINGS.scrape_timeout_s)
    memo[_MEMO_KEY] = (session, AutoscaleKube.connect(), Autoscaler(SETTINGS, session))


@kopf.on.cleanup()
async def stop_autoscaler(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get(_MEMO_KEY)
    if runtime:
        await runtime[0].close()


@kopf.timer(GROUP, VERSION, PLURAL, id="autoscale", interval=SETTINGS.interval_s, initial_delay=SETTINGS.interval_s,
            when=_builtin)
async def autoscale(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    _, kube, autoscaler = memo[_MEMO_KEY]

    def post(type_: str, reason: str, message: str) -> None:
        kopf.event(body, type=type_, reason=reason, message=message)

    try:
        await run_round(body, kube, autoscaler, post)
    except InvalidSpec:
        return  # the reconciler reports the spec; nothing to scale
    except (KubeError, PrometheusError) as e:
        # Next interval retries; kopf's error backoff would stretch the period.
        log.warning("autoscale %s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], e)


@kopf.on.event(GROUP, VERSION, PLURAL)
def forget_deleted(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get(_MEMO_KEY)
    if type == "DELETED" and runtime:
        runtime[2].forget(body["metadata"].get("uid", ""))
