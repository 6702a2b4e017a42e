"""Operator-wide autoscaler settings, read once from the environment.

Per-fms choices (metric, target, bounds, stabilization windows) live in
spec.autoscaling; what is the same for every fms (how often, where metrics
come from, how far one step may go) is configured here, by the chart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .collector_prometheus import PrometheusSource

class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class AutoscaleSettings:
    interval_s: float = 15.0
    source: Literal["scrape", "prometheus"] = "scrape"
    prometheus: PrometheusSource | None = None
    scrape_timeout_s: float = 2.0
    tolerance: float = 0.1
    max_step_up: int = 4
    max_step_down: int = 1
    # Caps the scrapes in flight at once (all fms together).
    max_connections: int = 256

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "AutoscaleSettings":
        def number(name: str, default: float, kind=float, low: float = 0.0) -> float:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                value = kind(raw)
            except ValueError:
                raise SettingsError(f"{name}={raw!r} is not a {kind.__name__}; set it like {name}={default}") from None
            if value < low:
                raise SettingsError(f"{name}={raw} must be at least {low}")
            return value

        source = env.get("FMS_AUTOSCALE_SOURCE", "scrape")
        if source not in ("scrape", "prometheus"):
            raise SettingsError(f"FMS_AUTOSCALE_SOURCE={source!r}: use scrape (pods' /metrics) or prometheus")
        prometheus = None
        if source == "prometheus":
            url = env.get("FMS_PROMETHEUS_URL", "")
            if not url.startswith(("http://", "https://")):
                raise SettingsError("FMS_AUTOSCALE_SOURCE=prometheus needs FMS_PROMETHEUS_URL, e.g. http://prometheus-operated.monitoring:9090")
            prometheus = PrometheusSource(
                url=url,
                window=env.get("FMS_PROMETHEUS_WINDOW", "1m"),
                namespace_label=env.get("FMS_PROMETHEUS_NAMESPACE_LABEL", "namespace"),
                pod_label=env.get("FMS_PROMETHEUS_POD_LABEL", "pod"),
            )
        return cls(
            interval_s=number("FMS_AUTOSCALE_INTERVAL_SECONDS", 15.0, low=1.0),
            source=source,
            prometheus=prometheus,
            scrape_timeout_s=number("FMS_AUTOSCALE_SCRAPE_TIMEOUT_SECONDS", 2.0, low=0.1),
            tolerance=number("FMS_AUTOSCALE_TOLERANCE", 0.1),
            max_step_up=int(number("FMS_AUTOSCALE_MAX_STEP_UP", 4, int, low=1)),
            max_step_down=int(number("FMS_AUTOSCALE_MAX_STEP_DOWN", 1, int, low=1)),
            max_connections=int(number("FMS_AUTOSCALE_MAX_CONNECTIONS", 256, int, low=1)),
        )
