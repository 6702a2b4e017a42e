"""The start-up topology reaches /metrics as fms_gpu_nvlink_peers{gpu}."""

from __future__ import annotations

from fms_worker.metrics.exporter import ServingMetrics
from fms_worker.topology import GPUTopology


class _NoGPU:
    def read(self):
        return []


def test_nvlink_peers_are_exported():
    metrics = ServingMetrics(gpu=_NoGPU())
    assert b"fms_gpu_nvlink_peers" not in metrics.render()  # CPU worker: no series at all
    metrics.set_nvlink_peers(GPUTopology.from_rows(["NNPP", "NNPP", "PPNN", "PPNN"]).nvlink_peers())
    text = metrics.render().decode()
    assert 'fms_gpu_nvlink_peers{gpu="0"} 1.0' in text and 'fms_gpu_nvlink_peers{gpu="3"} 1.0' in text
