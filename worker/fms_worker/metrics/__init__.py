"""Stats -> Prometheus. The only package that imports prometheus_client."""

from fms_worker.metrics.exporter import CONTENT_TYPE, ServingMetrics

__all__ = ["CONTENT_TYPE", "ServingMetrics"]
